"""RTP micro-benchmarks: µs per packet parse/build, per jitter push+pop, per 20 ms tick of N calls,
per media clock sub-tick, and SRTP protect/unprotect per packet (issue 16).

Prints figures; does not pass or fail. Run: .venv/bin/python benchmarks/bench_rtp.py
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable

from gateway.media.clock import MediaClock, Outbox
from gateway.rtp.jitter import JitterBuffer
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket, parse_header
from gateway.rtp.session import RtpSession
from gateway.rtp.srtp import SUITES, CryptoAttribute, SrtpContext

PAYLOAD = bytes(range(160))


def per_call_us(fn: Callable[[], object], number: int = 50_000, repeat: int = 5) -> float:
    """Median over `repeat` runs of the mean µs per call."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def bench_packets() -> None:
    datagram = RtpHeaderWriter(1).build(0, False, 1, 160, PAYLOAD)
    packet = RtpPacket.parse(datagram)
    writer = RtpHeaderWriter(1)
    print(f"RtpPacket.parse            {per_call_us(lambda: RtpPacket.parse(datagram)):6.2f} µs")
    print(f"parse_header (fast path)   {per_call_us(lambda: parse_header(datagram)):6.2f} µs")
    print(f"RtpPacket.serialize        {per_call_us(packet.serialize):6.2f} µs")
    build = per_call_us(lambda: writer.build(0, False, 1, 160, PAYLOAD))
    print(f"RtpHeaderWriter.build      {build:6.2f} µs")


def bench_jitter() -> None:
    jb = JitterBuffer("pcmu", 20)
    state = [0]

    def push_pop() -> None:
        i = state[0]
        state[0] = i + 1
        jb.push(i & 0xFFFF, (160 * i) & 0xFFFFFFFF, PAYLOAD, 0.02 * i)
        jb.pop(0.02 * i + 0.01)

    print(f"JitterBuffer push+pop      {per_call_us(push_pop):6.2f} µs")


def bench_session() -> None:
    a = RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=1)
    b = RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=2)
    addr = ("127.0.0.1", 9)
    clock = [0.0]

    def packetize() -> None:
        clock[0] += 0.02
        a.packetize(PAYLOAD, clock[0])

    print(f"RtpSession.packetize       {per_call_us(packetize):6.2f} µs")
    datagrams = [a.packetize(PAYLOAD, 0.02 * k) or b"" for k in range(300_000)]
    state = [0]

    def receive_and_read() -> None:
        k = state[0]
        state[0] = k + 1
        b.receive_datagram(datagrams[k], addr, 0.02 * k)
        b.read_frame(0.02 * k + 0.01)

    print(f"receive_datagram+read_frame{per_call_us(receive_and_read, 50_000):6.2f} µs")


def bench_srtp() -> None:
    """SRTP protect and unprotect of one 20 ms G.711 packet (172 octets), per suite, and the
    session's send and receive paths with SRTP on (to set against the plain figures above)."""
    datagram = RtpHeaderWriter(1).build(0, False, 1, 160, PAYLOAD)
    for suite in SUITES:
        p_us, u_us = _srtp_suite(suite, datagram)
        print(f"SRTP {suite:24s} protect {p_us:5.2f} µs  unprotect {u_us:5.2f} µs")
    a = RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=1)
    b = RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=2)
    key_a = CryptoAttribute.generate(1, "AES_CM_128_HMAC_SHA1_80")
    key_b = CryptoAttribute.generate(1, "AES_CM_128_HMAC_SHA1_80")
    a.set_srtp(key_a, key_b)
    b.set_srtp(key_b, key_a)
    clock = [0.0]

    def packetize() -> None:
        clock[0] += 0.02
        a.packetize(PAYLOAD, clock[0])

    print(f"RtpSession.packetize, SRTP {per_call_us(packetize):6.2f} µs")
    datagrams = [a.packetize(PAYLOAD, 0.02 * k) or b"" for k in range(300_000)]
    state = [0]
    addr = ("127.0.0.1", 9)

    def receive_and_read() -> None:
        k = state[0]
        state[0] = k + 1
        b.receive_datagram(datagrams[k], addr, 0.02 * k)
        b.read_frame(0.02 * k + 0.01)

    print(f"receive+read_frame, SRTP   {per_call_us(receive_and_read, 50_000):6.2f} µs")


