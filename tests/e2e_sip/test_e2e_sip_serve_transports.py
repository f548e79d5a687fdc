"""`gateway serve` exactly as users start it (a child process, on uvloop) over UDP, TCP and TLS:
real calls that connect (200 OK, ACK, media both ways, BYE → 200), a TLS handshake by
`openssl s_client`, and outbound calls through TOML trunks (over TCP, and to a name no resolver
knows) after which the SIP timers of every other call still run."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import telcodecs

from gateway.media.format import AudioFormat
from gateway.realtime.local.tts import render_prompts
from gateway.sip.message import SipResponse, parse
from tests.support.audio import windows_found
from tests.support.baresip import Baresip
from tests.support.binaries import require_binary
from tests.support.dnsmasq import Dnsmasq, dead_udp_tcp_port
from tests.support.gateway import GatewayProcess, call_summaries
from tests.support.harness import free_port, free_udp_tcp_port
from tests.support.sipp import Sipp

# the gateway is a child process on uvloop: the test's own loop does not matter (conftest.py)
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

#: fails IDNA encoding before any DNS query, so nothing leaves the machine
UNRESOLVABLE = "x" * 64 + ".test"


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (cert.pem, key.pem)."""
    openssl = require_binary("openssl", "openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def stop(gw: GatewayProcess) -> None:
    rc = await asyncio.to_thread(gw.stop)
    assert rc == 0, gw.log_path.read_text()[-3000:]


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_serve_takes_a_sipp_call(tmp_path: Path, transport: str) -> None:
    gw = GatewayProcess(tmp_path)
    await asyncio.to_thread(gw.start)
    try:
        sipp = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario="e2e_pcap_short.xml",
            transport=transport,
            extra=["-m", "1", "-s", "agent"],
            timeout=20,
        ).start()
        try:
            result = await sipp.wait_async()
        finally:
            sipp.kill()
        # 200 OK, ACK, 3 s of speech, BYE answered 200: the scenario's every step
        assert result.successful_calls == 1, result.explain()
        kind = {"u1": "UDP", "t1": "TCP"}[transport]
        assert f"SIP/2.0/{kind} " in sipp.messages
        assert f"{kind} message received" in sipp.messages
    finally:
        await stop(gw)
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "remote_hangup", summary
    # the greeting went out as RTP and the caller's speech came in
    assert summary["rtp_out"] > 50 and summary["rtp_in"] > 50, summary


