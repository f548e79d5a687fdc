"""SipTransport on real sockets: TLS and TCP framing, bind errors, metrics, BYE over TCP."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.sip.message import SipResponse, SipStreamParser
from gateway.sip.transport import SipTransport
from gateway.sip.ua import CallAcked, EndpointConfig, SipEndpoint
from tests.sip.sip_testapp import AutoAnswer, start_app
from tests.sipp_harness import Sipp, require_binary


def options(port: int, transport: str, branch: str) -> bytes:
    return (
        f"OPTIONS sip:gw@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK-{branch}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\n"
        f"Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> SipResponse:
    parser = SipStreamParser()
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "connection closed before a response"
        messages = parser.feed(data)
        if messages:
            assert isinstance(messages[0], SipResponse)
            return messages[0]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_tls_and_tcp_options_and_metrics(tmp_path: Path) -> None:
    openssl = require_binary("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    transport = SipTransport(endpoint, lambda event: None)
    await transport.start("127.0.0.1", 0, tls_port=0, tls_context=server_ctx)
    try:
        assert transport.tls_port and transport.tls_port != transport.port
        before_req = sample("gateway_sip_requests_total", {"method": "OPTIONS"})
        before_2xx = sample("gateway_sip_responses_total", {"code_class": "2xx"})
        client_ctx = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", transport.tls_port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        data = options(transport.port, "TLS", "tls1")
        writer.write(data[:20])  # framing across writes
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[20:])
        response = await read_response(reader)
        assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
        writer.write(options(transport.port, "TCP", "tcp1"))
        assert (await read_response(reader)).status == 200
        before_bad = sample("gateway_sip_rejected_total", {"reason": "malformed"})
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
        assert await asyncio.wait_for(reader.read(), 5) == b""  # unframeable: closed
        writer.close()
        assert sample("gateway_sip_rejected_total", {"reason": "malformed"}) == before_bad + 1
        assert sample("gateway_sip_requests_total", {"method": "OPTIONS"}) == before_req + 2
        assert sample("gateway_sip_responses_total", {"code_class": "2xx"}) == before_2xx + 2
    finally:
        await transport.aclose()


async def test_bind_error_names_the_listener() -> None:
    first = SipTransport(SipEndpoint(EndpointConfig("127.0.0.1", 0)), lambda event: None)
    await first.start("127.0.0.1", 0)
    second = SipTransport(SipEndpoint(EndpointConfig("127.0.0.1", 0)), lambda event: None)
    try:
        with pytest.raises(OSError) as info:
            await second.start("127.0.0.1", first.port)
        assert str(info.value).endswith(
            f"sip_listen 127.0.0.1:{first.port}: Address already in use"
        )
    finally:
        await first.aclose()
        await second.aclose()


async def test_bye_from_gateway_over_tcp_reuses_the_connection(tmp_path: Path) -> None:
    app = await start_app(AutoAnswer(hangup_after=0.3))
    sipp = Sipp(
        tmp_path,
        f"127.0.0.1:{app.port}",
        scenario="uas_bye.xml",
        transport="t1",
        extra=["-m", "1"],
        timeout=15,
    ).start()
    try:
        result = await sipp.wait_async()
        assert result.returncode == 0, result.explain()
        assert len(app.of(CallAcked)) == 1
        await asyncio.sleep(0.1)
        assert app.endpoint.active_calls == 0
    finally:
        sipp.kill()
        await app.aclose()


async def test_garbage_starting_with_invite_counts_as_malformed_not_as_an_invite() -> None:
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    transport = SipTransport(endpoint, lambda event: None)
    await transport.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            received.put_nowait(data)

    client, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        invites = sample("gateway_sip_requests_total", {"method": "INVITE"})
        opts = sample("gateway_sip_requests_total", {"method": "OPTIONS"})
        bad = sample("gateway_sip_rejected_total", {"reason": "malformed"})
        for junk in (
            b"INVITE \x00\x01\x02 garbage",
            b"INVITE sip:gw@127.0.0.1 SIP/2.0\r\nno colon here\r\n\r\n",
            b"INVITEXYZ",
        ):
            client.sendto(junk, ("127.0.0.1", transport.port))
        probe = options(transport.port, "UDP", "after-junk")
        here = str(client.get_extra_info("sockname")[1]).encode()
        client.sendto(probe.replace(b":5999;", b":" + here + b";"), ("127.0.0.1", transport.port))
        while not (await asyncio.wait_for(received.get(), 5)).startswith(b"SIP/2.0 200"):
            pass
        assert sample("gateway_sip_requests_total", {"method": "INVITE"}) == invites
        assert sample("gateway_sip_rejected_total", {"reason": "malformed"}) == bad + 3
        assert sample("gateway_sip_requests_total", {"method": "OPTIONS"}) == opts + 1
    finally:
        client.close()
        await transport.aclose()
