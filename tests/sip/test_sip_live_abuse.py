"""A live SipTransport under abuse: malformed datagrams and a flood, then real sipp calls."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from gateway.sip.events import CallAcked, IncomingCallReceived, RequestRejected
from gateway.sip.policy import SourcePolicy
from tests.support.sip_app import start_app
from tests.support.sipp import Sipp
from tests.support.waiting import wait_for

_HEAD = (
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bad-{i}\r\n"
    "From: <sip:x@127.0.0.1>;tag=t{i}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: bad-{i}\r\n"
)


def malformed(i: int, port: int) -> bytes:
    """The i-th of 1,000 datagrams, each certainly malformed, in 12 flavours."""
    head = _HEAD.format(i=i, port=port)
    kinds = [
        os.urandom(1 + i % 700),
        f"INVITE sip:gw@127.0.0.1 SIP/2.0\r\n{head}\r\n".encode(),  # no CSeq
        (
            f"INVITE sip:gw@h SIP/2.0\r\n{head}CSeq: 1 INVITE\r\nContent-Length: 900\r\n"
            f"\r\nv=0\r\n".encode()
        ),
        (
            f"INVITE sip:gw@h SIP/2.0\r\nVia: garbage{i}\r\nFrom: <sip:a@b>\r\n"
            f"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n".encode()
        ),
        # not UTF-8 (read as Latin-1) and no colon: a bad header line, answered 400
        f"INVITE sip:gw@h SIP/2.0\r\n{head}CSeq: 1 INVITE\r\nX\xff\xfe\r\n\r\n".encode("latin-1"),
        f"INVITE sip:gw@h\r\n{head}CSeq: 1 INVITE\r\n\r\n".encode(),
        f"BYE sip:gw@h SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n\r\n".encode(),
        f"OPTIONS sip:gw@h SIP/3.0\r\n{head}CSeq: 1 OPTIONS\r\n\r\n".encode(),
        (f"OPTIONS sip:gw@h SIP/2.0\r\n{head}CSeq: 1 OPTIONS\r\nno colon here\r\n\r\n".encode()),
        f"INVITE sip:gw@h SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n\x00\r\n\r\n".encode(),
        (
            f"INVITE sip:gw@h SIP/2.0\r\n{head.replace('From: <', 'From: <<')}"
            f"CSeq: 1 INVITE\r\n\r\n".encode()
        ),
        b"\r\n" * (1 + i % 5) + b"SIP/2.0 abc Nope\r\n\r\n",
    ]
    return kinds[i % len(kinds)]


async def test_thousand_malformed_datagrams_then_a_call(tmp_path: Path) -> None:
    app = await start_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    replies: list[bytes] = []
    try:

        def malformed_seen() -> int:
            return sum(1 for e in app.of(RequestRejected) if e.reason == "malformed")

        for i in range(1000):
            sock.sendto(malformed(i, port), ("127.0.0.1", app.port))
            if i % 20 == 19:
                # bursts of 20, each taken in before the next: a loaded machine's scheduler
                # must not let the kernel's receive buffer overflow (that would test the kernel)
                await wait_for(lambda n=i + 1: malformed_seen() >= n, 5, "a burst", every=0.002)
                while True:
                    try:
                        replies.append(sock.recv(65536))
                    except BlockingIOError:
                        break
        await asyncio.sleep(0.2)
        while True:
            try:
                replies.append(sock.recv(65536))
            except BlockingIOError:
                break
        rejected = [e for e in app.of(RequestRejected) if e.reason == "malformed"]
        assert len(rejected) == 1000
        assert not app.of(IncomingCallReceived)
        assert app.endpoint.transaction_count == 0  # refused statelessly: nothing leaked
        bad_requests = [r for r in replies if r.startswith(b"SIP/2.0 400 Bad Request (")]
        assert bad_requests, "no 400 with a reason came back"
        assert any(b"missing CSeq" in r for r in bad_requests)
        assert any(r.startswith(b"SIP/2.0 505 ") for r in replies)

        sipp = Sipp(
            tmp_path,
            f"127.0.0.1:{app.port}",
            builtin="uac",
            extra=["-m", "3", "-r", "10"],
            timeout=15,
        ).start()
        try:
            result = await sipp.wait_async()
        finally:
            sipp.kill()
        assert result.returncode == 0, result.explain()
        assert len(app.of(CallAcked)) == 3
    finally:
        sock.close()
        await app.aclose()


BLASTER = r"""
import socket, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, 0))
lport = s.getsockname()[1]
agents = ["friendly-scanner", "sipcli/v1.8", "Zoiper", "PolycomVVX"]
start = time.monotonic()
sent = 0
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        method = "INVITE" if sent % 2 else "OPTIONS"
        msg = (f"{method} sip:100@{host} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK-f{sent}\r\n"
               f"From: <sip:scan@{host}>;tag=f{sent}\r\nTo: <sip:100@{host}>\r\n"
               f"Call-ID: flood-{sent}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
               f"User-Agent: {agents[sent % 4]}\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        sent += 1
    time.sleep(0.005)
print(sent)
"""


async def test_flood_does_not_starve_an_allowed_trunk(tmp_path: Path) -> None:
    policy = SourcePolicy(["127.0.0.1/32"], rate=50, burst=100)
    app = await start_app(policy=policy)
    blaster = subprocess.Popen(  # noqa: ASYNC220 (a PID of our own to kill; starts at once)
        [sys.executable, "-c", BLASTER, "127.0.0.2", str(app.port), "2000", "10"],
        stdout=subprocess.PIPE,
    )
    sipp = Sipp(
        tmp_path, f"127.0.0.1:{app.port}", builtin="uac", extra=["-m", "45", "-r", "5"], timeout=30
    )
    try:
        await asyncio.sleep(0.5)  # the flood is on before the first call
        sipp.start()
        result = await sipp.wait_async()
        out, _ = await asyncio.to_thread(blaster.communicate, None, 25)
    finally:
        sipp.kill()
        if blaster.poll() is None:
            blaster.kill()
            blaster.wait()
        await app.aclose()
    flood_sent = int(out.decode().strip() or 0)
    assert flood_sent > 16_000, flood_sent  # about 2,000/s for 10 s (the figure)
    assert result.returncode == 0, result.explain()
    assert result.successful_calls == 45  # 9 s of calls, all inside the flood
    calls = app.of(IncomingCallReceived)
    assert len(calls) == 45 and all(c.source.host == "127.0.0.1" for c in calls)
    reasons: dict[str, int] = {}
    for e in app.of(RequestRejected):
        assert e.source.host == "127.0.0.2"
        reasons[e.reason] = reasons.get(e.reason, 0) + 1
    assert reasons.get("rate_limited", 0) > flood_sent * 0.8, reasons
    assert reasons.get("not_allowed", 0) > 0 and reasons.get("scanner", 0) > 0, reasons
    assert policy.tracked_sources == 2
