"""Run the whole gateway for end-to-end tests: in-process (`running_gateway`) for introspection,
or as a real process (`GatewayProcess`) when a test needs separate instances or signals.

Ports are chosen free on loopback; each gateway gets its own RTP range so tests never collide.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.call.scenario import ScenarioSetup
from gateway.config import Settings, add_arguments, load_settings

REPO = Path(__file__).resolve().parents[1]
_RTP_BLOCKS = itertools.count()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for UDP and TCP")


def rtp_range() -> str:
    """A 200-port RTP range unique to this test process and gateway."""
    block = next(_RTP_BLOCKS) % 40
    base = 40000 + (os.getpid() % 25) * 1000 + block * 200 % 1000
    base += base % 2
    return f"{base}-{base + 198}"


def settings(**overrides: Any) -> Settings:
    """Settings for a loopback test gateway; keyword overrides use setting names."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    env = {
        "GATEWAY_HTTP_LISTEN": "127.0.0.1:0",
        "GATEWAY_SIP_LISTEN": f"127.0.0.1:{free_sip_port()}",
        "GATEWAY_RTP_PORTS": rtp_range(),
        "GATEWAY_LOG_FORMAT": "console",
    }
    base = load_settings(args, environ=env)
    import dataclasses

    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_gateway(
    scenario: ScenarioSetup | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """An in-process gateway on loopback, stopped (every call ended) on exit."""
    gw = Gateway(settings(**overrides), scenario=scenario)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


class GatewayProcess:
    """`python -m gateway serve` as a child process, stopped by PID. `http_host`: the address
    of the HTTP listener (another than loopback only inside a network namespace)."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        http_host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.http_host = http_host
        self.http_port = free_port()
        self.sip_port = free_sip_port()
        self.args = [
            "--http-listen",
            f"{http_host}:{self.http_port}",
            "--sip-listen",
            f"127.0.0.1:{self.sip_port}",
            "--rtp-ports",
            rtp_range(),
            "--log-format",
            "json",
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = workdir / f"gateway-{self.sip_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *self.args],
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if self.http("GET", "/readyz")[0] == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not become ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def http(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.http_host}:{self.http_port}{path}", data=data, method=method
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        """SIGINT twice (a drain, then "stop now", which ends live calls and set-ups), then
        SIGKILL after 15 s; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            # two signals sent back to back may reach the loop as one (a drain that waits for
            # every call): the second goes once the first was handled
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.3)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode

    def log_lines(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                yield json.loads(line)
