"""RtpSession in pairs, in memory, no event loop: audio by content, latching, drops, DTMF, RTCP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telcodecs import ulaw_decode, ulaw_encode

from gateway.errors import DtmfError
from gateway.rtp.dtmf import DtmfDigitReceived
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket
from gateway.rtp.rtcp import RtcpBye, RtcpReceiverReport, RtcpSenderReport, parse_compound
from gateway.rtp.session import (
    MediaStarted,
    MediaTimedOut,
    RemoteLatched,
    RtpSession,
    SsrcChanged,
)
from tests.support.audio import best_lag, sine_wave
from tests.support.rtp import invalid_vectors, vector

A_ADDR = ("198.51.100.1", 20000)  # where A's packets come from, as B sees them
B_ADDR = ("203.0.113.9", 30000)
NAT_ADDR = ("192.0.2.77", 41234)


def events(session: RtpSession) -> list[object]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def make_pair(**kwargs: object) -> tuple[RtpSession, RtpSession]:
    a = RtpSession(now=0.0, remote_addr=B_ADDR, ssrc=0xA, **kwargs)  # type: ignore[arg-type]
    b = RtpSession(now=0.0, remote_addr=A_ADDR, ssrc=0xB, **kwargs)  # type: ignore[arg-type]
    return a, b


def test_pair_carries_audio_by_content() -> None:
    a, b = make_pair()
    pcm = sine_wave(440, 2.0) + sine_wave(1270, 2.0) // 2
    payload = ulaw_encode(pcm)
    out = []
    for k in range(len(payload) // 160 + 5):
        now = 0.02 * k
        frame = payload[160 * k : 160 * (k + 1)] or None
        datagram = a.packetize(frame, now)
        assert datagram is not None
        b.receive_datagram(datagram, A_ADDR, now + 0.005)
        got = b.read_frame(now + 0.01)
        assert got is not None and len(got) == 160
        out.append(got)
    decoded = ulaw_decode(b"".join(out)).astype(np.float64)
    lag, corr = best_lag(pcm[:400].astype(np.float64), decoded, 800)
    assert corr > 0.99
    played = decoded[lag : lag + len(pcm)]
    assert np.corrcoef(played, pcm.astype(np.float64))[0, 1] > 0.99
    stats = b.stats
    assert stats.packets_in == a.stats.packets_out and stats.lost == 0
    assert stats.played_frames >= len(payload) // 160 and stats.concealed_frames == 0
    assert [type(e) for e in events(b)] == [RemoteLatched, MediaStarted]


def test_read_frame_is_none_before_media() -> None:
    a, _ = make_pair()
    assert a.read_frame(0.0) is None


def test_symmetric_rtp_learns_the_source_behind_nat() -> None:
    a, _ = make_pair()
    b = RtpSession(now=0.0, remote_addr=A_ADDR, ssrc=0xB, signalling_ip=NAT_ADDR[0])
    assert b.remote_addr == A_ADDR and b.latched is None
    b.receive_datagram(b"garbage!", NAT_ADDR, 0.0)  # invalid packets do not count
    for k in range(3):  # from the signalling IP, another port: learned after probation
        assert b.latched is None
        b.receive_datagram(a.packetize(a.silence_payload, 0.02 * k) or b"", NAT_ADDR, 0.02 * k)
    assert b.latched == NAT_ADDR and b.remote_addr == NAT_ADDR
    assert RemoteLatched(NAT_ADDR) in events(b) and b.stats.dropped["probation"] == 2
    # another source is dropped and counted while the learned one is alive
    b.receive_datagram(a.packetize(a.silence_payload, 0.06) or b"", (NAT_ADDR[0], 5), 0.061)
    assert b.stats.dropped["competing_source"] == 1 and b.remote_addr == NAT_ADDR
    # after the learned source fell silent (NAT rebinding), the new source takes over
    for _ in range(3):
        b.receive_datagram(a.packetize(a.silence_payload, 3.0) or b"", (NAT_ADDR[0], 5), 3.0)
    assert b.remote_addr == (NAT_ADDR[0], 5) and b.stats.relatches == 1


def test_drops_are_counted_by_reason_and_never_raised() -> None:
    a, b = make_pair()
    good = a.packetize(a.silence_payload, 0.0)
    assert good is not None
    cases = {
        "short": b"\x80\x00\x00",
        "version": b"\x40" + good[1:],
        "unknown_pt": RtpPacket(96, 1, 2, 3, b"x" * 160).serialize(),
        "padding": b"\xa0" + good[1:-1] + b"\xff",
        "csrc_overrun": b"\x8f" + good[1:20],
        "extension_overrun": b"\x90" + good[1:14],
    }
    for reason, data in cases.items():
        b.receive_datagram(data, A_ADDR, 0.01)
        assert b.stats.dropped[reason] == 1, reason
    b.receive_datagram(good, A_ADDR, 0.02)
    b.receive_datagram(good, A_ADDR, 0.03)
    assert b.stats.dropped["duplicate"] == 1
    assert b.stats.packets_in == len(cases) + 2


def test_dtmf_from_a_gives_one_digit_at_b_and_sequence_numbers_continue() -> None:
    a, b = make_pair()
    sent = []
    a.start_dtmf("7", 120)
    a.start_dtmf("#", 60)
    now = 0.0
    for _ in range(40):
        datagram = a.packetize(a.silence_payload, now)
        assert datagram is not None
        sent.append(RtpPacket.parse(datagram))
        b.receive_datagram(datagram, A_ADDR, now + 0.01)
        b.read_frame(now + 0.015)
        now += 0.02
    seqs = [p.sequence_number for p in sent]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    event_packets = [p for p in sent if p.payload_type == 101]
    assert event_packets[0].marker
    assert len({p.timestamp for p in event_packets}) == 2  # one timestamp per event
    digits = [e for e in events(b) if isinstance(e, DtmfDigitReceived)]
    assert [(d.digit, d.duration_ms) for d in digits] == [("7", 120), ("#", 60)]
    assert b.stats.dtmf_received == 2 and a.stats.dtmf_sent == 2
    # audio timestamps kept running during the events
    audio = [k for k, p in enumerate(sent) if p.payload_type == 0]
    first, last = sent[audio[0]], sent[audio[-1]]
    assert (last.timestamp - first.timestamp) & 0xFFFFFFFF == 160 * (audio[-1] - audio[0])
    assert (first.timestamp - event_packets[0].timestamp) & 0xFFFFFFFF == 160 * audio[0]


def test_dtmf_needs_a_negotiated_payload_type() -> None:
    session = RtpSession(now=0.0, remote_addr=B_ADDR, dtmf_pt=None)
    assert session.dtmf_pt is None  # the bridge then detects and plays DTMF in-band
    with pytest.raises(DtmfError):
        session.start_dtmf("1")
    with pytest.raises(DtmfError):
        RtpSession(now=0.0, remote_addr=B_ADDR).start_dtmf("x")


def test_sipp_dtmf_packets_through_a_session() -> None:
    b = RtpSession(now=0.0, remote_addr=A_ADDR, dtmf_pt=101)
    for i, name in enumerate(["rtp_event_start.bin", "rtp_event_end.bin", "rtp_event_end.bin"]):
        b.receive_datagram(vector(name), A_ADDR, 0.05 * i)
    digits = [e for e in events(b) if isinstance(e, DtmfDigitReceived)]
    assert [d.digit for d in digits] == ["1"]


def test_marker_on_talk_spurts_and_continuous_timestamps() -> None:
    a, _ = make_pair()
    frames = [b"\x10" * 160, None, None, b"\x10" * 160, b"\x10" * 160]
    packets = []
    for k, frame in enumerate(frames):
        datagram = a.packetize(frame, 0.02 * k)
        assert datagram is not None
        packets.append(RtpPacket.parse(datagram))
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert [p.payload == a.silence_payload for p in packets] == [False, True, True, False, False]
    ts = [p.timestamp for p in packets]
    assert all((y - x) & 0xFFFFFFFF == 160 for x, y in itertools.pairwise(ts))


def test_clock_stall_moves_timestamps_with_the_wall_clock() -> None:
    a, _ = make_pair()
    first = RtpPacket.parse(a.packetize(b"\x10" * 160, 0.0) or b"")
    later = RtpPacket.parse(a.packetize(b"\x10" * 160, 0.2) or b"")  # 9 frames were never sent
    assert (later.timestamp - first.timestamp) & 0xFFFFFFFF == 1600 and later.marker


def test_comfort_noise_dtx() -> None:
    a = RtpSession(now=0.0, remote_addr=B_ADDR, cn_pt=13)
    out = [a.packetize(None, 0.02 * k) for k in range(5)] + [a.packetize(b"\x10" * 160, 0.1)]
    assert out[1:5] == [None] * 4  # one CN packet starts the silence, then nothing
    first, last = RtpPacket.parse(out[0] or b""), RtpPacket.parse(out[5] or b"")
    assert first.payload_type == 13 and len(first.payload) == 1
    assert last.marker and (last.timestamp - first.timestamp) & 0xFFFFFFFF == 5 * 160


def test_ssrc_change_restarts_the_stream() -> None:
    a, b = make_pair()
    a2 = RtpSession(now=0.0, remote_addr=B_ADDR, ssrc=0xA2)
    tone = b"\x20" * 160
    for k in range(10):
        b.receive_datagram(a.packetize(tone, 0.02 * k) or b"", A_ADDR, 0.02 * k)
        b.read_frame(0.02 * k + 0.01)
    events(b)
    other = b"\x30" * 160
    frames = []
    for k in range(10, 20):
        b.receive_datagram(a2.packetize(other, 0.02 * k) or b"", A_ADDR, 0.02 * k)
        frames.append(b.read_frame(0.02 * k + 0.01))
    assert events(b) == [SsrcChanged(0xA, 0xA2)]
    assert b.stats.ssrc_changes == 1 and b.remote_ssrc == 0xA2
    assert frames[-5:] == [other] * 5  # the new stream plays
    assert b.stats.lost == 0  # its unrelated sequence numbers are not counted as loss


def test_media_timeout_and_resume() -> None:
    a, b = make_pair(media_timeout=1.0)
    b.receive_datagram(a.packetize(None, 0.0) or b"", A_ADDR, 0.0)
    events(b)
    timer = b.get_timer()
    assert timer == pytest.approx(1.0)
    b.handle_timer(1.0)
    assert events(b) == [MediaTimedOut()]
    b.receive_datagram(a.packetize(None, 1.5) or b"", A_ADDR, 1.5)
    assert events(b) == [MediaStarted()]
    b.set_media_timeout(None, 2.0)
    b.handle_timer(10.0)
    assert MediaTimedOut() not in events(b)


def test_rtcp_reports_and_round_trip_time() -> None:
    a, b = make_pair(rtcp_interval=5.0)
    one_way = 0.05
    now = 0.0
    a_rtcp, b_rtcp = [], []
    while now < 12.0:
        for src, dst, src_addr, box in ((a, b, A_ADDR, a_rtcp), (b, a, B_ADDR, b_rtcp)):
            datagram = src.packetize(src.silence_payload, now)
            assert datagram is not None
            dst.receive_datagram(datagram, src_addr, now + one_way)
            timer = src.get_timer()
            if timer is not None and timer <= now:
                src.handle_timer(now)
            for data, addr in src.rtcp_datagrams_to_send():
                box.append(data)
                assert addr[1] == (A_ADDR if src is b else B_ADDR)[1] + 1
                dst.receive_rtcp(data, (src_addr[0], src_addr[1] + 1), now + one_way)
        now += 0.02
    reports = [parse_compound(d)[0] for d in a_rtcp]
    assert reports and all(isinstance(r, RtcpSenderReport) for r in reports)
    last = reports[-1]
    assert isinstance(last, RtcpSenderReport)
    assert 100 < last.packet_count <= a.stats.packets_out
    assert a.stats.rtt_seconds == pytest.approx(2 * one_way, abs=0.003)
    assert a.stats.remote_cumulative_lost == 0 and a.stats.remote_fraction_lost == 0


def test_receiver_report_when_not_sending_and_bye_at_close() -> None:
    a, b = make_pair()
    b.receive_datagram(a.packetize(None, 0.0) or b"", A_ADDR, 0.0)
    b.handle_timer(10.0)
    b.close(10.1)
    b.close(10.2)  # safe twice
    (report, bye_compound) = [d for d, _ in b.rtcp_datagrams_to_send()]
    rr = parse_compound(report)[0]
    assert isinstance(rr, RtcpReceiverReport) and rr.reports[0].ssrc == 0xA
    assert isinstance(parse_compound(bye_compound)[-1], RtcpBye)
    assert b.get_timer() is None


def test_rtcp_from_a_stranger_or_garbage_is_counted() -> None:
    _, b = make_pair()
    b.receive_rtcp(vector("rtcp_sr_sdes.bin"), ("10.0.0.1", 9), 0.0)
    b.receive_rtcp(b"\x80\xc8junk", (A_ADDR[0], A_ADDR[1] + 1), 0.0)
    assert b.stats.dropped["rtcp_wrong_source"] == 1 and b.stats.dropped["rtcp_malformed"] == 1


@pytest.mark.parametrize(("name", "reason"), invalid_vectors("rtp"))
def test_invalid_rtp_vectors_are_dropped_and_counted_by_reason(name: str, reason: str) -> None:
    _, b = make_pair()
    b.receive_datagram(vector(name), A_ADDR, 0.0)
    assert b.stats.packets_in == 1 and b.stats.dropped[reason] == 1
    assert sum(b.stats.dropped.values()) == 1
    assert events(b) == [] and b.latched is None  # nothing learned from a refused packet


@pytest.mark.parametrize(("name", "reason"), invalid_vectors("rtcp"))
def test_invalid_rtcp_vectors_are_dropped_and_counted(name: str, reason: str) -> None:
    _, b = make_pair()
    b.receive_rtcp(vector(name), (A_ADDR[0], A_ADDR[1] + 1), 0.0)
    assert b.stats.dropped["rtcp_malformed"] == 1 and sum(b.stats.dropped.values()) == 1
    assert b.stats.rtt_seconds is None


def test_update_remote_relatches_and_changes_codec() -> None:
    a, b = make_pair(strict_source=False)
    for k in range(3):
        b.receive_datagram(a.packetize(None, 0.02 * k) or b"", NAT_ADDR, 0.02 * k)
    assert b.remote_addr == NAT_ADDR
    b.update_remote(("198.51.100.50", 4000), "pcma", 96, 30)
    assert b.remote_addr == ("198.51.100.50", 4000) and b.latched is None
    packet = RtpPacket.parse(b.packetize(None, 0.02) or b"")
    assert packet.payload_type == 8 and len(packet.payload) == 240 and packet.payload[0] == 0xD5
    assert b.dtmf_pt == 96 and b.frame_samples == 240


def test_header_writer_ssrc_is_ours() -> None:
    a, _ = make_pair()
    assert RtpPacket.parse(a.packetize(None, 0.0) or b"").ssrc == 0xA
    assert RtpHeaderWriter(5).ssrc == 5


@settings(max_examples=500)
@given(st.binary(max_size=300), st.sampled_from([A_ADDR, NAT_ADDR]))
def test_session_never_raises_on_any_bytes(data: bytes, addr: tuple[str, int]) -> None:
    session = RtpSession(now=0.0, remote_addr=A_ADDR, cn_pt=13)
    session.receive_datagram(data, addr, 0.0)
    session.receive_datagram(b"\x80" + data, addr, 0.01)
    session.receive_rtcp(data, addr, 0.02)
    session.receive_rtcp(b"\x81\xc9" + data, (A_ADDR[0], 9), 0.02)
    session.read_frame(0.03)
    session.handle_timer(100.0)
    stats = session.stats
    dropped = sum(stats.dropped.values())
    assert dropped <= stats.packets_in + stats.rtcp_in


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.binary(max_size=400)),
        max_size=30,
    )
)
def test_session_never_raises_on_hostile_valid_headers(
    packets: list[tuple[int, int, bytes]],
) -> None:
    session = RtpSession(now=0.0, remote_addr=A_ADDR)
    writer = RtpHeaderWriter(77)
    for k, (seq, ts, payload) in enumerate(packets):
        session.receive_datagram(
            writer.build(0 if k % 3 else 101, k % 2 == 0, seq, ts, payload), A_ADDR, 0.01 * k
        )
        frame = session.read_frame(0.01 * k)
        assert frame is None or len(frame) == 160
