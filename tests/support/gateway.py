"""Run the whole gateway for end-to-end tests: in-process (`running_gateway`) for introspection,
or as a real process (`GatewayProcess`) when a test needs separate instances or signals.

Ports are chosen free on loopback; each gateway gets its own RTP range so tests never collide.

- In-process: `settings(**overrides)`, `running_gateway(scenario, **overrides)`, what a call can
  leave behind (`leaks`, `assert_nothing_leaked`), `provider_sessions`, and sipp against it
  (`run_sipp`, `outbound_call`).
- A process: `GatewayProcess`, and what the ops tests read from one (`call_summaries`,
  `live_calls`, `sip_probe`, with `API_TOKEN`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from gateway.app import Gateway
from gateway.call.scenario import ScenarioSetup
from gateway.config import Settings, add_arguments, load_settings
from gateway.realtime.local.engine import LocalEngine
from gateway.secret import Secret
from tests.support.harness import free_port, free_udp_tcp_port, xdist_worker
from tests.support.scenarios import CallLog
from tests.support.sip_messages import sip_exchange, sip_request
from tests.support.sipp import Sipp, SippResult
from tests.support.waiting import wait_for

_RTP_BLOCKS = itertools.count()

#: the API token of the ops tests' gateway processes
API_TOKEN = "drain-test-token-5b1e"


def rtp_range() -> str:
    """A 200-port RTP range of this test worker's own (12 in turn, in 10000-19999: below the
    ephemeral ports and the single ports tests pick, see tests.support.harness)."""
    block = next(_RTP_BLOCKS) % 12
    base = 10000 + (xdist_worker() % 4) * 2500 + block * 200
    return f"{base}-{base + 198}"


def settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings for a loopback test gateway; keyword overrides use setting names, `environ`
    adds `GATEWAY_*` variables (e.g. a `*_FILE` secret, resolved as `gateway serve` does)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    env = {
        "GATEWAY_HTTP_LISTEN": "127.0.0.1:0",
        "GATEWAY_SIP_LISTEN": f"127.0.0.1:{free_udp_tcp_port()}",
        "GATEWAY_RTP_PORTS": rtp_range(),
        "GATEWAY_LOG_FORMAT": "console",
        **(environ or {}),
    }
    base = load_settings(args, environ=env)
    # no call history file in the working directory unless a test asks for one; the overload
    # gate off unless a test asks (the test machine's load is not the gateway's)
    defaults = {"history_path": "", "overload_lateness_ms": 0.0, "overload_cpu_pct": 0.0}
    return dataclasses.replace(base, **{**defaults, **overrides})


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


def interrupt_twice(proc: subprocess.Popen[Any], between: float = 0.3) -> None:
    """Stop a `gateway serve` process as an operator does: Ctrl-C (a drain), then Ctrl-C again
    ("end them now"), then SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    # two signals sent back to back may reach the loop as one (a drain that waits for every
    # call): the second goes once the first was handled
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=between)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def gateway_process(workdir: Path, *args: str) -> Iterator[GatewayProcess]:
    """A `gateway serve` process with the tests' API token, stopped on the way out."""
    gw = GatewayProcess(workdir, "--api-token", API_TOKEN, *args)
    try:
        yield gw.start()
    finally:
        gw.stop()


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
        self.sip_port = free_udp_tcp_port()
        self.args = [
            "--http-listen",
            f"{http_host}:{self.http_port}",
            "--sip-listen",
            f"127.0.0.1:{self.sip_port}",
            "--rtp-ports",
            rtp_range(),
            "--log-format",
            "json",
            # the overload gate off unless a test sets it: two cores running three test
            # workers make the media clock late for reasons that are not the gateway's
            *([] if "--overload-lateness-ms" in args else ["--overload-lateness-ms", "0"]),
            *([] if "--overload-cpu-pct" in args else ["--overload-cpu-pct", "0"]),
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
        interrupt_twice(self.proc)
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode

    def log_lines(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                yield json.loads(line)


# --- in-process: what a call can leave behind ---------------------------------------------------


def provider_sessions(gw: Gateway) -> list[LocalEngine]:
    """The embedded local provider's sessions, oldest first."""
    assert gw.local_provider is not None
    return gw.local_provider.sessions


def leaks(gw: Gateway) -> dict[str, object]:
    """Everything a finished call could leave behind; all zero/empty when nothing leaked."""
    assert gw.sip_calls is not None and gw.clocks is not None
    local = gw.local_provider  # None with --provider url: the test checks its own server
    return {
        "calls": dict(gw.manager.calls),
        "call_tasks": len(gw.manager._tasks),
        "reserved": gw.manager._reserved,
        "rtp_ports": gw.sip_calls.ports.in_use,
        "sip_setup_tasks": len(gw.sip_calls._tasks),
        "clock20": len(gw.clocks.for_ptime(20)),
        "clock30": len(gw.clocks.for_ptime(30)),
        "provider_sessions": local.active_sessions if local is not None else 0,
    }


NO_LEAKS: dict[str, object] = {
    "calls": {},
    "call_tasks": 0,
    "reserved": 0,
    "rtp_ports": 0,
    "sip_setup_tasks": 0,
    "clock20": 0,
    "clock30": 0,
    "provider_sessions": 0,
}


async def assert_nothing_leaked(gw: Gateway, timeout: float = 4.0) -> None:
    """No call, call task, reserved slot, RTP port, media clock ticker or provider session left
    (after a short wait for sockets to close)."""
    try:
        await wait_for(lambda: leaks(gw) == NO_LEAKS, timeout, "everything freed")
    except AssertionError:
        pass
    assert leaks(gw) == NO_LEAKS


# --- in-process: sipp against it -----------------------------------------------------------------


async def run_sipp(
    gw: Gateway,
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    extra: list[str] | None = None,
    timeout: float = 20.0,
    local_ip: str = "127.0.0.1",
    calls: int = 1,
) -> tuple[Sipp, SippResult]:
    """Run one sipp against the gateway's SIP port and wait for it without blocking the loop."""
    args = ["-m", str(calls), *(extra or [])]
    sipp = Sipp(
        workdir,
        f"127.0.0.1:{gw.sip_port}",
        scenario=scenario,
        builtin=builtin,
        extra=args,
        timeout=timeout,
        local_ip=local_ip,
    ).start()
    try:
        result = await sipp.wait_async()
    finally:
        sipp.kill()
    return sipp, result


async def outbound_call(
    workdir: Path,
    log: CallLog,
    proto: str = "RTP/AVP",
    attribute: str = "a=sendrecv",
    ring_ms: int = 0,
    **settings: Any,
) -> tuple[Sipp, SippResult]:
    """POST /calls through a trunk whose far end (sipp, tests/peers/sipp/e2e_uas_answer.xml)
    rings `ring_ms`, then answers with `proto` and `attribute` and sends no RTP; returns once
    sipp has had the gateway's BYE (or timed out), with nothing left behind in the gateway."""
    token = "test-api-token-outbound"
    uas = Sipp(
        workdir,
        "",
        scenario="e2e_uas_answer.xml",
        extra=["-m", "1", "-d", str(ring_ms), "-key", "proto", proto, "-key", "secattr", attribute],
        timeout=20,
    ).start()
    trunk = {"main": {"uri": f"sip:127.0.0.1:{uas.local_port}", "from_user": "gw"}}
    try:
        async with running_gateway(
            log.setup, api_token=Secret(token), trunks=trunk, **settings
        ) as gw:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{gw.http_port}/calls",
                    json={"to": "1000", "trunk": "main"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
            result = await uas.wait_async()
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    return uas, result


# --- a process: what the ops tests read from it --------------------------------------------------

_PROBE_SDP = (
    "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def call_summaries(gw: GatewayProcess) -> list[dict[str, Any]]:
    """The `call_summary` lines of a gateway process's JSON log, in order."""
    return [line for line in gw.log_lines() if line.get("event") == "call_summary"]


def live_calls(gw: GatewayProcess, token: str = API_TOKEN) -> int:
    """How many calls `GET /calls` lists."""
    status, body = gw.http("GET", "/calls", token=token)
    assert status == 200, body
    return len(body["calls"])


def sip_probe(gw: GatewayProcess, method: str) -> str:
    """Send one OPTIONS or INVITE from a fresh loopback socket; the final response text."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        request = sip_request(
            method,
            f"sip:bot@127.0.0.1:{gw.sip_port}",
            sock.getsockname(),
            body=_PROBE_SDP if method == "INVITE" else "",
        )
        return sip_exchange(sock, request, ("127.0.0.1", gw.sip_port))


def header(response: str, name: str) -> str | None:
    """A header's value in a SIP response's text (None when absent)."""
    for line in response.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


async def aiortc_offer() -> str:
    """A real WebRTC offer (aiortc, loopback: no ICE servers)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def post_offer(gw: GatewayProcess, sdp: str) -> tuple[int, dict[str, str], bytes]:
    """POST `sdp` to the gateway's /webrtc/offer: (status, headers, body)."""

    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.http_port}/webrtc/offer",
        data=sdp.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {API_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
