"""The per-packet fast paths (session receive/packetize, jitter push/pop) against the general
paths they shortcut: the same inputs must give the same frames, datagrams, counters and state.

`GeneralSession` is an `RtpSession` with every fast path bypassed: its receive, packetize and
read go to the general methods, and its jitter buffer's `push` is the general composition of
RFC 3550 A.1 (`ReceptionStats.update`), A.8 (`update_jitter`) and `push_payload`.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import pytest

from gateway.rtp.jitter import JitterBuffer, PushResult, ReceptionStats
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket
from gateway.rtp.session import PROBATION_PACKETS, Address, RtpSession

SRC: Address = ("198.51.100.1", 20000)
OTHER: Address = ("198.51.100.66", 20002)
NAT: Address = ("198.51.100.1", 31000)  # SRC's IP, another port
REMOTE_SSRC = 0x1234ABCD


def general_push(jb: JitterBuffer, seq: int, timestamp: int, payload: bytes, now: float) -> int:
    """`JitterBuffer.push` without its fast path: the general steps in their order."""
    reception = jb.reception
    verdict = reception.update(seq)
    if verdict == ReceptionStats.DUPLICATE:
        jb.stats.duplicates += 1
        return PushResult.DUPLICATE
    if verdict == ReceptionStats.BAD_SEQUENCE:
        return PushResult.BAD_SEQUENCE
    reception.update_jitter(now, timestamp)
    if jb.target < jb.max_delay and jb.frame + 2 * reception.jitter > jb.target + jb.frame // 2:
        jb._grow()
    in_order = reception.extended(seq) == reception.extended_max
    return jb.push_payload(timestamp, payload, now, in_order)


class GeneralJitterBuffer(JitterBuffer):
    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> int:
        return general_push(self, seq, timestamp, payload, now)

    def pop(self, now: float) -> bytes | None:
        return self._pop_general(now)


class CountingJitterBuffer(JitterBuffer):
    """The real buffer, counting how often the general paths ran (to prove the fast ones did)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pushes = self.general_pushes = self.pops = self.general_pops = 0

    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> int:
        self.pushes += 1
        return super().push(seq, timestamp, payload, now)

    def push_payload(
        self, timestamp: int, payload: bytes, now: float, in_order: bool | None = None
    ) -> int:
        self.general_pushes += 1
        return super().push_payload(timestamp, payload, now, in_order)

    def pop(self, now: float) -> bytes | None:
        self.pops += 1
        return super().pop(now)

    def _pop_general(self, now: float) -> bytes | None:
        self.general_pops += 1
        return super()._pop_general(now)


class GeneralSession(RtpSession):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jitter = GeneralJitterBuffer(self.codec, self.ptime_ms, clock_rate=8000)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._receive_general(data, addr, now)

    def packetize(self, payload: bytes | None, now: float) -> bytes | None:
        return self._packetize_general(payload, now)


class CountingSession(RtpSession):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jitter = CountingJitterBuffer(self.codec, self.ptime_ms, clock_rate=8000)
        self.receives = self.general_receives = self.sends = self.general_sends = 0

    @property
    def jb(self) -> CountingJitterBuffer:
        assert isinstance(self._jitter, CountingJitterBuffer)
        return self._jitter

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.receives += 1
        super().receive_datagram(data, addr, now)

    def _receive_general(self, data: bytes, addr: Address, now: float) -> None:
        self.general_receives += 1
        super()._receive_general(data, addr, now)

    def packetize(self, payload: bytes | None, now: float) -> bytes | None:
        self.sends += 1
        return super().packetize(payload, now)

    def _packetize_general(self, payload: bytes | None, now: float) -> bytes | None:
        self.general_sends += 1
        return super()._packetize_general(payload, now)


def jitter_state(jb: JitterBuffer) -> dict[str, object]:
    state = {k: v for k, v in vars(jb).items() if not callable(v) and k != "reception"}
    state["stats"] = dataclasses.asdict(jb.stats)
    reception = jb.reception
    state["reception"] = {k: getattr(reception, k) for k in ReceptionStats.__slots__}
    for k in ("pushes", "general_pushes", "pops", "general_pops"):
        state.pop(k, None)
    return state


