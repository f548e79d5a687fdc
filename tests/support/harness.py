"""Child processes, loopback ports and /metrics, for the tests and the benchmarks alike.

`tests/support/ops_peers.py` (Prometheus, Kamailio) and `benchmarks/bench_calls.py`
and `bench_soak.py` (a pinned gateway, the provider, the load generator, sipp) all start programs,
choose free ports, wait until a program is ready, read its /metrics and stop it by its PID. This
is their one implementation. It uses the standard library only (prometheus_client, a runtime
dependency, when /metrics is parsed) and never pytest: the benchmarks run outside the test
runner and import it with the repository root on `sys.path`.

- `free_port()` (TCP), `free_udp_port()`, `free_udp_tcp_port()` (both, as SIP listens),
  `free_port_with_next()` (both, and the next port free for TCP): a port the kernel reports free
  on 127.0.0.1. The one family of these in the tests and the benchmarks.
- `start_process(name, argv, log)` runs a program in its own session (so its process group,
  forked workers included, can be stopped with it) and returns a `ChildProcess`;
  `ChildProcess.stop()` is SIGTERM, then SIGKILL, by PID. `Processes` stops everything it
  started, newest first.
- `wait_ready(proc, url=... | port=...)`: until an HTTP 200 or a TCP accept, failing with the
  program's log tail if it exits or takes too long.
- `proc_cpu_seconds(pid)`, `proc_rss_kib(pid)`: from /proc.
- `scrape(url)` / `parse_metrics(text)`: a Prometheus text exposition as histogram buckets and
  sample values (`Metrics`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "REPO",
    "ChildProcess",
    "HarnessError",
    "Histograms",
    "Metrics",
    "Processes",
    "free_port",
    "free_port_with_next",
    "free_udp_port",
    "free_udp_tcp_port",
    "parse_metrics",
    "proc_cpu_seconds",
    "proc_rss_kib",
    "scrape",
    "start_process",
    "tail",
    "wait_ready",
]

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


class HarnessError(RuntimeError):
    """A program did not start, did not become ready, died, or answered nonsense."""


# --- ports -------------------------------------------------------------------------------------


#: Ports tests choose come from a slice of 20000-32767 of their own per pytest-xdist worker,
#: below the kernel's ephemeral range (32768-60999 here) that clients, aiortc and Chromium bind
#: from: a port chosen, released and bound later by a peer can then be taken by neither another
#: worker nor an ephemeral socket meanwhile. RTP ranges (tests.support.gateway.rtp_range) use
#: 10000-19999 the same way.
PORT_SLICE = 3000
PORTS_BASE = 20000
#: each pick owns 4 ports (a peer binds neighbours: baresip P+1, sipp's media ports +2)
PORT_STEP = 4


def xdist_worker() -> int:
    """This pytest-xdist worker's index (gw0 -> 0); 0 when the suite runs serially."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name[2:] if name.startswith("gw") else ""
    return int(digits) if digits.isdigit() else 0


_next_pick = (os.getpid() * PORT_STEP) % PORT_SLICE


