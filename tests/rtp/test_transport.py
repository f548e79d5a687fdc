"""RtpEndpoint over real loopback UDP sockets: exchange, RTCP, busy ports, release on close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import structlog

from gateway import metrics
from gateway.errors import PortsExhausted
from gateway.rtp.dtmf import DtmfDigitReceived
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket
from gateway.rtp.ports import PortPool
from gateway.rtp.rtcp import RtcpBye, parse_compound
from gateway.rtp.session import MediaStarted, RemoteLatched, RtpSession
from gateway.rtp.transport import RtpEndpoint


def free_even_range(pairs: int) -> tuple[int, int]:
    """A port range the OS just had free (bind port 0, round to even)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1] & ~1
        if base + 2 * pairs < 65535:
            return base, base + 2 * pairs - 1
    raise AssertionError("no port range")


def udp_peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
    async with asyncio.timeout(timeout):
        while True:
            try:
                data, addr = sock.recvfrom(2048)
                return data, addr
            except BlockingIOError:
                await asyncio.sleep(0.002)


async def open_endpoint(pool: PortPool, session: RtpSession, seen: list[object]) -> RtpEndpoint:
    return await RtpEndpoint.open(pool, "127.0.0.1", session, on_event=seen.append)


async def test_exchange_with_a_plain_udp_socket_and_close_frees_ports() -> None:
    lo, hi = free_even_range(4)
    pool = PortPool(lo, hi)
    peer = udp_peer()
    peer_addr = peer.getsockname()
    loop = asyncio.get_running_loop()
    seen: list[object] = []
    arrived = asyncio.Event()

    def on_event(event: object) -> None:
        seen.append(event)
        arrived.set()

    session = RtpSession(now=loop.time(), remote_addr=peer_addr, ssrc=99)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session, on_event=on_event)
    try:
        assert endpoint.port % 2 == 0 and pool.in_use == 1
        assert endpoint.local_addr == ("127.0.0.1", endpoint.port)
        # we send to the SDP address first
        endpoint.send_frame(b"\x11" * 160, loop.time())
        data, src = await recv(peer)
        assert src == ("127.0.0.1", endpoint.port)
        packet = RtpPacket.parse(data)
        assert packet.ssrc == 99 and packet.payload == b"\x11" * 160 and packet.marker
        # the peer talks from another port of its IP (as if behind NAT): we learn it after
        # PROBATION_PACKETS packets in sequence
        nat = udp_peer()
        writer = RtpHeaderWriter(1234)
        for k in range(4):
            nat.sendto(
                writer.build(0, k == 0, k, 160 * k, bytes([k + 1]) * 160),
                ("127.0.0.1", endpoint.port),
            )
        nat.sendto(
            writer.build(101, True, 4, 640, b"\x04\x8a\x03\x20"), ("127.0.0.1", endpoint.port)
        )
        async with asyncio.timeout(2):
            while not any(isinstance(e, DtmfDigitReceived) for e in seen):
                arrived.clear()
                await arrived.wait()
        assert session.remote_addr == nat.getsockname()
        endpoint.send_frame(None, loop.time())
        data, _ = await recv(nat)
        assert RtpPacket.parse(data).payload == session.silence_payload
        frames = [session.read_frame(loop.time()) for _ in range(4)]
        assert bytes([3]) * 160 in frames and bytes([4]) * 160 in frames
        assert bytes([1]) * 160 not in frames and session.stats.dropped["probation"] == 2
        assert RemoteLatched(nat.getsockname()) in seen and MediaStarted() in seen
        assert DtmfDigitReceived("4", 100) in seen
        nat.close()
    finally:
        await endpoint.aclose()
        await endpoint.aclose()  # safe twice
    assert pool.in_use == 0 and pool.double_releases == 0
    again = await open_endpoint(pool, RtpSession(now=loop.time(), remote_addr=peer_addr), [])
    await again.aclose()
    peer.close()