_SESSION_OBJECTS = ("_jitter", "_writer", "_rng", "_dtmf_rx", "_dtmf_tx", "_events", "_stats")
_COUNTERS = ("receives", "general_receives", "sends", "general_sends")


def session_state(s: RtpSession) -> dict[str, object]:
    skip = (*_SESSION_OBJECTS, "pending_events", *_COUNTERS)
    state = {k: v for k, v in vars(s).items() if k not in skip}
    state["_rng"] = s._rng.getstate()
    state["_events"] = list(s._events)
    state["_stats"] = dataclasses.asdict(s._stats)
    state["_dtmf_rx"] = dict(vars(s._dtmf_rx))
    state["_dtmf_tx"] = dict(vars(s._dtmf_tx))
    state["_jitter"] = jitter_state(s._jitter)
    return state


def check_invariants(s: RtpSession) -> None:
    """What the fast paths rely on."""
    assert s._media_flowing == (s._media_started and not s._timed_out)
    assert not (s._dtmf_idle and s._dtmf_tx.active)
    jb = s._jitter
    assert jb._mask.find(1, jb._ahead) == -1, "samples marked present beyond _ahead"


def make_pair(seed: int = 1, **kwargs: Any) -> tuple[CountingSession, GeneralSession]:
    args: dict[str, Any] = {"now": 0.0, "remote_addr": SRC, "ssrc": 0xA11CE, **kwargs}
    fast = CountingSession(rng=random.Random(seed), **args)
    general = GeneralSession(rng=random.Random(seed), **args)
    return fast, general


class Twin:
    """Drives a fast and a general session in lock step and compares them after every call."""

    def __init__(self, seed: int = 1, **kwargs: Any) -> None:
        self.fast, self.general = make_pair(seed, **kwargs)
        self.frames: list[bytes | None] = []

    def compare(self) -> None:
        assert session_state(self.fast) == session_state(self.general)
        assert dataclasses.asdict(self.fast.stats) == dataclasses.asdict(self.general.stats)
        check_invariants(self.fast)

    def receive(self, data: bytes, now: float, addr: Address = SRC) -> None:
        self.fast.receive_datagram(data, addr, now)
        self.general.receive_datagram(data, addr, now)
        self.compare()

    def read(self, now: float) -> bytes | None:
        got = self.fast.read_frame(now)
        assert got == self.general.read_frame(now)
        assert got is None or type(got) is bytes
        self.frames.append(got)
        self.compare()
        return got

    def send(self, payload: bytes | None, now: float) -> bytes | None:
        out = self.fast.packetize(payload, now)
        assert out == self.general.packetize(payload, now)
        self.compare()
        return out

    def timers(self, now: float) -> None:
        for s in (self.fast, self.general):
            when = s.get_timer()
            if when is not None and when <= now:
                s.handle_timer(now)
        assert self.fast.rtcp_datagrams_to_send() == self.general.rtcp_datagrams_to_send()
        self.compare()


def rtp(
    seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = REMOTE_SSRC, **extra: Any
) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, **extra).serialize()


def frame_bytes(k: int, size: int = 160) -> bytes:
    """Frame k of a test stream: a ramp of its own, never silence, unlike any faded frame."""
    return bytes(0x80 | (k * 7 + j) % 120 for j in range(size))


# --- scripted scenarios, each a list of (kind, ...) steps run through Twin


def run_stream(
    twin: Twin,
    packets: list[tuple[float, bytes] | tuple[float, bytes, Address]],
    end: float,
    tick: float = 0.02,
) -> None:
    """Deliver packets at their arrival times; read and send one frame per tick."""
    queue = sorted(packets, key=lambda p: p[0])
    now = 0.0
    k = 0
    while now <= end:
        while queue and queue[0][0] <= now:
            item = queue.pop(0)
            twin.receive(item[1], item[0], item[2] if len(item) == 3 else SRC)
        twin.timers(now)
        twin.read(now + 0.001)
        twin.send(frame_bytes(k) if k % 7 else None, now)
        k += 1
        now = round(now + tick, 6)


def steady(
    first_seq: int, first_ts: int, count: int, *, start: float = 0.0, size: int = 160
) -> list[tuple[float, bytes]]:
    return [
        (start + 0.02 * i + 0.0005, rtp(first_seq + i, first_ts + size * i, frame_bytes(i, size)))
        for i in range(count)
    ]


