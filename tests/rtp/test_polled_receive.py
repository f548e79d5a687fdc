"""The RTP socket read in the media clock's tick (`RtpEndpoint.poll`, issue 20) against the loop's
reader, over real loopback UDP: the same traffic gives the same session; a flood on one port is
bounded per tick; a leg leaving the clock hands its socket back to the loop; every exit path
closes the socket and frees the port."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable

import numpy as np
import structlog

from gateway.legs.sip.leg import SipLeg
from gateway.media.clock import MediaClock
from gateway.media.port import LegEvent
from gateway.rtp.dtmf import DtmfDigitReceived
from gateway.rtp.ports import PortPool
from gateway.rtp.session import RtpSession
from gateway.rtp.transport import POLL_LIMIT, RtpEndpoint
from tests.support.harness import free_udp_block


def free_even_range(pairs: int) -> tuple[int, int]:
    """RTP/RTCP pairs from this xdist worker's port slice."""
    lo = free_udp_block(2 * pairs)
    return lo, lo + 2 * pairs - 1


def udp_peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def until(done: Callable[[], bool], poll: Callable[[], object] = lambda: None) -> None:
    async with asyncio.timeout(3):
        while not done():
            poll()
            await asyncio.sleep(0.005)


def tone(k: int) -> bytes:
    """Frame `k` of a 440 Hz tone in µ-law-ish bytes (content, not counts, is compared)."""
    t = (np.arange(160) + 160 * k) / 8000
    return bytes((128 + 100 * np.sin(2 * math.pi * 440 * t)).astype(np.uint8))


async def test_polled_and_loop_reads_give_the_same_session() -> None:
    """One peer sends the same stream (speech, an RFC 4733 digit, rtcp-mux RTCP, a stranger's
    packets) to an endpoint the loop reads and to one polled every 20 ms: same events, counters
    and played audio."""
    lo, hi = free_even_range(4)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    peer, stranger = udp_peer(), udp_peer()
    sender = RtpSession(now=loop.time(), remote_addr=("127.0.0.1", 9), ssrc=5, rtcp_interval=0.3)
    events: dict[str, list[object]] = {"loop": [], "polled": []}
    sessions = {
        name: RtpSession(now=loop.time(), remote_addr=peer.getsockname(), ssrc=i + 1)
        for i, name in enumerate(events)
    }
    endpoints = {
        name: await RtpEndpoint.open(
            pool, "127.0.0.1", sessions[name], on_event=events[name].append, rtcp_mux=True
        )
        for name in events
    }
    polled = endpoints["polled"]
    polled.start_polling()
    played: dict[str, list[bytes | None]] = {"loop": [], "polled": []}
    try:
        for k in range(60):
            now = loop.time()
            if k == 20:
                sender.start_dtmf("7", 100)
            datagram = sender.packetize(tone(k), now)
            sender.handle_timer(now)
            out = [datagram] + [d for d, _ in sender.rtcp_datagrams_to_send()]
            for endpoint in endpoints.values():
                for data in out:
                    if data is not None:
                        peer.sendto(data, ("127.0.0.1", endpoint.port))
                if k % 15 == 7:  # someone else's packet: refused on both
                    stranger.sendto(datagram or b"", ("127.0.0.1", endpoint.port))
            await asyncio.sleep(0.02)
            now = loop.time()
            polled.poll(now)
            for name, session in sessions.items():
                played[name].append(session.read_frame(now))
        await asyncio.sleep(0.05)
        polled.poll(loop.time())
        a, b = sessions["loop"].stats, sessions["polled"].stats
        assert a.packets_in >= 50 and a.rtcp_in >= 2, a
        assert (a.packets_in, a.lost, a.rtcp_in, a.dropped) == (
            b.packets_in,
            b.lost,
            b.rtcp_in,
            b.dropped,
        )
        assert sum(a.dropped.values()) >= 3  # the stranger's
        assert abs(a.jitter_seconds - b.jitter_seconds) < 0.002  # both on kernel arrival times
        assert events["loop"] == events["polled"]
        assert any(isinstance(e, DtmfDigitReceived) and e.digit == "7" for e in events["loop"])
        assert played["loop"] == played["polled"]
        assert tone(40) in played["polled"]  # the audio itself came through
    finally:
        for endpoint in endpoints.values():
            await endpoint.aclose()
        peer.close()
        stranger.close()
    assert pool.in_use == 0


async def test_a_poll_hands_the_session_kernel_arrival_times() -> None:
    """Two datagrams sent 50 ms apart and read by one poll keep their 50 ms: the session gets
    the kernel's arrival times (SO_TIMESTAMPNS), not the tick's. The CN test's defect: Python
    3.11 has no `socket.SO_TIMESTAMPNS`, every packet got its tick's time, and a caller sending
    at our tick boundary read as 0/40 ms arrivals, 10-15 ms of A.8 jitter, a grown buffer."""
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    peer = udp_peer()
    session = RtpSession(now=loop.time(), remote_addr=peer.getsockname())
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session, rtcp_mux=True)
    arrivals: list[float] = []
    receive = session.receive_datagram

    def spy(data: bytes, addr: tuple[str, int], now: float) -> None:
        arrivals.append(now)
        receive(data, addr, now)

    session.receive_datagram = spy  # type: ignore[method-assign]
    try:
        assert endpoint.stamped, "the kernel gives no SO_TIMESTAMPNS arrival times here"
        endpoint.start_polling()
        assert endpoint.polling
        sender = RtpSession(now=loop.time(), remote_addr=("127.0.0.1", endpoint.port), ssrc=9)
        peer.sendto(sender.packetize(tone(0), loop.time()) or b"", ("127.0.0.1", endpoint.port))
        sent_first = loop.time()
        await asyncio.sleep(0.05)
        peer.sendto(sender.packetize(tone(1), loop.time()) or b"", ("127.0.0.1", endpoint.port))
        await asyncio.sleep(0.03)
        now = loop.time()
        assert endpoint.poll(now) == 2
        first, second = arrivals
        assert sent_first - 0.005 <= first <= sent_first + 0.005, (first, sent_first)
        assert 0.045 <= second - first <= 0.07, arrivals
        assert now - second >= 0.025  # it waited in the socket; the session knows since when
    finally:
        await endpoint.aclose()
        peer.close()
    assert pool.in_use == 0