async def test_busy_port_pair_is_skipped() -> None:
    """A busy pair is skipped on both loops (uvloop wraps the bind error: errno on __cause__)."""
    lo, hi = free_even_range(3)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", lo + 1))  # the first pair's RTCP port is taken
    except OSError:
        blocker.close()
        pytest.fail("could not prepare a busy port")
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    try:
        endpoint = await open_endpoint(pool, RtpSession(now=loop.time()), [])
        assert endpoint.port == lo + 2 and pool.in_use == 1
        await endpoint.aclose()
        assert pool.in_use == 0
    finally:
        blocker.close()


async def test_all_busy_raises_and_leaks_nothing() -> None:
    lo, hi = free_even_range(1)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", lo))
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(PortsExhausted):
            await open_endpoint(pool, RtpSession(now=loop.time()), [])
        assert pool.in_use == 0
    finally:
        blocker.close()


async def test_rtcp_goes_to_port_plus_one_and_bye_on_close() -> None:
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    rtp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _attempt in range(20):
        rtp_peer.bind(("127.0.0.1", 0))
        port = rtp_peer.getsockname()[1]
        try:
            rtcp_peer.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            rtp_peer.close()
            rtp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        pytest.fail("no adjacent peer ports after 20 tries")
    rtcp_peer.setblocking(False)
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=("127.0.0.1", port), rtcp_interval=0.2)
    before = metrics.RTP_PACKETS.labels(direction="out")._value.get()
    endpoint = await open_endpoint(pool, session, [])
    try:
        for _ in range(5):
            endpoint.send_frame(None, loop.time())
        data, src = await recv(rtcp_peer)
        assert src == ("127.0.0.1", endpoint.rtcp_port)
        assert parse_compound(data)[0].ssrc == session.ssrc  # type: ignore[union-attr]
    finally:
        await endpoint.aclose()
    assert metrics.RTP_PACKETS.labels(direction="out")._value.get() - before == 5
    while True:
        data, _ = await recv(rtcp_peer)
        if isinstance(parse_compound(data)[-1], RtcpBye):
            break
    rtp_peer.close()
    rtcp_peer.close()


def udp6_peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.setblocking(False)
    return sock


async def ipv6_scenario(polled: bool) -> None:
    """Over IPv6 loopback, read by the loop or polled: addresses reach the session as
    (host, port) pairs (the socket reports 4-tuples); latching and relatching work."""
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    seen: list[object] = []
    session = RtpSession(now=loop.time(), remote_addr=("::1", 9), ssrc=7, relatch_after=0.2)
    endpoint = await RtpEndpoint.open(pool, "::1", session, on_event=seen.append)
    if polled:
        endpoint.start_polling()

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(2):
            while not done():
                if polled:
                    endpoint.poll(loop.time())
                await asyncio.sleep(0.005)

    try:
        peer = udp6_peer()
        writer = RtpHeaderWriter(4321)
        for k in range(4):  # learned at the third (PROBATION_PACKETS)
            peer.sendto(writer.build(0, k == 0, k, 160 * k, bytes([k + 1]) * 160),
                        ("::1", endpoint.port))  # fmt: skip
        await until(lambda: session.stats.packets_in >= 4)
        assert session.latched == peer.getsockname()[:2] and type(session.latched) is tuple
        assert seen == [RemoteLatched(("::1", peer.getsockname()[1])), MediaStarted()]
        frames = [session.read_frame(loop.time()) for _ in range(4)]
        assert bytes([3]) * 160 in frames and bytes([4]) * 160 in frames
        other = udp6_peer()
        other_addr = other.getsockname()[:2]
        other.sendto(writer.build(0, False, 4, 640, b"\x04" * 160), ("::1", endpoint.port))
        await until(lambda: session.stats.dropped["competing_source"] > 0)
        assert session.stats.dropped["competing_source"] == 1
        await asyncio.sleep(0.25)  # past relatch_after: a source in sequence from there relatches
        for k in range(5, 8):
            other.sendto(writer.build(0, False, k, 160 * k, b"\x05" * 160), ("::1", endpoint.port))
        await until(lambda: session.latched == other_addr)
        assert seen[-1] == RemoteLatched(other_addr)
        assert endpoint.rtcp_port is not None
        other.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("::1", endpoint.rtcp_port))
        async with asyncio.timeout(2):  # RTCP on its own port: always the loop's
            while session.stats.rtcp_in < 1:
                await asyncio.sleep(0.005)
        assert session.remote_rtcp_addr == other_addr
        peer.close()
        other.close()
    finally:
        await endpoint.aclose()
    assert pool.in_use == 0


