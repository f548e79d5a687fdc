"""Reception statistics (RFC 3550 A.1/A.3/A.8) and the playout buffer, checked by content."""

from __future__ import annotations

import numpy as np
import pytest
from telcodecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

from gateway.rtp.jitter import JitterBuffer, PushResult, ReceptionStats
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket, parse_header
from tests.support.audio import best_lag, sine_wave
from tests.support.pcap import read_pcap_udp, sipp_capture
from tests.support.rtp import LossyLink


def numbered_frame(i: int, size: int = 160) -> bytes:
    """A frame whose content names its index (no G.711 meaning needed)."""
    head = bytes((0x55, (i >> 8) & 0xFF, i & 0xFF, 0x2A))
    return (head * (size // 4))[:size]


def frame_index(frame: bytes) -> int | None:
    if frame[0] != 0x55 or frame[3] != 0x2A or frame[:4] * (len(frame) // 4) != frame:
        return None
    return (frame[1] << 8) | frame[2]


# --- RFC 3550 A.1 / A.3 / A.8


def test_sequence_wrap_extends_and_counts_no_loss() -> None:
    stats = ReceptionStats()
    for seq in [*range(65530, 65536), *range(6)]:
        assert stats.update(seq) == ReceptionStats.ACCEPTED
    assert stats.cycles == 65536 and stats.extended_max == 65536 + 5
    assert stats.expected == 12 and stats.lost == 0


def test_loss_and_fraction_lost_per_interval() -> None:
    stats = ReceptionStats()
    for seq in range(100):
        if seq % 10 != 3:  # lose 10 of 100
            stats.update(seq)
    assert stats.lost == 10
    assert stats.interval_fraction_lost() == (10 << 8) // 100
    for seq in range(100, 150):
        stats.update(seq)
    assert stats.interval_fraction_lost() == 0  # nothing lost in the second interval
    assert stats.lost == 10


def test_duplicates_and_reordered_packets_across_the_wrap() -> None:
    stats = ReceptionStats()
    for seq in (65534, 0, 65535, 1, 0, 65535):
        stats.update(seq)
    assert stats.duplicates == 2 and stats.received == 4 and stats.lost == 0


def test_big_jump_needs_two_sequential_packets() -> None:
    stats = ReceptionStats()
    for seq in range(10):
        stats.update(seq)
    assert stats.update(30000) == ReceptionStats.BAD_SEQUENCE
    assert stats.update(30001) == ReceptionStats.ACCEPTED  # the source restarted
    assert stats.base_seq == 30001 and stats.lost == 0


def test_interarrival_jitter_matches_hand_computation() -> None:
    stats = ReceptionStats(8000)
    # arrivals (in timestamp units) 0, 160, 360, 480 for timestamps 0, 160, 320, 480:
    # D = 0, 40, -40 -> J = 0, 40/16 = 2.5, 2.5 + (40 - 2.5)/16 = 4.84375
    for arrival, ts in ((0.0, 0), (0.020, 160), (0.045, 320), (0.060, 480)):
        stats.update_jitter(arrival, ts)
    assert stats.jitter == pytest.approx(4.84375)
    assert stats.jitter_seconds == pytest.approx(4.84375 / 8000)


def test_jitter_survives_timestamp_wrap() -> None:
    stats = ReceptionStats(8000)
    for i in range(50):
        stats.update_jitter(i * 0.02, (2**32 - 800 + 160 * i) & 0xFFFFFFFF)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


# --- playout buffer


def drive(
    jb: JitterBuffer, arrivals: list[tuple[float, int, int, bytes]], end: float
) -> list[bytes]:
    """Push (time, seq, ts, payload) arrivals and pop a frame every 20 ms from t=0."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out: list[bytes] = []
    i = 0
    t = 0.0
    while t < end:
        while i < len(arrivals) and arrivals[i][0] <= t:
            at, seq, ts, payload = arrivals[i]
            jb.push(seq, ts, payload, at)
            i += 1
        frame = jb.pop(t)
        if frame is not None:
            assert len(frame) == jb.frame
            out.append(frame)
        t += 0.02
    return out


def test_nothing_before_the_first_packet() -> None:
    assert JitterBuffer().pop(0.0) is None


def test_reorders_within_the_window() -> None:
    jb = JitterBuffer("pcmu", 20, min_delay_ms=40)
    order = [0, 2, 1, 3, 5, 4, 6, 7, 9, 8, 10, 11]
    arrivals = [
        (0.001 + 0.02 * pos, i, 1000 + 160 * i, numbered_frame(i)) for pos, i in enumerate(order)
    ]
    out = drive(jb, arrivals, 0.3)
    indices = [frame_index(f) for f in out if frame_index(f) is not None]
    assert indices == list(range(12))
    assert jb.stats.late == 0 and jb.stats.played == 12


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer()
    assert jb.push(1, 160, numbered_frame(1), 0.0) == PushResult.RESYNCED
    assert jb.push(1, 160, numbered_frame(1), 0.001) == PushResult.DUPLICATE
    assert jb.push(2, 160, numbered_frame(1), 0.002) == PushResult.DUPLICATE  # same samples
    assert jb.stats.duplicates == 2
    assert jb.reception.duplicates == 1


def test_loss_and_jitter_simulation_plays_frames_in_order_once() -> None:
    link = LossyLink(seed=7, loss=0.05, jitter=0.03, duplicate=0.03)
    jb = JitterBuffer("pcmu", 20)
    writer = RtpHeaderWriter(1234)
    n = 500
    out = []
    arrived: list[int] = []  # packet indices as they reached the buffer (duplicates too)
    t = 0.0
    for i in range(n + 10):
        if i < n:
            link.send(
                writer.build(0, i == 0, (65000 + i) & 0xFFFF, 4000 + 160 * i, numbered_frame(i)), t
            )
        for at, data in link.deliver_until(t):
            _, _, seq, ts, _, payload = parse_header(data)
            arrived.append((seq - 65000) & 0xFFFF)
            jb.push(seq, ts, payload, at)
        frame = jb.pop(t)
        if frame is not None:
            out.append(frame)
        t += 0.02
    indices = [frame_index(f) for f in out]
    played = [i for i in indices if i is not None]
    assert played == sorted(set(played))  # in order, never twice
    missing = n - len(played)
    # every frame not played was lost, late, or skipped to shrink the delay
    assert link.lost + jb.stats.late <= missing <= link.lost + jb.stats.late + jb.stats.skips
    # RFC 3550 A.3 loss is exact: the packets between the first and the highest that arrived
    # and never did (a loss before the first or after the last one is invisible to a receiver)
    unique = set(arrived)
    gaps = sum(1 for i in range(min(unique), max(unique) + 1) if i not in unique)
    assert jb.reception.lost == gaps
    assert link.lost - 2 <= gaps <= link.lost and gaps > 0
    assert jb.reception.duplicates == len(arrived) - len(unique) > 0
    assert jb.stats.concealed + jb.stats.silence >= missing
    assert 160 <= jb.target <= 480


def test_concealment_fades_then_silence() -> None:
    jb = JitterBuffer("pcmu", 20)
    tone = ulaw_encode(sine_wave(1000, 0.1))
    for i in range(5):
        jb.push(i, 160 * i, tone[160 * i : 160 * (i + 1)], 0.02 * i)
    frames = [jb.pop(0.02 * i + 0.001) for i in range(12)]
    levels = [float(np.sqrt(np.mean(ulaw_decode(f).astype(np.float64) ** 2))) for f in frames if f]
    played = jb.stats.played
    assert played == 5
    assert levels[0] == 0.0  # the pre-roll before the first packet is silence
    tail = levels[-6:]  # after the last packet: three fading frames, then silence
    assert tail[0] > tail[1] > tail[2] > 0
    assert tail[0] < levels[2] and tail[3:] == [0.0] * 3
    assert jb.stats.concealed == 3 and jb.stats.silence >= 4


def test_adaptive_delay_grows_under_jitter_and_shrinks_when_clean() -> None:
    jb = JitterBuffer("pcmu", 20, shrink_after=2.0)
    writer = RtpHeaderWriter(1)
    noisy = LossyLink(seed=3, jitter=0.08)
    targets = []
    t = 0.0
    for i in range(3000):  # 60 s: 20 s of heavy jitter, then a clean link
        noisy.jitter = 0.08 if i < 1000 else 0.0
        noisy.send(writer.build(0, False, i & 0xFFFF, 160 * i, numbered_frame(i)), t)
        for at, data in noisy.deliver_until(t):
            _, _, seq, ts, _, payload = parse_header(data)
            jb.push(seq, ts, payload, at)
        jb.pop(t)
        targets.append(jb.target_ms)
        t += 0.02
    assert all(20 <= x <= 60 for x in targets)
    assert max(targets[:1000]) == 60  # grew under 80 ms of jitter
    assert targets[-1] == 20  # and came back on the clean link
    assert jb.stats.stalls >= 2 and jb.stats.skips >= 2


def test_30ms_packets_play_as_continuous_20ms_frames() -> None:
    rate = 8000
    t = np.arange(3 * rate) / rate
    # a chirp: any gap or repeat of samples breaks the alignment with the reference
    pcm = (6000 * np.sin(2 * np.pi * (300 * t + 200 * t**2))).astype(np.int16)
    payload = alaw_encode(pcm)
    jb = JitterBuffer("pcma", 20)
    arrivals = [
        (0.03 * k + 0.002, k, 240 * k, payload[240 * k : 240 * (k + 1)])
        for k in range(len(payload) // 240)
    ]
    out = b"".join(drive(jb, arrivals, 3.2))
    decoded = alaw_decode(out).astype(np.float64)
    reference = pcm.astype(np.float64)
    lag, corr = best_lag(reference[:800], decoded, 2000)
    assert corr > 0.99
    played = decoded[lag : lag + len(reference)]
    assert len(played) == len(reference)
    assert np.corrcoef(played, reference)[0, 1] > 0.99  # the whole chirp, in place
    assert jb.stats.played == len(pcm) // 160 and jb.stats.late == 0


def test_timestamp_and_sequence_wrap_mid_stream() -> None:
    jb = JitterBuffer("pcmu", 20)
    arrivals = [
        (
            0.02 * i + 0.001,
            (65530 + i) & 0xFFFF,
            (2**32 - 800 + 160 * i) & 0xFFFFFFFF,
            numbered_frame(i),
        )
        for i in range(20)
    ]
    out = drive(jb, arrivals, 0.5)
    assert [frame_index(f) for f in out if frame_index(f) is not None] == list(range(20))
    assert jb.reception.lost == 0 and jb.stats.resyncs == 0


def test_reset_restarts_cleanly_on_a_new_stream() -> None:
    jb = JitterBuffer("pcmu", 20)
    for i in range(5):
        jb.push(100 + i, 160 * i, numbered_frame(i), 0.02 * i)
        jb.pop(0.02 * i + 0.01)
    jb.reset()
    assert jb.reception.started is False
    frames = []
    for k in range(6):  # a new source with unrelated numbering
        jb.push(7 + k, 900_000 + 160 * k, numbered_frame(50 + k), 0.2 + 0.02 * k)
        frames.append(jb.pop(0.2 + 0.02 * k + 0.01))
    assert [frame_index(f) for f in frames if f is not None and frame_index(f) is not None] == [
        50,
        51,
        52,
        53,
        54,
    ]
    assert jb.stats.resyncs == 1 and jb.reception.lost == 0


def test_timestamp_jump_back_resyncs_instead_of_dropping_everything() -> None:
    jb = JitterBuffer("pcmu", 20)
    arrivals = [(0.02 * i + 0.001, i, 50_000 + 160 * i, numbered_frame(i)) for i in range(10)]
    arrivals += [(0.02 * i + 0.001, i, 160 * (i - 10), numbered_frame(i)) for i in range(10, 30)]
    out = drive(jb, arrivals, 0.7)
    played = [frame_index(f) for f in out if frame_index(f) is not None]
    assert played[:9] == list(range(9))  # at most the buffered frame is lost at the jump
    assert len(played) >= 26 and played == sorted(played)
    assert jb.stats.resyncs == 1


def test_g711a_capture_plays_continuously() -> None:
    packets = [RtpPacket.parse(p.payload) for p in read_pcap_udp(sipp_capture("g711a.pcap"))]
    times = [p.time for p in read_pcap_udp(sipp_capture("g711a.pcap"))]
    assert {p.payload_type for p in packets} == {8} and len(packets[0].payload) == 240
    jb = JitterBuffer("pcma", 20)
    start = times[0]
    arrivals = [
        (tm - start, p.sequence_number, p.timestamp, p.payload)
        for tm, p in zip(times, packets, strict=True)
    ]
    out = b"".join(drive(jb, arrivals, times[-1] - start + 0.2))
    sent = b"".join(p.payload for p in packets)
    assert sent in out  # every sample, in order, with no gap or repeat
    assert jb.stats.late == 0 and jb.reception.lost == 0
    # and the audio is not silence
    assert float(np.abs(alaw_decode(sent).astype(np.float64)).mean()) > 100