async def test_a_flood_on_one_port_is_read_at_most_poll_limit_per_tick() -> None:
    """500 datagrams waiting on one call's port: its poll reads POLL_LIMIT and leaves the rest
    for the next tick (the other call's packet is read in the same tick), and the backlog is
    logged once per export."""
    lo, hi = free_even_range(4)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    flooder, caller = udp_peer(), udp_peer()
    flooded = await RtpEndpoint.open(
        pool, "127.0.0.1", RtpSession(now=loop.time(), remote_addr=flooder.getsockname())
    )
    quiet_session = RtpSession(now=loop.time(), remote_addr=caller.getsockname())
    quiet = await RtpEndpoint.open(pool, "127.0.0.1", quiet_session)
    try:
        flooded.start_polling()
        quiet.start_polling()
        for i in range(100):
            flooder.sendto(bytes([0x80, 0, 0, i]) + bytes(168), ("127.0.0.1", flooded.port))
        sender = RtpSession(now=loop.time(), remote_addr=("127.0.0.1", 9), ssrc=3)
        caller.sendto(sender.packetize(tone(0), loop.time()) or b"", ("127.0.0.1", quiet.port))
        await asyncio.sleep(0.05)
        reads = [flooded.poll(loop.time()), quiet.poll(loop.time())]
        assert reads == [POLL_LIMIT, 1]
        assert quiet_session.stats.packets_in + sum(quiet_session.stats.dropped.values()) == 1
        rest = [flooded.poll(loop.time()) for _ in range(4)]
        assert rest == [POLL_LIMIT, POLL_LIMIT, 100 - 3 * POLL_LIMIT, 0]  # nothing lost
        assert flooded.poll_backlogs == 3
        with structlog.testing.capture_logs() as logs:
            flooded.export_metrics()
            flooded.export_metrics()
        backlog = [e for e in logs if e["event"] == "rtp_poll_backlog"]
        assert len(backlog) == 1 and backlog[0]["ticks"] == 3
    finally:
        await flooded.aclose()
        await quiet.aclose()
        flooder.close()
        caller.close()
    assert pool.in_use == 0


class Control:
    def hangup(self, handle: int) -> None:
        pass

    def refer(self, handle: int, target_uri: str) -> None:
        pass


class Sink:
    """The bridge's side of a leg: records what it is given; `fail` makes delivery raise."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.fail = False

    def deliver(self, frame: bytes, now: float) -> None:
        if self.fail:
            raise RuntimeError("a bug in the bridge")
        self.frames.append(frame)

    def pull(self, now: float) -> bytes | None:
        return None

    def leg_event(self, event: LegEvent) -> None:
        pass


async def test_a_leg_on_the_clock_polls_and_hands_the_socket_back_on_every_exit() -> None:
    """A SIP leg's tick reads its socket (the loop does not); a tick that raises, and the leg's
    close, hand it back to the loop, so no packet is stranded; the port is freed."""
    lo, hi = free_even_range(4)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 20, slots=1)
    peer = udp_peer()
    sender = RtpSession(now=loop.time(), remote_addr=("127.0.0.1", 9), ssrc=8)
    session = RtpSession(now=loop.time(), remote_addr=peer.getsockname())
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session)
    sock = endpoint._rtp
    leg = SipLeg(1, endpoint, Control(), lambda _ms: clock)
    sink = Sink()
    k = 0

    async def send(n: int) -> None:  # paced as a phone sends
        nonlocal k
        for _ in range(n):
            datagram = sender.packetize(tone(k), loop.time())
            assert datagram is not None
            peer.sendto(datagram, ("127.0.0.1", endpoint.port))
            k += 1
            await asyncio.sleep(0.02)

    try:
        assert not endpoint.polling  # before media: the loop reads
        await send(3)
        await until(lambda: session.stats.packets_in == 3)
        leg.attach(sink)
        assert endpoint.polling and len(clock) == 1
        await send(20)
        await until(lambda: tone(12) in sink.frames)  # read by the tick and delivered
        sink.fail = True  # the tick raises: the clock drops the leg, the loop reads again
        await until(lambda: len(clock) == 0)
        assert not endpoint.polling
        await send(5)
        await until(lambda: session.stats.packets_in == 28)
    finally:
        await leg.aclose()
        peer.close()
    assert pool.in_use == 0 and sock.fileno() == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", endpoint.port))  # the port is free


async def test_closing_a_polled_leg_frees_its_port() -> None:
    lo, hi = free_even_range(2)
    pool = PortPool(lo, hi)
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 20, slots=1)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", RtpSession(now=loop.time()))
    sock = endpoint._rtp
    leg = SipLeg(1, endpoint, Control(), lambda _ms: clock)
    leg.attach(Sink())
    assert endpoint.polling
    await clock.next_tick()
    await leg.aclose()
    await leg.aclose()  # safe twice
    assert pool.in_use == 0 and sock.fileno() == -1 and len(clock) == 0
    assert endpoint.poll(loop.time()) == 0  # a late tick reads nothing from a closed endpoint
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", endpoint.port))
