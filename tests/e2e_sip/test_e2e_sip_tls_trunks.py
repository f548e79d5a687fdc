"""Outbound TLS through trunks, in-process on both event loops, against `openssl s_server`:
the trunk's certificate is verified against its CA bundle (a certificate from another CA is a
transport error that fails the call at once with its reason, counted and logged), and
`tls_verify = false` is the one way past that; `tls_server_name` is the SNI and the name
verified; a client certificate is presented when the trunk has one. What s_server receives
shows our Via and Contact over TLS: the TLS listener's port and transport (RFC 3261 §8.1.1.8)."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import REGISTRY

from gateway.app import Gateway
from gateway.sip.message import SipMessage, SipRequest, SipResponse, SipStreamParser, make_response
from tests.support.certs import Issued, TestCa, TlsServer
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.harness import free_port
from tests.support.waiting import wait_for


def tls_errors(reason: str) -> float:
    labels = {"transport": "tls", "reason": reason}
    return REGISTRY.get_sample_value("gateway_sip_send_errors_total", labels) or 0.0


def listener(gw_cert: Issued) -> dict[str, Any]:
    """Settings for the gateway's own TLS listener (what its Via and Contact name)."""
    return {
        "sip_tls_listen": f"127.0.0.1:{free_port()}",
        "sip_tls_cert": str(gw_cert.cert),
        "sip_tls_key": str(gw_cert.key),
    }


async def dial(gw: Gateway, trunk: str, to: str = "1000") -> None:
    assert gw.sip_calls is not None
    await gw.sip_calls.dial(to, trunk, {})


async def wait_invite(server: TlsServer, count: int = 1) -> str:
    await wait_for(
        lambda: server.output().count("INVITE sip") >= count, 10, f"{count} INVITE(s) at s_server"
    )
    return server.output()


def tls_port(gw: Gateway) -> int:
    assert gw.sip_transport is not None
    return gw.sip_transport.tls_port


async def test_a_trunk_certificate_from_another_ca_fails_the_call_at_once_unless_verify_is_off(
    tmp_path: Path,
) -> None:
    ca, rogue = TestCa(tmp_path), TestCa(tmp_path, "rogue")
    port = free_port()
    server = TlsServer(tmp_path, port, rogue.issue("imposter", "IP:127.0.0.1")).start()
    trunks = {
        "strict": {"uri": f"sip:127.0.0.1:{port};transport=tls", "tls_ca_file": str(ca.cert)},
        "lax": {"uri": f"sip:127.0.0.1:{port};transport=tls", "tls_verify": False},
    }
    before = tls_errors("tls_verify")
    try:
        with structlog.testing.capture_logs() as logs:
            settings = listener(ca.issue("gateway", "IP:127.0.0.1"))
            async with running_gateway(trunks=trunks, **settings) as gw:
                assert gw.sip_calls is not None
                await dial(gw, "strict")
                # a transport error, not a 32 s wait for timer B (RFC 3261 §17.1.4, §8.1.3.1)
                await wait_for(lambda: not gw.sip_calls._pending, 5, "the call to fail")
                await assert_nothing_leaked(gw)
                assert "INVITE" not in server.output()
                assert tls_errors("tls_verify") == before + 1

                await dial(gw, "lax")  # tls_verify = false: the same certificate is taken
                text = await wait_invite(server)
                ours = tls_port(gw)
    finally:
        server.kill()
    [failed] = [e for e in logs if e["event"] == "outbound_call_failed"]
    assert failed["status"] == 503, failed
    assert "TLS certificate not accepted" in failed["reason"], failed
    [sent] = [e for e in logs if e["event"] == "sip_send_failed"]
    assert sent["reason"] == "tls_verify" and "issuer" in sent["error"], sent
    assert any(e["event"] == "sip_tls_verify_disabled" and e["trunk"] == "lax" for e in logs)
    # over TLS, our Via and Contact name the TLS listener (§8.1.1.8, §18.1.1)
    assert re.search(rf"Via: SIP/2\.0/TLS 127\.0\.0\.1:{ours};branch=", text), text
    assert f"Contact: <sip:gateway@127.0.0.1:{ours};transport=tls>" in text, text


async def test_tls_server_name_is_the_sni_and_the_name_verified_and_sips_is_tls(
    tmp_path: Path,
) -> None:
    """s_server shows its CA's certificate for trunk.example only to a client whose SNI names
    it (-servername/-cert2), and another CA's to anyone else: the call gets through only if
    our ClientHello says trunk.example and the certificate is verified under that name."""
    ca, rogue = TestCa(tmp_path), TestCa(tmp_path, "rogue")
    named = ca.issue("named", "DNS:trunk.example")
    port = free_port()
    server = TlsServer(
        tmp_path, port, rogue.issue("imposter", "IP:127.0.0.1"),
        "-servername", "trunk.example", "-cert2", str(named.cert), "-key2", str(named.key),
    ).start()  # fmt: skip
    trunks = {
        "named": {
            "uri": f"sips:127.0.0.1:{port}",
            "tls_ca_file": str(ca.cert),
            "tls_server_name": "trunk.example",
        }
    }
    try:
        settings = listener(ca.issue("gateway", "IP:127.0.0.1"))
        async with running_gateway(trunks=trunks, **settings) as gw:
            await dial(gw, "named", "+15550001234")
            text = await wait_invite(server)
            ours = tls_port(gw)
    finally:
        server.kill()
    assert "Hostname in TLS extension" in text and "trunk.example" in text, text
    # a number through a sips: trunk is a sips: Request-URI; its Contact is sips: (§8.1.1.8)
    assert "INVITE sips:+15550001234@127.0.0.1 SIP/2.0" in text, text
    assert f"Contact: <sips:gateway@127.0.0.1:{ours}>" in text, text
    assert re.search(rf"Via: SIP/2\.0/TLS 127\.0\.0\.1:{ours};", text), text


