"""Real operations peers for tests: Prometheus and Kamailio on loopback, started and stopped by PID.

- `Prometheus(workdir, targets)` runs Debian's `prometheus` with a scrape config for `targets`,
  waits until it is ready and answers instant queries (`query`, `query_value`).
- `Kamailio(workdir, gateways)` renders `deploy/kamailio/` for a free loopback port and a
  dispatcher list of `gateways`, runs `kamailio -DD -E -f` and waits until it answers OPTIONS;
  `routed(log, port)` counts the INVITEs its log says it sent to a port, and `ROUTED_UAC` is a
  sipp caller that follows the Route set Kamailio record-routes.
- `SipResponder` is a tiny UDP SIP endpoint (OPTIONS, INVITE, ACK, BYE) for tests that need a
  dispatcher destination but no gateway.

All are context managers; leaving the block stops the process by its PID (and its process group,
which Kamailio's worker children share) and closes every socket. Ports, processes and /metrics
come from `tests.support.harness`, shared with the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from tests.support.binaries import require_binary
from tests.support.harness import (
    REPO,
    ChildProcess,
    HarnessError,
    free_port,
    free_udp_tcp_port,
    start_process,
    wait_ready,
)
from tests.support.sip_messages import sip_exchange, sip_request, sip_response, status_code

KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
# sipp's built-in uac sends its BYE without the Route set Kamailio record-routed; a real phone
# (and this scenario) follows it
ROUTED_UAC = REPO / "tests" / "deploy" / "sipp" / "uac_routed.xml"


# --- Prometheus ----------------------------------------------------------------------------


class Prometheus:
    """Debian's `prometheus` on 127.0.0.1:<free port> scraping `targets` (HOST:PORT strings)."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str] = (),
        *,
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        rule_files: Sequence[Path] = (),
        job: str = "gateway",
        authorization_file: Path | None = None,
        extra_jobs: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.binary = require_binary("prometheus", "prometheus")
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.job = job
        self.authorization_file = authorization_file
        self.extra_jobs = list(extra_jobs)
        self.port = 0
        self.proc: ChildProcess | None = None
        self.log_path = self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The prometheus.yml this instance runs with (JSON is valid YAML)."""
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                },
                *self.extra_jobs,
            ],
        }
        if self.authorization_file is not None:  # Bearer token read from a file per scrape
            config["scrape_configs"][0]["authorization"] = {
                "type": "Bearer",
                "credentials_file": str(self.authorization_file),
            }
        if self.rule_files:
            config["rule_files"] = [str(p) for p in self.rule_files]
        return json.dumps(config, indent=2)

    def start(self, timeout: float = 30.0) -> None:
        """Write the config, start the server and wait for `/-/ready`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text())
        self.port = free_port()
        self.proc = start_process(
            "prometheus",
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            self.log_path,
        )
        try:
            wait_ready(self.proc, url=self.url + "/-/ready", timeout=timeout)
        except HarnessError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server by PID; safe to call twice."""
        if self.proc is not None:
            self.proc.stop(timeout=10.0)
            self.proc = None

    def api(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an `/api/v1/...` path; returns the decoded JSON body, error bodies included."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            body = exc.read()
        result: dict[str, Any] = json.loads(body)
        return result

    def query(self, expr: str) -> dict[str, Any]:
        """The `/api/v1/query` answer for `expr` (status, data or errorType/error)."""
        return self.api("/api/v1/query", {"query": expr})

    def query_value(self, expr: str) -> float | None:
        """The value of a single-sample instant query, or None when it has no result."""
        answer = self.query(expr)
        if answer.get("status") != "success":
            raise HarnessError(f"query {expr!r} failed: {answer.get('error')}")
        data = answer["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) > 1:
            raise HarnessError(f"query {expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], timeout: float = 20.0
    ) -> float | None:
        """Poll `query_value(expr)` until `predicate` holds; returns the last value."""
        deadline = time.monotonic() + timeout
        value = self.query_value(expr)
        while not predicate(value):
            if time.monotonic() > deadline:
                raise HarnessError(f"{expr!r} stayed at {value} for {timeout}s")
            time.sleep(0.25)
            value = self.query_value(expr)
        return value

    def targets_health(self) -> list[str]:
        """Health (`up`, `down`, `unknown`) of every active scrape target."""
        data = self.api("/api/v1/targets")["data"]
        return [str(t["health"]) for t in data["activeTargets"]]

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- a SIP endpoint without a gateway -----------------------------------------------------


@dataclass
class SipResponder:
    """A UDP SIP endpoint on 127.0.0.1 that answers OPTIONS with `options_code`, INVITE with
    `invite_code` (200 carries a To tag, Contact and the Record-Route set), BYE with 200, and
    records every request it receives as `(method, text)`. A `silent` one answers nothing."""

    options_code: int = 200
    invite_code: int = 200
    silent: bool = False  # record but never answer: a hung instance
    port: int = 0
    received: list[tuple[str, str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    _REASONS: ClassVar[dict[int, str]] = {200: "OK", 486: "Busy Here", 503: "Service Unavailable"}

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name=f"sip-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def methods(self) -> list[str]:
        with self._lock:
            return [m for m, _ in self.received]

    def requests(self, method: str) -> list[str]:
        with self._lock:
            return [text for m, text in self.received if m == method]

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method == "SIP/2.0":
                continue
            with self._lock:
                self.received.append((method, text))
            code = {"OPTIONS": self.options_code, "INVITE": self.invite_code}.get(method, 200)
            if method == "ACK" or self.silent:
                continue
            reply = sip_response(
                text,
                code,
                self._REASONS.get(code, "Other"),
                to_tag=f"r{self.port}" if method == "INVITE" else "",
                contact=f"<sip:responder@127.0.0.1:{self.port}>" if method == "INVITE" else "",
            )
            with contextlib.suppress(OSError):
                self._sock.sendto(reply, addr)

    def __enter__(self) -> SipResponder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- Kamailio ------------------------------------------------------------------------------


class Kamailio:
    """Debian's `kamailio` with deploy/kamailio/kamailio.cfg on 127.0.0.1:<free port>, in front
    of `gateways` (HOST:PORT pairs, dispatcher set 1), probing them every `ping_interval` s.
    `ds_list` runs it with an existing dispatcher list file instead; `defines` are more -A
    defines (e.g. WITH_NAT)."""

    def __init__(
        self,
        workdir: Path,
        gateways: Iterable[tuple[str, int]],
        *,
        ping_interval: int = 1,
        config: Path = KAMAILIO_CFG,
        workers: int = 2,
        ds_list: Path | None = None,
        defines: Iterable[str] = (),
    ) -> None:
        self.binary = require_binary("kamailio", "kamailio")
        self.defines = list(defines)
        self.workdir = Path(workdir)
        self.gateways = list(gateways)
        self.ping_interval = ping_interval
        self.config = Path(config)
        self.workers = workers
        self.ds_list = ds_list
        self.port = 0
        self.proc: ChildProcess | None = None
        self.log_path = self.workdir / "kamailio.log"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def dispatcher_list(self) -> str:
        """The rendered dispatcher.list: set 1, one line per gateway, active, priority 0."""
        lines = ["# setid destination flags priority attrs"]
        lines += [f"1 sip:{host}:{port} 0 0" for host, port in self.gateways]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The kamailio command line (foreground, log to stderr, defines for this run)."""
        ds_list = self.ds_list or self.workdir / "dispatcher.list"
        return [
            self.binary,
            "-DD",
            "-E",
            "-f",
            str(self.config),
            "-A",
            f"SIP_LISTEN=udp:127.0.0.1:{self.port}",
            "-A",
            f'DS_LIST="{ds_list}"',
            "-A",
            f"DS_PING_INTERVAL={self.ping_interval}",
            "-A",
            f"WORKERS={self.workers}",
            *(arg for define in self.defines for arg in ("-A", define)),
            "-Y",
            str(self.workdir / "run"),
            "-m",
            "32",
            "-M",
            "4",
        ]

    def start(self, timeout: float = 15.0) -> None:
        """Render the dispatcher list, start Kamailio and wait until it answers OPTIONS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "run").mkdir(exist_ok=True)
        if self.ds_list is None:
            (self.workdir / "dispatcher.list").write_text(self.dispatcher_list())
        self.port = free_udp_tcp_port()
        proc = self.proc = start_process("kamailio", self.command(), self.log_path)
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            local = sock.getsockname()
            while time.monotonic() < deadline:
                if not proc.alive():
                    self.stop()  # workers it forked may outlive it
                    raise HarnessError(f"kamailio exited with {proc.returncode}:\n{proc.tail()}")
                probe = sip_request("OPTIONS", f"sip:127.0.0.1:{self.port}", local)
                with contextlib.suppress(HarnessError):
                    if status_code(sip_exchange(sock, probe, self.address, timeout=0.3)) == 200:
                        return
        self.stop()
        raise HarnessError(f"kamailio not answering in {timeout}s:\n{proc.tail()}")

    def stop(self) -> None:
        """Stop Kamailio by PID (its workers share its process group); safe to call twice."""
        if self.proc is not None:
            self.proc.stop(timeout=10.0)
            self.proc = None

    def log(self) -> str:
        """Everything Kamailio logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def routed(log: str, port: int) -> int:
    """How many INVITEs Kamailio's xlog says it sent (first try or failover) to `port`."""
    return len(re.findall(rf"INVITE \S+ (?:failover )?-> sip:127\.0\.0\.1:{port}\b", log))
