"""Logs of a real call through a real gateway process: no secret leaks, and the call's story.

One gateway process (`--log-level debug`, JSON lines) with a known fake API token, a fake
provider token for `--provider url` pointing at a `python -m gateway provider` child (through a
TCP relay here that proves the token really went out), a fake OPENAI_API_KEY in its environment
and SIP digest auth. A caller authenticates (SHA-256 digest, qop=auth), sends two DTMF digits
as SIP INFO and hangs up; the test also calls the HTTP API with right and wrong credentials. Then:

- no secret, digest response or Authorization header value appears in any output: both
  processes' logs, /metrics, and every HTTP response body;
- every log line of the call carries call_id, leg and provider;
- exactly one call_summary line per call, with the call's whole story.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.harness import free_port
from tests.support.sip_messages import status_code

SIP_USER = "alice"
# call-scoped components: every line they log belongs to one call
CALL_COMPONENTS = {"call", "realtime", "leg.sip", "leg.webrtc", "call.scenario"}


def _fake(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass
class TcpRelay:
    """127.0.0.1:<port> → `upstream`, keeping the first bytes each client sent (the HTTP
    upgrade request with its headers)."""

    upstream: tuple[str, int]
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> TcpRelay:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._spawn(self._accept)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            first = bytearray()
            self.requests.append(b"")
            index = len(self.requests) - 1

            def record(data: bytes, first: bytearray = first, index: int = index) -> None:
                if len(first) < 8192:
                    first.extend(data)
                    self.requests[index] = bytes(first)

            self._spawn(self._pump, client, upstream, record)
            self._spawn(self._pump, upstream, client, None)

    def _pump(self, src: socket.socket, dst: socket.socket, record: Any) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if record is not None:
                    record(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        if self._sock is not None:
            self._sock.close()


class DigestCaller:
    """A SIP UAC over UDP that answers the gateway's digest challenge (RFC 8760: the first,
    strongest algorithm offered), then sends DTMF as SIP INFO and hangs up. sipp 3.6 cannot be
    used here: it answers only an MD5 challenge and the gateway offers SHA-256 first."""

    def __init__(self, gateway_port: int, user: str, password: str) -> None:
        self.dest = ("127.0.0.1", gateway_port)
        self.user = user
        self.password = password
        self.uri = f"sip:bot@127.0.0.1:{gateway_port}"
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.log: list[str] = []

    def _request(
        self,
        sock: socket.socket,
        method: str,
        cseq: int,
        *,
        uri: str = "",
        branch: str = "",
        to_tag: str = "",
        extra: tuple[str, ...] = (),
        body: str = "",
        ctype: str = "application/sdp",
    ) -> bytes:
        host, port = sock.getsockname()
        lines = [
            f"{method} {uri or self.uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + secrets.token_hex(8)}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{host}:{port}>;tag={self.tag}",
            f"To: <{self.uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{host}:{port}>",
            *extra,
        ]
        if body:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.log.append(text)
        return text.encode()

    def _final(self, sock: socket.socket, message: bytes) -> str:
        sock.sendto(message, self.dest)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65535).decode(errors="replace")
            self.log.append(data)
            if data.startswith("SIP/2.0 ") and status_code(data) >= 200:
                return data
        raise AssertionError("no final response")

    def _authorization(self, challenge: str, method: str) -> str:
        params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
        algorithm = params["algorithm"]
        digest = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}[algorithm]

        def h(text: str) -> str:
            return digest(text.encode()).hexdigest()

        cnonce, nc = secrets.token_hex(8), "00000001"
        ha1 = h(f"{self.user}:{params['realm']}:{self.password}")
        ha2 = h(f"{method}:{self.uri}")
        response = h(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        return (
            f'Digest username="{self.user}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{self.uri}", response="{response}", '
            f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
        )

    def call(self, digits: str, talk_s: float = 1.5) -> str:
        """One authenticated call with `digits` as INFO; returns every message, both ways.
        With no digits, the authenticated INVITE is expected to be refused (wrong password)."""
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
        ):
            sock.bind(("127.0.0.1", 0))
            rtp.bind(("127.0.0.1", 0))
            sdp = (
                "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {rtp.getsockname()[1]} RTP/AVP 0\r\n"
                "a=rtpmap:0 PCMU/8000\r\n"
            )
            branch = "z9hG4bK" + secrets.token_hex(8)
            challenge = self._final(sock, self._request(sock, "INVITE", 1, branch=branch, body=sdp))
            assert status_code(challenge) == 401, challenge
            to_tag = re.search(r"^To:.*;tag=([^;\s]+)", challenge, re.M | re.I)
            assert to_tag
            # §17.1.1.3: the ACK of a non-2xx final response reuses the INVITE's branch
            ack = self._request(sock, "ACK", 1, branch=branch, to_tag=to_tag.group(1))
            sock.sendto(ack, self.dest)
            first = re.search(r"^WWW-Authenticate:\s*(Digest .+?)\r?$", challenge, re.M | re.I)
            assert first, challenge
            auth = f"Authorization: {self._authorization(first.group(1), 'INVITE')}"
            branch = "z9hG4bK" + secrets.token_hex(8)
            invite = self._request(sock, "INVITE", 2, branch=branch, extra=(auth,), body=sdp)
            ok = self._final(sock, invite)
            if not digits:  # a refused attempt (wrong password): ACK it and stop
                refused = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M | re.I)
                assert refused and status_code(ok) in (401, 403), ok
                sock.sendto(self._request(sock, "ACK", 2, branch=branch, to_tag=refused.group(1)),
                            self.dest)  # fmt: skip
                return "\n".join(self.log)
            assert status_code(ok) == 200, ok
            tag = re.search(r"^To:.*;tag=([^;\s]+)", ok, re.M | re.I)
            contact = re.search(r"^Contact:\s*<([^>]+)>", ok, re.M | re.I)
            assert tag and contact
            remote = dict(to_tag=tag.group(1), uri=contact.group(1))
            sock.sendto(self._request(sock, "ACK", 2, **remote), self.dest)
            cseq = 3
            for digit in digits:
                time.sleep(0.4)
                info = self._request(
                    sock,
                    "INFO",
                    cseq,
                    **remote,
                    body=f"Signal={digit}\r\nDuration=160\r\n",
                    ctype="application/dtmf-relay",
                )
                assert status_code(self._final(sock, info)) == 200
                cseq += 1
            time.sleep(talk_s)
            assert status_code(self._final(sock, self._request(sock, "BYE", cseq, **remote))) == 200
        return "\n".join(self.log)


@dataclass
class Run:
    secrets: dict[str, str]
    gateway_log: str
    provider_log: str
    metrics: str
    http_bodies: list[str]
    relay_requests: list[bytes]
    sip_messages: str
    lines: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("ops_logs")
    values = {
        "api_token": _fake("apitok-"),
        "provider_token": _fake("sk-fake-provider-"),
        "openai_api_key": _fake("sk-proj-"),
        "sip_password": _fake("pw-"),
    }
    provider_port = free_port()
    provider_log = workdir / "provider.log"
    with provider_log.open("wb") as out:
        provider = subprocess.Popen(
            [sys.executable, "-m", "gateway", "provider", "--listen",
             f"127.0.0.1:{provider_port}", "--log-format", "json", "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    relay = TcpRelay(("127.0.0.1", provider_port)).start()
    gw = GatewayProcess(
        workdir,
        "--provider", "url",
        "--provider-url", f"ws://127.0.0.1:{relay.port}/v1/realtime",
        "--provider-token", values["provider_token"],
        "--api-token", values["api_token"],
        "--sip-auth-user", SIP_USER,
        "--sip-auth-password", values["sip_password"],
        "--log-level", "debug",
        env={"OPENAI_API_KEY": values["openai_api_key"]},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", provider_port), timeout=0.5),
            ):
                break
            assert provider.poll() is None, provider_log.read_text()
            assert time.monotonic() < deadline, "the local provider did not listen"
            time.sleep(0.1)
        gw.start()
        token = values["api_token"]
        bodies: list[str] = []

        def call_api(method: str, path: str, body: Any = None, tok: str | None = None) -> int:
            status, answer = gw.http(method, path, body, token=tok)
            bodies.append(str(answer))
            return status

        assert call_api("GET", "/calls", tok=token) == 200
        assert call_api("GET", "/calls", tok="wrong-" + token) == 401
        assert call_api("GET", "/calls") == 401
        assert call_api("DELETE", "/calls/0123456789abcdef", tok=token) == 404
        assert call_api("POST", "/calls", {"to": "x y"}, tok=token) == 400
        assert call_api("POST", "/webrtc/token", {}, tok="wrong-" + token) == 401
        assert call_api("POST", "/webrtc/offer", None, tok="wrong-" + token) == 401
        # a wrong password first (refused), then the real call
        wrong = DigestCaller(gw.sip_port, SIP_USER, "wrong-" + values["sip_password"]).call("")
        messages = wrong + DigestCaller(gw.sip_port, SIP_USER, values["sip_password"]).call("57")
        assert call_api("GET", "/calls", tok=token) == 200
        status, metrics_text = gw.http("GET", "/metrics")
        assert status == 200
        # the call's summary is written when it ends: wait for it before stopping
        deadline = time.monotonic() + 10
        while not any(line.get("event") == "call_summary" for line in gw.log_lines()):
            assert time.monotonic() < deadline, "no call_summary line"
            time.sleep(0.1)
    finally:
        assert gw.stop() in (0, None)
        relay.stop()
        provider.terminate()
        try:
            provider.wait(10)
        except subprocess.TimeoutExpired:
            provider.kill()
            provider.wait()
    yield Run(
        values,
        gw.log_path.read_text(errors="replace"),
        provider_log.read_text(errors="replace"),
        str(metrics_text),
        bodies,
        relay.requests,
        messages,
        list(gw.log_lines()),
    )


def _forbidden(run: Run) -> dict[str, str]:
    """Every string that must never appear in output, by what it is."""
    out = dict(run.secrets)
    for key in ("api_token", "provider_token", "openai_api_key", "sip_password"):
        value = run.secrets[key]
        core = value.split("-")[-1]
        out[f"{key} (start)"] = core[:12]
        out[f"{key} (end)"] = core[-12:]
    responses = re.findall(r'response="([0-9a-f]+)"', run.sip_messages)
    assert responses, "sipp sent no digest response"
    for i, value in enumerate(responses):
        out[f"digest response {i}"] = value
    headers = re.findall(r"^Authorization:\s*(.+?)\r?$", run.sip_messages, re.M)
    assert headers, "sipp sent no Authorization header"
    for i, value in enumerate(headers):
        out[f"SIP Authorization header {i}"] = value.strip()
    upgrade = b"".join(run.relay_requests).decode(errors="replace")
    for i, value in enumerate(re.findall(r"^Authorization:\s*(.+?)\r?$", upgrade, re.M | re.I)):
        out[f"provider Authorization header {i}"] = value.strip()
    return out


def test_the_call_and_its_credentials_really_happened(run: Run) -> None:
    # digest: challenged, then answered with the password
    assert re.search(
        r"^SIP/2.0 401 .*\r\n(.*\r\n)*WWW-Authenticate: Digest", run.sip_messages, re.M
    )
    assert re.search(r"^SIP/2.0 200 .*\r\n(.*\r\n)*CSeq: 2 INVITE", run.sip_messages, re.M)
    # the provider token went to the provider on the WebSocket upgrade
    upgrade = b"".join(run.relay_requests).decode(errors="replace")
    assert re.search(r"GET /v1/realtime", upgrade), upgrade[:500]
    bearer = f"Bearer {run.secrets['provider_token']}"
    assert re.search(rf"^Authorization: {re.escape(bearer)}\r?$", upgrade, re.M | re.I), upgrade
    # the call went on to the end with both digits
    (summary,) = [line for line in run.lines if line.get("event") == "call_summary"]
    assert summary["outcome"] == "remote_hangup"
    assert summary["dtmf_digits"] == 2
    assert re.search(r"^Authorization: Digest .*algorithm=SHA-256", run.sip_messages, re.M)
    assert summary["provider"] == "url"


def test_no_secret_in_any_output(run: Run) -> None:
    outputs = {
        "gateway log": run.gateway_log,
        "provider log": run.provider_log,
        "/metrics": run.metrics,
        **{f"HTTP response {i}": body for i, body in enumerate(run.http_bodies)},
    }
    assert len(run.gateway_log.splitlines()) >= 5
    leaks = [
        f"{what} in {where}"
        for what, value in _forbidden(run).items()
        for where, text in outputs.items()
        if value in text
    ]
    assert not leaks, leaks


def test_each_secret_given_as_a_flag_is_warned_about_by_name(run: Run) -> None:
    """--provider-token, --api-token and --sip-auth-password were flags (readable by every local
    user in /proc/PID/cmdline): one warning each, naming the setting; OPENAI_API_KEY came from
    the environment: none. The values are in no output (test_no_secret_in_any_output)."""
    warned = [line for line in run.lines if line.get("event") == "secret_on_command_line"]
    assert sorted(line["setting"] for line in warned) == [
        "api_token",
        "provider_token",
        "sip_auth_password",
    ]
    assert all(line["level"] == "warning" for line in warned)
    assert all(f"{line['setting'].upper()}_FILE" in line["advice"] for line in warned)


def test_every_line_of_a_call_carries_call_id_leg_and_provider(run: Run) -> None:
    (summary,) = [line for line in run.lines if line.get("event") == "call_summary"]
    call_id = summary["call_id"]
    assert summary["leg"] == "sip" and summary["provider"] == "url"
    scoped = [
        line
        for line in run.lines
        if line.get("component") in CALL_COMPONENTS or any(k in line for k in ("call_id", "leg"))
    ]
    assert len(scoped) >= 2, scoped
    missing = [
        line
        for line in scoped
        if line.get("call_id") != call_id
        or line.get("leg") != "sip"
        or line.get("provider") != "url"
    ]
    assert not missing, "\n".join(map(str, missing[:10]))
    # the realtime session's lines are among them
    assert any(line.get("component") == "realtime" for line in scoped)


def test_one_call_summary_with_the_whole_story(run: Run) -> None:
    summaries = [line for line in run.lines if line.get("event") == "call_summary"]
    assert len(summaries) == 1
    (summary,) = summaries
    assert 2.0 <= summary["duration_s"] <= 10
    assert summary["codec"].lower().startswith("pcmu")
    # packets: the greeting went out at 50 packets/s (30 ms ptime: ~33/s)
    assert summary["rtp_out"] > 30
    assert isinstance(summary["rtp_in"], int)
    assert summary["rtp_lost"] == 0
    assert isinstance(summary["jitter_ms"], float | int)
    assert summary["barge_ins"] == 0
    assert isinstance(summary["tool_calls"], list)
    assert isinstance(summary["response_latency_ms"], list)
    for key in ("outcome", "duration_s", "codec", "rtp_out", "rtp_lost", "jitter_ms"):
        assert key in summary