async def test_serve_takes_a_tls_call_from_baresip_and_an_openssl_handshake(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path)
    tls_port = free_port()
    gw = GatewayProcess(
        tmp_path,
        "--sip-tls-listen", f"127.0.0.1:{tls_port}",
        "--sip-tls-cert", str(cert),
        "--sip-tls-key", str(key),
    )  # fmt: skip
    await asyncio.to_thread(gw.start)
    try:
        # openssl s_client: a verified handshake, then OPTIONS over it gets 200
        openssl = require_binary("openssl", "openssl")
        options = (
            f"OPTIONS sip:agent@127.0.0.1:{tls_port} SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-ossl1\r\n"
            "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\n"
            "Call-ID: ossl1@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        proc = await asyncio.create_subprocess_exec(
            openssl, "s_client", "-connect", f"127.0.0.1:{tls_port}", "-CAfile", str(cert),
            "-verify_ip", "127.0.0.1", "-verify_return_error", "-quiet",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(options.encode())
        await proc.stdin.drain()
        try:
            async with asyncio.timeout(10):
                status_line = await proc.stdout.readline()
        finally:
            proc.kill()
            _, err = await proc.communicate()
        assert status_line.startswith(b"SIP/2.0 200 "), (status_line, err[-1000:])

        # baresip dials sip:...;transport=tls, hears the greeting, hangs up at the end of its file
        prompts = await render_prompts()
        greeting = telcodecs.ulaw_decode(prompts.audio("greeting", AudioFormat("pcmu", 8000)))
        seconds = int(len(greeting) / 8000) + 3
        sox = require_binary("sox", "sox")
        source = tmp_path / "silence.wav"
        subprocess.run(
            [
                sox,
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                str(source),
                "trim",
                "0",
                str(seconds),
            ],
            check=True,
        )
        phone = Baresip(
            tmp_path,
            source,
            f"sip:agent@127.0.0.1:{tls_port};transport=tls",
            seconds + 4,
            config_extra=f"sip_cafile {cert}\n",
        )
        phone.args.insert(1, "-s")  # SIP trace in its log
        phone.start()
        try:
            code = await phone.wait_async()
        finally:
            phone.kill()
        trace = phone.log.read_text(errors="replace")
        assert code == 0, trace[-3000:]
    finally:
        await stop(gw)
    # every message of the call went over TLS: INVITE, 200 (Contact on the TLS port), ACK, BYE, 200
    assert re.search(rf"TLS 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{tls_port}\nINVITE ", trace), trace
    assert f"Contact: <sip:gateway@127.0.0.1:{tls_port};transport=tls>" in trace, trace
    assert re.search(rf"-> 127\.0\.0\.1:{tls_port}\nACK ", trace), trace
    assert re.search(rf"-> 127\.0\.0\.1:{tls_port}\nBYE ", trace), trace
    assert re.search(r"SIP/2\.0 200 OK\r?\n.*\r?\n.*\r?\n.*\r?\n.*\r?\nCSeq: \d+ BYE", trace), trace
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "remote_hangup", summary
    assert summary["rtp_in"] > 50, summary
    # by content: baresip heard the greeting
    found = windows_found(greeting[:16000], phone.heard())
    assert np.mean(np.array(found) >= 0.8) >= 0.85, found


def invite(gw_port: int, local_port: int, call_id: str) -> bytes:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:agent@127.0.0.1:{gw_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-{call_id};rport\r\n"
        f"From: <sip:raw@127.0.0.1>;tag=t-{call_id}\r\nTo: <sip:agent@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@127.0.0.1:{local_port}>\r\n"
        "Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def in_dialog(method: str, ok: SipResponse, local_port: int, cseq: int) -> bytes:
    """ACK or BYE for the dialog `ok` (a 2xx to our INVITE) set up, sent to its Contact."""
    target = ok.contacts[0].uri
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-{method}{cseq};rport\r\n"
        f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
        f"Call-ID: {ok.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def oks_to_unacked_invite(gw_port: int, seconds: float) -> tuple[list[float], socket.socket]:
    """Send an INVITE and no ACK from a raw UDP socket; the times its 200 OKs arrived
    (relative to the first) within `seconds`, and the socket (to ACK and BYE with)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    port = sock.getsockname()[1]
    sock.sendto(invite(gw_port, port, "unacked-1"), ("127.0.0.1", gw_port))
    oks: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if data.startswith(b"SIP/2.0 200 "):
            oks.append(time.monotonic())
    return [at - oks[0] for at in oks] if oks else [], sock


async def test_serve_outbound_calls_over_tcp_and_to_an_unknown_name_keep_every_timer_running(
    tmp_path: Path,
) -> None:
    """POST /calls through a `;transport=tcp` trunk reaches a sipp UAS over TCP and connects;
    one through a trunk no resolver knows is refused (502, resolved before any INVITE),
    counted and logged. Neither stops the one timer of every SIP transaction: an un-ACKed
    INVITE's 200 OK is still retransmitted (RFC 3261 §13.3.1.4: after T1, then 2·T1, ...)."""
    uas_port = free_udp_tcp_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[trunks.tcp]\nuri = "sip:127.0.0.1:{uas_port};transport=tcp"\n'
        'from_user = "+15550001111"\n'
        f'[trunks.nowhere]\nuri = "sip:{UNRESOLVABLE}:5060"\n'
    )
    uas = Sipp(tmp_path, "", builtin="uas", transport="t1", extra=["-m", "1"], timeout=30)
    uas.args[uas.args.index("-p") + 1] = str(uas_port)  # the trunk's address
    uas.start()
    gw = GatewayProcess(tmp_path, "--config", str(config))
    await asyncio.to_thread(gw.start)
    try:
        status, body = await asyncio.to_thread(
            gw.http, "POST", "/calls", {"to": "+15557654321", "trunk": "tcp"}
        )
        assert status == 201, body
        call_id = body["id"]

        async def listed() -> bool:
            _, calls = await asyncio.to_thread(gw.http, "GET", "/calls")
            return any(c["id"] == call_id for c in calls["calls"])

        async with asyncio.timeout(10):
            while not await listed():  # answered over TCP: the call exists
                await asyncio.sleep(0.1)

        status, body = await asyncio.to_thread(
            gw.http, "POST", "/calls", {"to": "+15550000000", "trunk": "nowhere"}
        )
        # RFC 3263 runs before the INVITE: a trunk whose name leads nowhere is the API's answer
        assert status == 502 and UNRESOLVABLE in body["error"]["message"], body

        oks, sock = await asyncio.to_thread(oks_to_unacked_invite, gw.sip_port, 2.0)
        with sock:
            # sent, then after T1 and 2·T1: the timer that drives every transaction still runs
            assert len(oks) == 3, oks
            assert oks[1] == pytest.approx(0.5, abs=0.2) and oks[2] == pytest.approx(1.5, abs=0.2)
            # it goes on until the ACK: take the next one
            ok = parse(await asyncio.to_thread(wait_response, sock, b"INVITE"))
            assert isinstance(ok, SipResponse)
            port = sock.getsockname()[1]
            sock.sendto(in_dialog("ACK", ok, port, 1), ("127.0.0.1", gw.sip_port))
            sock.sendto(in_dialog("BYE", ok, port, 2), ("127.0.0.1", gw.sip_port))
            bye_ok = await asyncio.to_thread(wait_response, sock, b"BYE")
            assert bye_ok.startswith(b"SIP/2.0 200 "), bye_ok

        status, _ = await asyncio.to_thread(gw.http, "DELETE", f"/calls/{call_id}")
        assert status == 200
        result = await uas.wait_async(20)  # ACK received, then our BYE answered 200, over TCP
        assert result.successful_calls == 1, result.explain()
        assert "TCP message received" in uas.messages and "BYE sip:" in uas.messages

        _, metrics = await asyncio.to_thread(gw.http, "GET", "/metrics")
        dns_errors = r'gateway_sip_dns_queries_total\{result="error",type="A"\} (\S+)'
        errors = re.search(dns_errors, metrics)
        assert errors and float(errors.group(1)) >= 1, metrics
    finally:
        uas.kill()
        await stop(gw)
    unresolved = [x for x in gw.log_lines() if x.get("event") == "outbound_trunk_unresolved"]
    assert [(x["trunk"], x["host"]) for x in unresolved] == [("nowhere", UNRESOLVABLE)]
    assert [x["name"] for x in gw.log_lines() if x.get("event") == "sip_dns_failed"] == [
        UNRESOLVABLE
    ]
    assert not [x for x in gw.log_lines() if x.get("event") == "sip_send_failed"]
    assert not [x for x in gw.log_lines() if x.get("level") == "error"]


def wait_response(sock: socket.socket, method: bytes, timeout: float = 5.0) -> bytes:
    """The next response to a `method` request that `sock` receives."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if data.startswith(b"SIP/2.0 ") and re.search(rb"CSeq: \d+ " + method, data):
            return data
    raise AssertionError(f"no response to {method.decode()} in {timeout} s")


async def test_serve_outbound_calls_to_a_trunk_name_fail_over_between_srv_targets(
    tmp_path: Path,
) -> None:
    """RFC 3263 on uvloop, as users run it: trunks `sip:trunk.test` and
    `sip:trunk.test;transport=tcp` resolved by a real DNS server (dnsmasq, `sip_dns_servers`).
    NAPTR leads to `_sip._udp`, whose first SRV target (priority 10) is a sipp answering 503
    and whose second (priority 20) is a sipp UAS; `_sip._tcp`'s first target is a port nobody
    listens on (the refused connection is a transport error, §17.1.4) and its second a sipp UAS
    over TCP. Both calls are answered by the live target, each after one fail-over."""
    busy = Sipp(tmp_path / "busy", "", scenario="uas_503.xml", extra=["-m", "1"], timeout=30)
    uas_udp = Sipp(tmp_path / "udp", "", builtin="uas", extra=["-m", "1"], timeout=30)
    uas_tcp = Sipp(tmp_path / "tcp", "", builtin="uas", transport="t1", extra=["-m", "1"])
    dead = dead_udp_tcp_port()
    dns = Dnsmasq(
        tmp_path,
        hosts=[(h, "127.0.0.1") for h in ("busy.trunk.test", "live.trunk.test", "dead.trunk.test")],
        srv=[
            ("_sip._udp.trunk.test", "busy.trunk.test", busy.local_port, 10, 0),
            ("_sip._udp.trunk.test", "live.trunk.test", uas_udp.local_port, 20, 0),
            ("_sip._tcp.trunk.test", "dead.trunk.test", dead, 10, 0),
            ("_sip._tcp.trunk.test", "live.trunk.test", uas_tcp.local_port, 20, 0),
        ],
        naptr=[("trunk.test", 10, 10, "s", "SIP+D2U", "", "_sip._udp.trunk.test")],
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'sip_dns_servers = ["{dns.start().server}"]\n'
        '[trunks.dns_udp]\nuri = "sip:trunk.test"\n'
        '[trunks.dns_tcp]\nuri = "sip:trunk.test;transport=tcp"\n'
    )
    for sipp in (busy, uas_udp, uas_tcp):
        sipp.start()
    gw = GatewayProcess(tmp_path, "--config", str(config))
    try:
        await asyncio.to_thread(gw.start)
        ids = []
        for trunk in ("dns_udp", "dns_tcp"):
            status, body = await asyncio.to_thread(
                gw.http, "POST", "/calls", {"to": "+15557654321", "trunk": trunk}
            )
            assert status == 201, body
            ids.append(body["id"])

        async def listed() -> set[str]:
            _, calls = await asyncio.to_thread(gw.http, "GET", "/calls")
            return {c["id"] for c in calls["calls"]}

        async with asyncio.timeout(15):  # answered by the live targets: the calls exist
            while not set(ids) <= await listed():
                await asyncio.sleep(0.1)
        for call_id in ids:
            status, _ = await asyncio.to_thread(gw.http, "DELETE", f"/calls/{call_id}")
            assert status == 200
        busy_result = await busy.wait_async(20)  # the 503 target got the INVITE (and its ACK)
        assert busy_result.successful_calls == 1, busy_result.explain()
        for uas in (uas_udp, uas_tcp):  # answered, then our BYE
            result = await uas.wait_async(20)
            assert result.successful_calls == 1, result.explain()
        assert "TCP message received" in uas_tcp.messages

        _, metrics = await asyncio.to_thread(gw.http, "GET", "/metrics")
        for reason in ("503", "transport"):
            found = re.search(rf'gateway_sip_failovers_total\{{reason="{reason}"\}} (\S+)', metrics)
            assert found and float(found.group(1)) == 1, metrics
        assert re.search(r'gateway_sip_dns_queries_total\{result="ok",type="SRV"\} [1-9]', metrics)
    finally:
        for sipp in (busy, uas_udp, uas_tcp):
            sipp.kill()
        dns.stop()
        await stop(gw)
    assert "NAPTR trunk.test" in dns.queries() and "SRV _sip._tcp.trunk.test" in dns.queries()
    failovers = [x for x in gw.log_lines() if x.get("event") == "sip_failover"]
    assert sorted((x["reason"], x["failed"]) for x in failovers) == [
        ("503", f"udp:127.0.0.1:{busy.local_port}"),
        ("transport", f"tcp:127.0.0.1:{dead}"),
    ], failovers
    assert not [x for x in gw.log_lines() if x.get("level") == "error"]