@pytest.mark.parametrize("polled", [False, True], ids=["loop_reads", "polled"])
async def test_ipv6_addresses_reach_the_session_as_pairs(polled: bool) -> None:
    await ipv6_scenario(polled)


def _sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_export_adds_only_the_increments_since_the_last_export() -> None:
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    peer = udp_peer()
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=peer.getsockname(), ssrc=7)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session)
    before_in = _sample("gateway_rtp_packets_total", direction="in")
    before_short = _sample("gateway_rtp_dropped_total", reason="short")
    try:
        writer = RtpHeaderWriter(1234)
        target = ("127.0.0.1", endpoint.port)
        peer.sendto(writer.build(0, False, 1, 160, b"\xff" * 160), target)
        peer.sendto(b"\x80\x00", target)  # 2 bytes: dropped as "short"
        async with asyncio.timeout(2):
            while session.stats.packets_in < 2:
                await asyncio.sleep(0.005)
        endpoint.export_metrics()
        endpoint.export_metrics()  # nothing new: adds nothing
        assert _sample("gateway_rtp_packets_total", direction="in") - before_in == 2
        assert _sample("gateway_rtp_dropped_total", reason="short") - before_short == 1
    finally:
        await endpoint.aclose()
        peer.close()


async def test_refused_sources_are_counted_and_logged_once_per_export() -> None:
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    phone = udp_peer()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))  # another loopback address: not the SDP's, not signalling's
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=phone.getsockname(), ssrc=7)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session)
    before = _sample("gateway_rtp_dropped_total", reason="wrong_source")
    try:
        writer = RtpHeaderWriter(666)
        for k in range(5):
            stranger.sendto(writer.build(0, False, k, 160 * k, b"\x10" * 160),
                            ("127.0.0.1", endpoint.port))  # fmt: skip
        stranger.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("127.0.0.1", endpoint.rtcp_port))
        async with asyncio.timeout(2):
            while session.stats.packets_in + session.stats.rtcp_in < 6:
                await asyncio.sleep(0.005)
        with structlog.testing.capture_logs() as logs:
            endpoint.export_metrics()
            endpoint.export_metrics()  # nothing new: no second line
        [line] = [entry for entry in logs if entry["event"] == "rtp_source_refused"]
        assert line["wrong_source"] == 5 and line["rtcp_wrong_source"] == 1
        assert line["last_refused"] == f"127.0.0.3:{stranger.getsockname()[1]}"
        assert line["source"] is None and line["log_level"] == "warning"
        assert _sample("gateway_rtp_dropped_total", reason="wrong_source") - before == 5
        assert session.latched is None and session.remote_addr == phone.getsockname()
    finally:
        await endpoint.aclose()
        phone.close()
        stranger.close()


async def test_an_sdp_address_the_socket_cannot_send_to_stops_neither_the_call_nor_its_timer() -> (
    None
):
    """The SDP named an IPv6 address (or a name, which sendto would resolve, blocking the loop)
    but RTP is bound on IPv4: packets are dropped, `rtp_send_failed` is logged once on either
    loop, and the endpoint's one timer (RTCP, the media timeout) keeps running."""
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=("::1", 40000), rtcp_interval=0.2)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session)
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                endpoint.send_frame(None, loop.time())  # never raises
            await asyncio.sleep(0.9)
        assert session.stats.rtcp_out >= 3, session.stats  # a report every interval, still
        failed = [e for e in logs if e["event"] == "rtp_send_failed"]
        assert len(failed) == 1 and failed[0]["remote"] == "::1", failed
        assert endpoint._sendable(("localhost", 40000)) is False  # a name: not resolved
    finally:
        await endpoint.aclose()
    assert pool.in_use == 0