def test_in_order_stream_takes_the_fast_paths_and_wraps_sequence_and_timestamp() -> None:
    twin = Twin()
    run_stream(twin, steady(65530, 0xFFFFFFFF - 800, 40), end=0.9)
    fast = twin.fast
    # all but the first packet (latching, media start) skipped the general receive path
    assert fast.receives == 40 and fast.general_receives == 1
    assert fast.jb.pushes == 40 and fast.jb.general_pushes == 1
    assert fast.general_sends == 0 and fast.sends > 40  # audio, and silence every 7th tick
    # every received frame was played by the fast pop; the general one did pre-roll and the end
    assert fast.stats.played_frames == 40 and fast.jb.general_pops == fast.jb.pops - 40
    reception = fast.jitter_buffer.reception
    assert reception.cycles == 65536 and reception.max_seq == (65530 + 39) & 0xFFFF
    assert reception.extended_max == 65530 + 39 and reception.lost == 0
    assert reception.received == 40
    played = [f for f in twin.frames if f is not None and f != fast.silence_payload]
    assert played[:40] == [frame_bytes(i) for i in range(40)]  # every frame, in order, intact


def test_interarrival_jitter_is_rfc3550_a8() -> None:
    twin = Twin()
    rng = random.Random(7)
    arrivals = [0.02 * i + rng.uniform(0, 0.004) for i in range(30)]
    packets = [(t, rtp(100 + i, 5000 + 160 * i, frame_bytes(i))) for i, t in enumerate(arrivals)]
    run_stream(twin, packets, end=0.7)
    expected = 0.0  # J += (|D(i-1,i)| - J) / 16, D in timestamp units (RFC 3550 §6.4.1, A.8)
    for i in range(1, 30):
        d = (arrivals[i] - arrivals[i - 1]) * 8000 - 160
        expected += (abs(d) - expected) / 16
    assert twin.fast.stats.jitter_seconds == pytest.approx(expected / 8000, rel=1e-9)
    assert twin.fast.jb.general_pushes == 1


def test_reordering_duplicates_and_loss() -> None:
    twin = Twin()
    packets = steady(1000, 0, 30)
    packets[5], packets[6] = (packets[6][0], packets[5][1]), (packets[5][0], packets[6][1])
    packets.append((packets[10][0] + 0.001, packets[10][1]))  # a duplicate
    packets.append((packets[12][0] + 0.03, packets[12][1]))  # a late duplicate
    del packets[20]  # a loss
    run_stream(twin, packets, end=0.8)
    stats = twin.fast.stats
    assert stats.duplicates == 2 and stats.lost == 1
    assert twin.fast.jb.general_pushes < 8


def test_timestamp_jumps_forward_and_back_resync() -> None:
    twin = Twin()
    packets = steady(10, 1000, 10)
    packets += steady(20, 900_000, 10, start=0.2)  # forward beyond the window
    packets += steady(30, 100, 10, start=0.4)  # back
    packets += steady(40, 100 + 1600 + 480, 10, start=0.6)  # a small gap forward
    run_stream(twin, packets, end=1.0)
    assert twin.fast.jitter_buffer.stats.resyncs >= 2


def test_ssrc_change_other_source_and_relatch() -> None:
    twin = Twin(relatch_after=0.3)
    packets: list[tuple[float, bytes] | tuple[float, bytes, Address]] = []
    packets += steady(500, 0, 10)
    packets.append((0.1003, rtp(9, 9, frame_bytes(9)), OTHER))  # dropped: wrong source
    packets.append((0.1005, rtp(9, 9, frame_bytes(9)), NAT))  # dropped: SRC is still sending
    for i in range(10):  # a new SSRC from the latched source: the stream restarts
        packets.append((0.2 + 0.02 * i + 0.0005, rtp(9000 + i, 77_000 + 160 * i, frame_bytes(i),
                                                     ssrc=0xBEEF)))  # fmt: skip
    for i in range(10):  # the latched source went quiet: a source from its IP is learned
        packets.append((0.8 + 0.02 * i + 0.001, rtp(300 + i, 160 * i, frame_bytes(i),
                                                    ssrc=0xC0DE), NAT))  # fmt: skip
    run_stream(twin, packets, end=1.2)
    stats = twin.fast.stats
    assert stats.dropped["wrong_source"] == 1 and stats.dropped["competing_source"] == 1
    assert stats.dropped["probation"] == PROBATION_PACKETS - 1 and stats.ssrc_changes == 2
    assert stats.relatches == 1 and twin.fast.latched == NAT