def _srtp_suite(suite: str, datagram: bytes, n: int = 50_000) -> tuple[float, float]:
    ours, theirs = CryptoAttribute.generate(1, suite), CryptoAttribute.generate(1, suite)
    sender, receiver = SrtpContext(ours, theirs), SrtpContext(theirs, ours)
    seq = [0]

    def protect() -> bytes:
        seq[0] = (seq[0] + 1) & 0xFFFF  # a new index each time (libsrtp refuses a repeat)
        return sender.protect(datagram[:2] + seq[0].to_bytes(2, "big") + datagram[4:])

    protected = [protect() for _ in range(n * 5)]
    state = [0]

    def unprotect() -> object:
        k = state[0]
        state[0] = k + 1
        return receiver.unprotect(protected[k])

    return per_call_us(protect, n), per_call_us(unprotect, n)


def bench_tick(calls: int) -> None:
    """One media-clock tick over `calls` sessions: read_frame + packetize + sendto each."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    dest = sink.getsockname()
    senders = [RtpSession(now=0.0, remote_addr=dest, ssrc=k) for k in range(calls)]
    receivers = [RtpSession(now=0.0, remote_addr=dest, ssrc=10_000 + k) for k in range(calls)]
    src = ("127.0.0.1", 7)
    for k, (s, r) in enumerate(zip(senders, receivers, strict=True)):
        for i in range(3):
            r.receive_datagram(s.packetize(PAYLOAD, 0.02 * i) or b"", src, 0.02 * i + 0.001 * k)
    ticks = 200
    times = []
    now = 0.06
    for _ in range(ticks):
        # inbound traffic for this tick (not timed): one packet per call
        inbound = [s.packetize(PAYLOAD, now) or b"" for s in senders]
        for r, d in zip(receivers, inbound, strict=True):
            r.receive_datagram(d, src, now)
        start = time.perf_counter()
        for r in receivers:
            frame = r.read_frame(now)
            datagram = r.packetize(frame, now)
            if datagram is not None:
                out.sendto(datagram, dest)
        times.append(time.perf_counter() - start)
        while True:
            try:
                sink.recv(2048)
            except BlockingIOError:
                break
        now += 0.02
    tick = statistics.median(times) * 1e6
    print(
        f"tick of {calls:4d} calls: {tick:8.0f} µs ({tick / calls:5.2f} µs/call incl. sendto;"
        f" {tick / 20_000 * 100:5.1f}% of a 20 ms period)"
    )
    sink.close()
    out.close()


def bench_receive_tick(calls: int) -> None:
    """Inbound share of a tick: receive_datagram for N calls (what datagram_received costs)."""
    senders = [RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=k) for k in range(calls)]
    receivers = [
        RtpSession(now=0.0, remote_addr=("127.0.0.1", 9), ssrc=10_000 + k) for k in range(calls)
    ]
    src = ("127.0.0.1", 7)
    times = []
    now = 0.0
    for _ in range(200):
        inbound = [s.packetize(PAYLOAD, now) or b"" for s in senders]
        start = time.perf_counter()
        for r, d in zip(receivers, inbound, strict=True):
            r.receive_datagram(d, src, now)
        times.append(time.perf_counter() - start)
        for r in receivers:
            r.read_frame(now + 0.01)
        now += 0.02
    t = statistics.median(times) * 1e6
    print(f"receive of {calls:4d} calls: {t:8.0f} µs ({t / calls:5.2f} µs/packet)")


class _Handle:
    def cancel(self) -> None:
        pass


class _StubLoop:
    """The event loop as the media clock sees it: its clock jumps to each timer as it is armed,
    so every sub-tick runs on time and nothing else runs between them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handle = _Handle()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        self.now = when
        return self.handle


class _IdleLeg:
    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        pass


def bench_clock() -> None:
    """The clock's own cost per sub-tick (grid, slot, re-arm): one idle leg per slot."""
    loop = _StubLoop()
    clock = MediaClock(loop, period_ms=20, slots=4)  # type: ignore[arg-type]
    for _ in range(4):
        clock.add(_IdleLeg())
    run = clock._run
    print(f"MediaClock sub-tick        {per_call_us(run, 200_000):6.2f} µs")


def main() -> None:
    bench_packets()
    bench_jitter()
    bench_session()
    bench_srtp()
    bench_clock()
    for calls in (100, 500, 1000):
        bench_tick(calls)
    for calls in (100, 500, 1000):
        bench_receive_tick(calls)


if __name__ == "__main__":
    main()
