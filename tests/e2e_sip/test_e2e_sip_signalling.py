"""End to end through the whole gateway (embedded local provider) with sipp as the phone:
load with the built-in `uac` scenario, BYE from the caller, retransmitted INVITE and lost ACK,
OPTIONS (200, and 503 while draining), digest authentication, the source allow-list, and a
live server fed 1,000 malformed datagrams."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY

from tests.support.gateway import (
    assert_nothing_leaked,
    provider_sessions,
    run_sipp,
    running_gateway,
)
from tests.support.harness import free_udp_port
from tests.support.scenarios import CallLog


def _calls_total() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "gateway_calls":
            for sample in metric.samples:
                if sample.name == "gateway_calls_total":
                    total += sample.value
    return total


async def test_builtin_uac_50_calls_at_10_per_second(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        before = _calls_total()
        _sipp, result = await run_sipp(
            gw, tmp_path, builtin="uac", calls=50, extra=["-r", "10", "-d", "1000"], timeout=40
        )
        assert result.returncode == 0, result.explain()
        assert result.successful_calls == 50, result.explain()
        assert result.failed_calls == 0, result.explain()
        await assert_nothing_leaked(gw)
        assert _calls_total() - before == 50
        assert len(log.calls) == 50
        assert sorted(set(log.outcomes())) == ["remote_hangup"]
        # every call had its own model session, and each one heard the gateway connect
        assert len(provider_sessions(gw)) == 50


async def test_bye_from_the_caller(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        _sipp, result = await run_sipp(gw, tmp_path, scenario="bye.xml")
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["remote_hangup"]


async def test_retransmitted_invite_and_lost_ack(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        sipp, result = await run_sipp(gw, tmp_path, scenario="retransmit.xml")
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        # the INVITE sent twice made one call and one model session
        assert len(log.calls) == 1
        assert len(provider_sessions(gw)) == 1
        assert log.outcomes() == ["remote_hangup"]
        # the 200 came again while the ACK was "lost" (timer G, RFC 3261 §13.3.1.4)
        received_200 = re.findall(
            r"received.*?\n\s*SIP/2.0 200 OK[^\n]*\n(?:.*\n)*?CSeq: 1 INVITE", sipp.messages
        )
        assert len(received_200) >= 2, sipp.messages[-3000:]


async def test_options_answered_with_allow(tmp_path: Path) -> None:
    async with running_gateway() as gw:
        sipp, result = await run_sipp(gw, tmp_path, scenario="options.xml")
        assert result.successful_calls == 1, result.explain()
        assert re.search(r"^Allow:.*\bBYE\b", sipp.messages, re.M | re.I), sipp.messages
        await assert_nothing_leaked(gw)


async def test_options_503_while_draining(tmp_path: Path) -> None:
    async with running_gateway() as gw:
        gw.begin_drain()
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_options_503.xml")
        assert result.successful_calls == 1, result.explain()
        assert "SIP/2.0 503" in sipp.messages
        # an INVITE is refused too, and costs nothing
        _s, invite = await run_sipp(gw, tmp_path, scenario="e2e_invite_503.xml")
        assert invite.successful_calls == 1, invite.explain()
        await assert_nothing_leaked(gw)
        assert provider_sessions(gw) == []


async def test_digest_authentication(tmp_path: Path) -> None:
    log = CallLog()
    # sipp answers only the first challenge and knows only MD5: MD5 is offered first for it
    async with running_gateway(
        log.setup,
        sip_auth_user="alice",
        sip_auth_password=_secret("s3cret-pw"),
        sip_digest_algorithms=["MD5", "SHA-256"],
    ) as gw:
        sipp, result = await run_sipp(
            gw, tmp_path, scenario="auth.xml", extra=["-au", "alice", "-ap", "s3cret-pw"]
        )
        assert result.successful_calls == 1, result.explain()
        challenges = re.findall(
            r"^WWW-Authenticate: Digest .*algorithm=([\w-]+)", sipp.messages, re.M
        )
        assert challenges[:2] == ["MD5", "SHA-256"], challenges
        # sipp is done once our 200 to its BYE arrives: the call's end is recorded after that
        await assert_nothing_leaked(gw)
        assert len(log.calls) == 1 and log.outcomes() == ["remote_hangup"]
        # the wrong password: refused again, no RTP port, no model session, no call
        ports_seen: list[int] = []
        watcher = asyncio.create_task(_watch_ports(gw, ports_seen))
        try:
            sipp, result = await run_sipp(
                gw, tmp_path, scenario="e2e_auth_wrong.xml", extra=["-au", "alice", "-ap", "wrong"]
            )
        finally:
            watcher.cancel()
        assert result.successful_calls == 1, result.explain()
        assert re.search(r"SIP/2.0 (401|403)[^\n]*\n(?:[^\n]+\n)*?CSeq: 2 INVITE", sipp.messages)
        assert max(ports_seen, default=0) == 0
        assert len(log.calls) == 1
        assert len(provider_sessions(gw)) == 1
        await assert_nothing_leaked(gw)


async def _watch_ports(gw: object, seen: list[int]) -> None:
    from gateway.app import Gateway

    assert isinstance(gw, Gateway) and gw.sip_calls is not None
    while True:
        seen.append(gw.sip_calls.ports.in_use)
        await asyncio.sleep(0.005)


def _secret(value: str) -> object:
    from gateway.secret import Secret

    return Secret(value)


async def test_source_outside_the_allow_list_gets_403(tmp_path: Path) -> None:
    async with running_gateway(sip_allow=["127.0.0.1/32"]) as gw:
        _sipp, result = await run_sipp(
            gw, tmp_path, scenario="e2e_invite_403.xml", local_ip="127.0.0.2"
        )
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        assert provider_sessions(gw) == []
        # the allowed source still gets its call
        _s, ok = await run_sipp(gw, tmp_path, scenario="bye.xml")
        assert ok.successful_calls == 1, ok.explain()
        await assert_nothing_leaked(gw)


def _malformed(i: int, port: int) -> bytes:
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bad{i}\r\n"
    head = (
        f"INVITE sip:x@127.0.0.1 SIP/2.0\r\n{via}From: <sip:a@b>;tag={i}\r\n"
        f"To: <sip:x@127.0.0.1>\r\nCall-ID: bad-{i}\r\nCSeq: 1 INVITE\r\n"
    )
    kinds = [
        bytes((i * 7 + k) % 256 for k in range(64 + i % 300)),  # garbage
        (head + "Content-Length: 200\r\n\r\nv=0\r\n").encode()[: 40 + i % 100],  # truncated
        (head + "Content-Length: 9999\r\n\r\nv=0\r\n").encode(),  # bad Content-Length
        (head + "Content-Length: -5\r\n\r\n").encode(),
        (
            head + "X-Huge" + "A" * 60000 + "\r\nContent-Length: 0\r\n\r\n"
        ).encode(),  # huge, no colon
        (
            head.replace(f"Call-ID: bad-{i}\r\n", "")
            + "X-Pad: "
            + "B" * 30000
            + "\r\nContent-Length: 0\r\n\r\n"
        ).encode(),  # huge, no Call-ID
        b"\r\n\r\n",
        (head.replace("SIP/2.0\r\n", "SIP/9.9\r\n", 1) + "Content-Length: 0\r\n\r\n").encode(),
        (head + "Content-Length: 0\r\n\r\n").encode().replace(b"CSeq: 1 INVITE", b"CSeq: x"),
    ]
    return kinds[i % len(kinds)]


async def test_live_server_survives_1000_malformed_datagrams(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        reply_port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", reply_port))
            s.setblocking(False)
            for i in range(1000):
                s.sendto(_malformed(i, reply_port), ("127.0.0.1", gw.sip_port or 0))
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let the gateway read them
            await asyncio.sleep(0.3)
            answers = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    answers.append(s.recv(65535).split(b"\r\n", 1)[0])
        # what was answered got a 4xx/5xx with a reason (the rest was rate-limited or dropped)
        assert answers and all(re.match(rb"SIP/2.0 (4|5)\d\d \S", a) for a in answers), answers
        # the HTTP side is healthy and a normal call still succeeds
        status = await asyncio.to_thread(_http_status, f"http://127.0.0.1:{gw.http_port}/healthz")
        assert status == 200
        _sipp, result = await run_sipp(gw, tmp_path, scenario="bye.xml")
        assert result.successful_calls == 1, result.explain()
        assert len(log.calls) == 1  # none of the garbage became a call
        await assert_nothing_leaked(gw)


def _http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)