def test_rtcp_padding_csrc_extension_dtmf_cn_and_garbage_on_the_rtp_port() -> None:
    twin = Twin(cn_pt=13)
    forms: dict[int, dict[str, Any]] = {  # the same audio in other header forms: general path
        12: {"padding_size": 5},
        13: {"csrc": [1, 2]},
        14: {"extension_profile": 0xBEDE, "extension": b"\0" * 4},
    }
    packets: list[tuple[float, bytes] | tuple[float, bytes, Address]] = []
    seq = 200
    for i in range(40):
        t = 0.02 * i + 0.0005
        packets.append((t, rtp(seq, 160 * i, frame_bytes(i), **forms.get(i, {}))))
        seq += 1
        if i == 19:  # a telephone-event takes a sequence number of its own (RFC 4733)
            packets.append((t + 0.001, rtp(seq, 160 * i, b"\x05\x8a\x03\x20", pt=101)))
            seq += 1
        if i == 29:  # so does comfort noise (RFC 3389)
            packets.append((t + 0.001, rtp(seq, 160 * i + 160, b"\x40", pt=13)))
            seq += 1
    packets.append((0.0505, struct.pack("!BBHI", 0x80, 201, 1, REMOTE_SSRC)))  # RTCP (RFC 5761)
    packets.append((0.0506, b"\x80"))  # short
    packets.append((0.0507, b"\x40" * 20))  # version 1
    run_stream(twin, packets, end=1.0)
    stats = twin.fast.stats
    assert stats.rtcp_in == 1 and stats.dropped["short"] == 1 and stats.dropped["version"] == 1
    assert stats.dtmf_received == 1 and stats.lost == 0
    played = [f for f in twin.frames if f is not None and f != twin.fast.silence_payload]
    assert played[:40] == [frame_bytes(i) for i in range(40)] and stats.played_frames == 40


def test_talk_spurt_after_the_buffer_ran_dry_is_realigned() -> None:
    twin = Twin()
    packets = steady(40, 0, 10)
    # the sender pauses 100 ms and resumes with its timestamp 200 ms on: with nothing buffered,
    # the first packet would play 100 ms late, so playout re-aligns to it
    packets += [(0.3 + 0.02 * i + 0.0005, rtp(50 + i, 1600 * 2 + 160 * i, frame_bytes(10 + i)))
                for i in range(10)]  # fmt: skip
    run_stream(twin, packets, end=0.7)
    assert twin.fast.jitter_buffer.stats.resyncs == 1
    sent = [frame_bytes(i) for i in range(20)]
    assert [f for f in twin.frames if f in sent] == sent


def test_media_timeout_then_media_again_from_the_same_source() -> None:
    twin = Twin(media_timeout=0.2)
    packets = steady(7, 0, 10)
    packets += [(0.6 + t, p) for t, p in steady(17, 1600, 10)]  # same SSRC, source, sequence
    run_stream(twin, packets, end=0.9)
    kinds = [type(e).__name__ for e in twin.fast._events]
    assert kinds == ["RemoteLatched", "MediaStarted", "MediaTimedOut", "MediaStarted"]
    assert twin.fast.general_receives == 2  # the first packet, and the first after the timeout


@pytest.mark.parametrize("packet_ms", [10, 30, 40])
def test_packets_of_another_size_than_the_frame(packet_ms: int) -> None:
    twin = Twin()
    size = 8 * packet_ms
    run_stream(twin, [(t * packet_ms / 20, p) for t, p in steady(1, 0, 30, size=size)], end=1.5)
    assert twin.fast.stats.lost == 0 and twin.fast.jb.general_pushes <= 2