async def test_a_trunk_that_asks_for_a_client_certificate_is_shown_the_configured_one(
    tmp_path: Path,
) -> None:
    ca = TestCa(tmp_path)
    client = ca.issue("gateway-client", "DNS:gateway.test")
    port = free_port()
    server = TlsServer(
        tmp_path, port, ca.issue("trunk", "IP:127.0.0.1"), "-CAfile", str(ca.cert), "-Verify", "1"
    ).start()
    uri = f"sip:127.0.0.1:{port};transport=tls"
    trunks = {
        "with_cert": {
            "uri": uri,
            "tls_ca_file": str(ca.cert),
            "tls_client_cert": str(client.cert),
            "tls_client_key": str(client.key),
        },
        "without": {"uri": uri, "tls_ca_file": str(ca.cert)},
    }
    try:
        with structlog.testing.capture_logs() as logs:
            settings = listener(ca.issue("gateway", "IP:127.0.0.1"))
            async with running_gateway(trunks=trunks, **settings) as gw:
                assert gw.sip_calls is not None
                await dial(gw, "without")  # s_server wants a certificate: a transport error
                await wait_for(lambda: not gw.sip_calls._pending, 5, "the call to fail")
                await dial(gw, "with_cert")
                text = await wait_invite(server)
    finally:
        server.kill()
    assert "subject=CN = gateway-client" in text, text
    # refused after the handshake (TLS 1.3): a transport error with the peer's alert
    [failed] = [e for e in logs if e["event"] == "outbound_call_failed"]
    assert failed["status"] == 503 and "CERTIFICATE_REQUIRED" in failed["reason"], failed


class TlsPhone:
    """A scripted SIP phone on a verified TLS connection (a real socket and OpenSSL): what
    baresip 1.0 cannot do, a call whose Request-URI and Contact are sips:."""

    def __init__(self, port: int, ca: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.local = self.sock.getsockname()[1]
        self.parser = SipStreamParser()
        self.queue: list[SipMessage] = []

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def next(self) -> SipMessage:
        while not self.queue:
            data = self.sock.recv(65536)
            assert data, "the gateway closed the connection"
            self.queue += self.parser.feed(data)
        return self.queue.pop(0)

    def close(self) -> None:
        self.sock.close()


async def test_a_sips_call_over_tls_is_taken_and_our_bye_reuses_its_connection(
    tmp_path: Path,
) -> None:
    """INVITE sips: over TLS is answered 200 with a sips: Contact on our TLS port (§12.1.1);
    the phone's Contact is sips: on a port nobody listens on, so our BYE can only reach it
    over the connection the call came in on (RFC 5923 style reuse), as a TLS request."""
    ca = TestCa(tmp_path)
    dead = free_port()
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {free_port()} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    async with running_gateway(**listener(ca.issue("gateway", "IP:127.0.0.1"))) as gw:
        port = tls_port(gw)
        phone = await asyncio.to_thread(TlsPhone, port, ca.cert)
        try:
            via = f"SIP/2.0/TLS 127.0.0.1:{phone.local};branch=z9hG4bK-sips1;rport"
            common = "From: <sips:raw@127.0.0.1>;tag=p1\r\nCall-ID: sips-1\r\nMax-Forwards: 70\r\n"
            phone.send(
                f"INVITE sips:agent@127.0.0.1:{port} SIP/2.0\r\nVia: {via}\r\n{common}"
                f"To: <sips:agent@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sips:raw@127.0.0.1:{dead}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
            )
            ok = await asyncio.to_thread(phone.next)
            while isinstance(ok, SipResponse) and ok.status < 200:
                ok = await asyncio.to_thread(phone.next)
            assert isinstance(ok, SipResponse) and ok.status == 200, ok
            assert ok.headers.get("Contact") == f"<sips:gateway@127.0.0.1:{port}>"
            phone.send(
                f"ACK sips:gateway@127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:{phone.local};branch=z9hG4bK-sips1a;rport\r\n"
                f"{common}To: {ok.headers.get('To')}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            )
            [call] = await _live_calls(gw)
            await call.hangup("api")
            bye = await asyncio.to_thread(phone.next)
            assert isinstance(bye, SipRequest) and bye.method == "BYE", bye
            assert bye.uri == f"sips:raw@127.0.0.1:{dead}"
            assert (bye.headers.get("Via") or "").startswith(f"SIP/2.0/TLS 127.0.0.1:{port};")
            phone.send(make_response(bye, 200, "OK").serialize().decode())
            await assert_nothing_leaked(gw)
        finally:
            phone.close()


async def _live_calls(gw: Gateway) -> list[Any]:
    await wait_for(lambda: bool(gw.manager.calls), 10, "the call to be up")
    return list(gw.manager.calls.values())