def _bound_port(kind: int, host: str) -> int:
    global _next_pick
    base = PORTS_BASE + (xdist_worker() % 4) * PORT_SLICE
    for _ in range(PORT_SLICE // PORT_STEP):
        port = base + _next_pick - _next_pick % PORT_STEP
        _next_pick = (_next_pick + PORT_STEP) % PORT_SLICE
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no port free in this worker's slice {base}-{base + PORT_SLICE - 1}")


def free_udp_block(size: int, host: str = "127.0.0.1") -> int:
    """The even first port of `size` consecutive ports of this worker's slice, the first free
    for UDP now (a peer's RTP range, e.g. baresip's `rtp_ports`)."""
    global _next_pick
    steps = -(-size // PORT_STEP)
    base = PORTS_BASE + (xdist_worker() % 4) * PORT_SLICE
    for _ in range(PORT_SLICE // PORT_STEP):
        if _next_pick + steps * PORT_STEP > PORT_SLICE:
            _next_pick = 0
        port = base + _next_pick - _next_pick % PORT_STEP
        _next_pick = (_next_pick + steps * PORT_STEP) % PORT_SLICE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no block of {size} ports free in {base}-{base + PORT_SLICE - 1}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel reports free right now (bind port 0 and read it back)."""
    return _bound_port(socket.SOCK_STREAM, host)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port the kernel reports free right now."""
    return _bound_port(socket.SOCK_DGRAM, host)


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (SIP listens on both)."""
    for _ in range(50):
        port = free_udp_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no port free for both UDP and TCP on {host}")


def free_port_with_next(host: str = "127.0.0.1") -> int:
    """A port P free for UDP and TCP, with P+1 free for TCP too (baresip listens for TLS on its
    SIP port + 1)."""
    for _ in range(100):
        port = free_udp_tcp_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port + 1))
            except OSError:
                continue
            return port
    raise HarnessError(f"no port free with its neighbour on {host}")


# --- processes ---------------------------------------------------------------------------------


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file ("(no log)" if it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class ChildProcess:
    """A program this harness started, in its own session; stopped by its PID, never by name."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    @property
    def stdout(self) -> IO[bytes] | None:
        """Its standard output, when started with `stdout_pipe`."""
        return self.popen.stdout

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, SIGKILL after `timeout` s; then whatever is left of its process group
        (workers a leader forked, such as Kamailio's). Safe to call twice."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        # its session's group: the PID is the group id since start_process made it a leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def tail(self, chars: int = 3000) -> str:
        return tail(self.log, chars)


def start_process(
    name: str,
    argv: list[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout_pipe: bool = False,
) -> ChildProcess:
    """Run `argv` in a new session (its own process group and scheduler autogroup), stderr
    (and stdout unless `stdout_pipe`) to `log`, standard input closed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else out,
            stderr=out,
            start_new_session=True,
        )
    return ChildProcess(name, popen, log)


@dataclass
class Processes:
    """The programs of one run; `stop_all()` stops them newest first."""

    started: list[ChildProcess] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> ChildProcess:
        """`start_process()`, remembered for `stop_all()`."""
        proc = start_process(name, argv, log, **kwargs)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()


def wait_ready(
    proc: ChildProcess,
    *,
    url: str | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> None:
    """Until `url` answers 200 (or, without a URL, 127.0.0.1:`port` accepts a connection).
    HarnessError with the log's tail if the program exits first or `timeout` runs out."""
    if url is None and port is None:
        raise ValueError("wait_ready needs a url or a port")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise HarnessError(f"{proc.name} exited with {proc.returncode}:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if url is None:
                with socket.create_connection(("127.0.0.1", port or 0), timeout=1):
                    return
            else:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
        time.sleep(0.1)
    raise HarnessError(f"{proc.name} not ready in {timeout:.0f} s:\n{proc.tail()}")


# --- /proc -------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_kib(pid: int) -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise HarnessError(f"no VmRSS for pid {pid}")


# --- /metrics ----------------------------------------------------------------------------------

#: histogram name -> labels (sorted (name, value) pairs, `le` left out) -> {le: cumulative count}
Histograms = dict[str, dict[tuple[tuple[str, str], ...], dict[float, float]]]


@dataclass(frozen=True)
class Metrics:
    """One scrape: `hist` (histogram buckets) and `values` (every other sample, keyed
    `name|label=value|...` with the labels sorted)."""

    hist: Histograms
    values: dict[str, float]

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, or None if it is not in the scrape."""
        return self.values.get(name + "".join(f"|{k}={v}" for k, v in sorted(labels.items())))

    def total(self, name: str) -> float:
        """The sum of a sample over all its label values (0 if absent)."""
        return float(sum(v for k, v in self.values.items() if k.split("|")[0] == name))


def parse_metrics(text: str) -> Metrics:
    """A Prometheus text exposition, parsed with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    hist: Histograms = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                le = float(s.labels["le"])
                hist.setdefault(s.name[: -len("_bucket")], {}).setdefault(labels, {})[le] = s.value
            else:
                key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
                values[key] = s.value
    return Metrics(hist, values)


def scrape(url: str, timeout: float = 10.0) -> Metrics:
    """GET a /metrics URL and parse it."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse_metrics(resp.read().decode())