def test_silence_gap_then_talk_spurt_and_shrink() -> None:
    twin = Twin()
    rng = random.Random(3)
    packets = [  # heavy jitter first: the target grows
        (0.02 * i + rng.uniform(0, 0.06), rtp(i, 160 * i, frame_bytes(i))) for i in range(50)
    ]
    packets += [  # then calm for long enough that it shrinks (3 s windows)
        (0.02 * i + 0.0002, rtp(i, 160 * i, frame_bytes(i))) for i in range(50, 400)
    ]
    packets += [  # a sender pause (no packets, timestamps run on), then a new talk spurt
        (0.02 * i + 0.0002, rtp(i - 100, 160 * i, frame_bytes(i))) for i in range(500, 560)
    ]
    run_stream(twin, packets, end=11.5)
    jb = twin.fast.jitter_buffer
    assert jb.stats.stalls >= 1 and jb.stats.skips >= 1


def test_send_side_dtmf_cn_marker_and_clock_stall() -> None:
    twin = Twin(cn_pt=13)
    now = 0.0
    outs = []
    general_sends = {}
    for k in range(120):
        general_sends[k] = twin.fast.general_sends
        if k == 10:
            for s in (twin.fast, twin.general):
                s.start_dtmf("5", 100)
        if k == 60:
            now += 0.2  # the media clock stalled
        payload = None if 30 <= k < 40 or k >= 100 else frame_bytes(k)
        outs.append(twin.send(payload, now))
        now = round(now + 0.02, 6)
    # once the digit and its gap are over, audio takes the fast path again
    assert general_sends[10] < general_sends[25] == general_sends[30]  # the digit: general
    assert general_sends[30] < general_sends[40] == general_sends[60]  # CN silence: general
    markers = [RtpPacket.parse(o).marker for o in outs if o is not None]
    assert markers.count(True) >= 4
    assert any(o is not None and o[1] & 0x7F == 101 for o in outs)
    assert outs[-1] is None  # CN: nothing to send between refreshes


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_match_the_general_path(seed: int) -> None:
    rng = random.Random(seed)
    twin = Twin(
        seed,
        cn_pt=rng.choice([None, 13]),
        relatch_after=rng.choice([0.2, 2.0]),
        strict_source=rng.choice([True, False]),
    )
    seq, ts, ssrc = rng.choice([65500, rng.getrandbits(16)]), rng.getrandbits(32), REMOTE_SSRC
    packets: list[tuple[float, bytes] | tuple[float, bytes, Address]] = []
    for i in range(300):
        sent = 0.02 * i
        r = rng.random()
        if r < 0.01:
            ssrc = rng.getrandbits(32)
        elif r < 0.02:
            seq = (seq + rng.randint(3000, 60000)) & 0xFFFF
        elif r < 0.03:
            ts = (ts + rng.randint(-50_000, 50_000)) & 0xFFFFFFFF
        size = rng.choice([160] * 8 + [80, 240])
        extra: dict[str, Any] = {}
        if r > 0.98:
            extra = {"padding_size": 3}
        elif r > 0.96:
            extra = {"csrc": [7]}
        data = rtp(seq, ts, frame_bytes(i, size), ssrc=ssrc, marker=r > 0.9, **extra)
        if 0.5 < r < 0.51:
            data = rtp(seq, ts, b"\x03\x0a\x01\x40", pt=101, ssrc=ssrc)
        elif 0.51 < r < 0.53:  # comfort noise (RFC 3389): a gap rendered as noise
            data = rtp(seq, ts, bytes([rng.randint(0, 127)]), pt=13, ssrc=ssrc)
        seq, ts = (seq + 1) & 0xFFFF, (ts + size) & 0xFFFFFFFF
        for _ in range(rng.choice([1] * 30 + [0, 2])):  # loss, duplicates
            delay = rng.uniform(0, rng.choice([0.001, 0.001, 0.01, 0.08]))
            addr = rng.choice([OTHER, NAT]) if rng.random() < 0.02 else SRC
            packets.append((sent + delay, data, addr))
    run_stream(twin, packets, end=6.5)
    assert twin.fast.jb.general_pushes < twin.fast.jb.pushes // 2  # the fast paths did run


def test_header_writer_matches_the_session_fast_path() -> None:
    session = RtpSession(now=0.0, remote_addr=SRC, ssrc=0x1_0000_0005)  # beyond 32 bits
    out = session.packetize(b"\x01" * 160, 0.0)
    assert out is not None
    packet = RtpPacket.parse(out)
    expected = RtpHeaderWriter(session.ssrc).build(0, True, packet.sequence_number,
                                                   packet.timestamp, b"\x01" * 160)  # fmt: skip
    assert out == expected and packet.ssrc == 5
