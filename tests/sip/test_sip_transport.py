"""SipTransport on real sockets, on uvloop and the default loop (tests/conftest.py): TLS and TCP
framing, bind errors, metrics, BYE over TCP, and sends that fail without stopping anything else."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import structlog
from prometheus_client import REGISTRY

from gateway.sip import transport as transport_module
from gateway.sip.events import CallAcked, OutboundCallFailed
from gateway.sip.message import SipRequest, SipResponse, SipStreamParser, parse
from gateway.sip.sdp import make_offer
from gateway.sip.transaction import T1, Address
from gateway.sip.transport import SipTransport
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.binaries import require_binary
from tests.support.harness import free_port
from tests.support.sip_app import AutoAnswer, start_app
from tests.support.sipp import Sipp


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


#: a host name no resolver can know: a 64-character label fails IDNA encoding before any query
#: (so nothing leaves the machine), on both loops
UNRESOLVABLE = "x" * 64 + ".test"


def on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


async def invites_received(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """(arrival time, Call-ID) of every INVITE `sock` receives within `seconds`."""
    loop = asyncio.get_running_loop()
    got: list[tuple[float, str]] = []
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                data = await loop.sock_recv(sock, 65536)
        except TimeoutError:
            break
        message = parse(data)
        if isinstance(message, SipRequest) and message.method == "INVITE":
            got.append((loop.time(), message.call_id))
    return got


async def test_a_message_that_cannot_be_sent_stops_neither_the_others_nor_the_timer() -> None:
    """One timer drives every SIP transaction of every call: a send that fails (a name that does
    not resolve, a refused TCP connection, an IPv6 address on the IPv4 socket, which uvloop
    refuses in sendto) is logged, counted and reported to its transaction, which ends at once
    (§17.1.4: the call fails with 503, not 32 s later by timer B), and another call's INVITE
    still goes out and is retransmitted on timer A (RFC 3261 §17.1.1.2: T1, then 2·T1)."""
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    refused_port = free_port()  # a TCP port nobody listens on
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    failed_calls: list[OutboundCallFailed] = []
    transport = SipTransport(
        endpoint, lambda e: failed_calls.append(e) if isinstance(e, OutboundCallFailed) else None
    )
    await transport.start("127.0.0.1", 0)
    offer = make_offer("127.0.0.1", 40000)
    errors = {
        (t, r): sample("gateway_sip_send_errors_total", {"transport": t, "reason": r})
        for t, r in (("udp", "resolve"), ("tcp", "connect"), ("udp", "send"))
    }
    try:
        with structlog.testing.capture_logs() as logs:
            for dest in (
                Address("udp", UNRESOLVABLE, 5060),
                Address("tcp", "127.0.0.1", refused_port),
                Address("udp", "::1", 5060),
            ):
                endpoint.invite("sip:lost@127.0.0.1", offer, "sip:gw@127.0.0.1", dest, loop.time())
                transport.flush()  # never raises
            endpoint.invite(
                "sip:bob@127.0.0.1",
                offer,
                "sip:gw@127.0.0.1",
                Address("udp", "127.0.0.1", peer.getsockname()[1]),
                loop.time(),
            )
            transport.flush()
            got = await invites_received(peer, 4 * T1)
        times = [at for at, _ in got]
        assert len(times) == 3, got  # sent, then after T1 and 2·T1
        assert len({call_id for _, call_id in got}) == 1
        assert times[1] - times[0] == pytest.approx(T1, abs=0.2)
        assert times[2] - times[1] == pytest.approx(2 * T1, abs=0.2)

        def added(t: str, r: str) -> float:
            after = sample("gateway_sip_send_errors_total", {"transport": t, "reason": r})
            return after - errors[(t, r)]

        # each failure ends its transaction: no retransmission goes the same way
        assert added("udp", "resolve") == 1
        assert added("tcp", "connect") == 1
        if on_uvloop():  # the default loop reports the family mismatch to error_received
            assert added("udp", "send") == 1
        # each as a 503 whose phrase says why (§8.1.3.1): the name, the refused connection...
        assert [f.status for f in failed_calls] == [503] * (3 if on_uvloop() else 2)
        reasons = {f.reason for f in failed_calls}
        assert {
            "Service Unavailable (no address)",
            "Service Unavailable (Connection refused)",
        } <= reasons, reasons
        failed = [e for e in logs if e["event"] == "sip_send_failed"]
        # logged once per destination and reason (10 s), however often it failed
        assert sorted((e["reason"], e["host"]) for e in failed) == sorted(
            [("resolve", UNRESOLVABLE), ("connect", "127.0.0.1")]
            + ([("send", "::1")] if on_uvloop() else [])
        ), failed
    finally:
        await transport.aclose()
        peer.close()


async def test_udp_to_a_host_name_is_resolved_then_sent() -> None:
    """uvloop's sendto takes IP literals only: a trunk named by host name (here `localhost`,
    from /etc/hosts) is looked up off the loop, and its INVITE and retransmissions arrive."""
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    transport = SipTransport(endpoint, lambda event: None)
    await transport.start("127.0.0.1", 0)
    try:
        dest = Address("udp", "localhost", peer.getsockname()[1])
        offer = make_offer("127.0.0.1", 40000)
        endpoint.invite("sip:bob@localhost", offer, "sip:gw@127.0.0.1", dest, loop.time())
        transport.flush()
        got = await invites_received(peer, 2.5 * T1)
        assert len(got) == 2, got  # sent, then again after T1
    finally:
        await transport.aclose()
        peer.close()


async def test_messages_to_a_destination_being_connected_share_its_connection() -> None:
    """Outbound TCP: messages queued while the connection is being made go on it, in order, and
    a destination dialled by host name keeps using the connection made to it."""
    loop = asyncio.get_running_loop()
    connections: list[list[str]] = []
    handlers: list[asyncio.Task[object]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[str] = []
        connections.append(seen)
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        parser = SipStreamParser()
        while data := await reader.read(65536):
            seen.extend(m.call_id for m in parser.feed(data))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    transport = SipTransport(endpoint, lambda event: None)
    await transport.start("127.0.0.1", 0)
    try:
        dest = Address("tcp", "localhost", port)
        offer = make_offer("127.0.0.1", 40000)

        def call() -> str:
            handle = endpoint.invite("sip:b@localhost", offer, "sip:a@127.0.0.1", dest, loop.time())
            transport.flush()
            return endpoint._core.calls[handle].invite.call_id

        sent = [call(), call()]  # back to back: the connection is not made yet
        await asyncio.sleep(0.3)
        sent.append(call())  # on the connection now open, found by the name it was dialled by
        async with asyncio.timeout(3):
            while sum(len(c) for c in connections) < 3:
                await asyncio.sleep(0.02)
        assert connections == [sent]
    finally:
        await transport.aclose()  # closes the connection: each handler reads EOF and returns
        async with asyncio.timeout(3):
            await asyncio.gather(*handlers)
        server.close()
        await server.wait_closed()


async def test_a_connection_over_the_limit_is_closed_counted_and_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "MAX_CONNECTIONS", 2)
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 0))
    transport = SipTransport(endpoint, lambda event: None)
    await transport.start("127.0.0.1", 0)
    before = sample("gateway_sip_rejected_total", {"reason": "capacity"})
    writers = []
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                _reader, writer = await asyncio.open_connection("127.0.0.1", transport.port)
                writers.append(writer)
            third = writers[-1]
            async with asyncio.timeout(3):  # the third is closed by the gateway
                assert await _reader.read() == b""
        assert len(transport._streams) == 2 and not writers[0].is_closing()
        assert sample("gateway_sip_rejected_total", {"reason": "capacity"}) == before + 1
        [line] = [e for e in logs if e["event"] == "sip_request_refused"]
        assert line["reason"] == "capacity" and line["source"] == "127.0.0.1"
        third.close()
    finally:
        for writer in writers:
            writer.close()
        await transport.aclose()


async def test_a_state_table_gap_is_counted_and_logged_once_per_window() -> None:
    """An `UnexpectedInput` (here: a timer a transaction's table does not know) is counted by
    machine and input, and logged once per machine, state and input every 10 s."""
    loop = asyncio.get_running_loop()
    endpoint = SipEndpoint(EndpointConfig("127.0.0.1", 5060))
    seen: list[object] = []
    transport = SipTransport(endpoint, seen.append)
    labels = {"machine": "non_invite_server", "input": "timer_G"}
    before = sample("gateway_sip_unexpected_inputs_total", labels)
    try:
        with structlog.testing.capture_logs() as logs:
            for n in range(3):
                options = (
                    f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKgap{n}\r\n"
                    f"From: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: gap{n}\r\n"
                    f"CSeq: 1 OPTIONS\r\n\r\n"
                )
                transport._received(options.encode(), Address("udp", "127.0.0.1", 5070))
                (tx,) = endpoint._core.server_tx.values()
                tx._timers["G"] = loop.time()  # INVITE server transactions only
                transport._on_timer()
                assert endpoint.transaction_count == 0
        assert sample("gateway_sip_unexpected_inputs_total", labels) - before == 3
        lines = [e for e in logs if e["event"] == "sip_unexpected_input"]
        assert [(e["machine"], e["state"], e["input"]) for e in lines] == [
            ("non_invite_server", "completed", "timer_G")
        ]
        assert sum(type(e).__name__ == "UnexpectedInput" for e in seen) == 3
    finally:
        await transport.aclose()
