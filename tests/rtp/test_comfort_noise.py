"""Received comfort noise (RFC 3389): the noise table (gateway.rtp.comfort_noise) and the
session rendering a CN gap at the stated level, then audio again; CN is sent only when
configured. Sans-I/O: packets and `now` are passed in."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import telcodecs
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from gateway.rtp.comfort_noise import (
    NOISE_TABLE_SAMPLES,
    cn_level,
    next_offset,
    noise_g711,
    noise_pcm16,
)
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket
from gateway.rtp.session import COMFORT_NOISE, RtpSession

SRC = ("198.51.100.7", 40000)
DECODE = {"pcmu": telcodecs.ulaw_decode, "pcma": telcodecs.alaw_decode}
ENCODE = {"pcmu": telcodecs.ulaw_encode, "pcma": telcodecs.alaw_encode}


@pytest.mark.parametrize("level", [30, 45, 60])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_noise_has_the_stated_level_at_any_rate(level: int, rate: int) -> None:
    n = rate // 50
    offset = 0
    frames = []
    for _ in range(50):
        frames.append(noise_pcm16(level, n, offset))
        offset = next_offset(offset, n)
    assert all(f.dtype == np.int16 and f.shape == (n,) for f in frames)
    assert telcodecs.rms_dbfs(np.concatenate(frames)) == pytest.approx(-level, abs=0.5)
    assert all(abs(telcodecs.rms_dbfs(f) + level) < 2.0 for f in frames)  # steady per frame
    assert not any(np.array_equal(a, b) for a, b in itertools.pairwise(frames))


def test_noise_wraps_around_the_table_seamlessly() -> None:
    whole = noise_pcm16(40, NOISE_TABLE_SAMPLES, 0)
    start = NOISE_TABLE_SAMPLES - 100
    wrapped = noise_pcm16(40, 160, start)
    np.testing.assert_array_equal(wrapped, np.concatenate((whole[start:], whole[:60])))
    assert next_offset(start, 160) == 60


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
@given(level=st.integers(0, 127), n=st.integers(0, 960), offset=st.integers(0, (1 << 15) - 1))
@settings(max_examples=60)
def test_g711_noise_is_the_pcm16_noise_coded(codec: str, level: int, n: int, offset: int) -> None:
    coded = noise_g711(codec, level, n, offset)
    assert coded == ENCODE[codec](noise_pcm16(level, n, offset))


def test_level_byte_and_bad_arguments() -> None:
    assert cn_level(b"\x28\x01\x02") == 40  # spectral coefficients after it are ignored
    assert cn_level(b"\xa8") == 40  # the unused top bit (RFC 3389 §3)
    assert cn_level(b"") is None
    assert not noise_pcm16(127, 160, 0).any()  # -127 dBov: below one LSB, silence
    with pytest.raises(ValueError, match="level"):
        noise_pcm16(128, 160, 0)
    with pytest.raises(ValueError, match="noise read"):
        noise_pcm16(40, 160, NOISE_TABLE_SAMPLES)
    with pytest.raises(ValueError, match="codec"):
        noise_g711("g722", 40, 160, 0)


# --- the session: a CN gap between two talk spurts


def tone(codec: str, frames: int, hz: float) -> list[bytes]:
    t = np.arange(frames * 160) / 8000
    pcm = (np.sin(2 * np.pi * hz * t) * 6000).astype(np.int16)
    data = ENCODE[codec](pcm)
    return [data[i * 160 : (i + 1) * 160] for i in range(frames)]


def rms(frames: list[bytes], codec: str) -> float:
    pcm: NDArray[np.int16] = DECODE[codec](b"".join(frames))
    return telcodecs.rms_dbfs(pcm)


def run_call(
    codec: str, levels: list[int], *, talk: int = 25, gap: int = 50
) -> tuple[list[bytes | None], list[list[bytes]], RtpSession]:
    """Talk spurts of `talk` frames (a tone each), each but the last followed by one CN packet
    at the next level of `levels` and `gap` frames of nothing; the frames read every 20 ms."""
    session = RtpSession(now=0.0, codec=codec, remote_addr=SRC, ssrc=7)
    session.update_remote(SRC, codec, 101, 20, cn_pt=13)
    pt = 0 if codec == "pcmu" else 8
    writer = RtpHeaderWriter(0xCA11)
    spurts = [tone(codec, talk, 300 + 200 * i) for i in range(len(levels) + 1)]
    schedule: dict[int, list[bytes]] = {}
    k = seq = 0
    for i, spurt in enumerate(spurts):
        for j, frame in enumerate(spurt):
            packet = writer.build(pt, j == 0, seq, 160 * k, frame)
            schedule.setdefault(k, []).append(packet)
            seq, k = seq + 1, k + 1
        if i < len(levels):  # RFC 3389 §4: one CN packet where the silence starts
            cn = writer.build(13, False, seq, 160 * k, bytes([levels[i], 0x50, 0x60]))
            schedule.setdefault(k - 1, []).append(cn)
            seq, k = seq + 1, k + gap
    frames: list[bytes | None] = []
    for tick in range(k + 10):
        now = 0.02 * tick
        for packet in schedule.get(tick, []):
            session.receive_datagram(packet, SRC, now + 0.001)
        frames.append(session.read_frame(now + 0.01))
    return frames, spurts, session


def find_run(frames: list[bytes | None], run: list[bytes]) -> int:
    """Where the frames of `run` appear back to back in `frames`."""
    for at in range(len(frames) - len(run) + 1):
        if frames[at : at + len(run)] == run:
            return at
    raise AssertionError("talk spurt not played intact")


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_a_cn_gap_plays_noise_at_the_stated_level_and_audio_resumes_intact(codec: str) -> None:
    levels = [40, 60]
    frames, spurts, session = run_call(codec, levels)
    starts = [find_run(frames, spurt) for spurt in spurts]  # every spurt, whole and in order
    assert starts == sorted(starts)
    for i, level in enumerate(levels):
        gap = frames[starts[i] + len(spurts[i]) : starts[i + 1]]
        assert len(gap) >= 45
        body = [f for f in gap if f is not None]
        assert len(body) == len(gap) and all(len(f) == 160 for f in body)
        # the noise at the level the CN packet stated, within 3 dB (G.711 quantises it)
        assert abs(rms(body, codec) + level) <= 3.0, (level, rms(body, codec))
        assert body[0] != session.silence_payload
        assert all(f != session.silence_payload for f in body)
        assert len(set(body)) == len(body)  # noise, not one frame repeated
        # white: neighbouring samples uncorrelated (no tone, no repeated period)
        x = DECODE[codec](b"".join(body)).astype(np.float64)
        assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.1
    # after the last spurt (no CN): silence again, not noise
    assert frames[-1] == session.silence_payload


def test_cn_ends_with_an_ssrc_change_and_is_refused_when_not_negotiated() -> None:
    session = RtpSession(now=0.0, remote_addr=SRC, ssrc=7)
    session.update_remote(SRC, "pcmu", 101, 20)  # the SDP listed no CN
    writer = RtpHeaderWriter(0xCA11)
    session.receive_datagram(writer.build(0, True, 1, 0, b"\x10" * 160), SRC, 0.0)
    session.receive_datagram(writer.build(13, False, 2, 160, b"\x14"), SRC, 0.02)
    assert session.stats.dropped["unknown_pt"] == 1
    frames = [session.read_frame(0.02 * k) for k in range(10)]
    assert frames[-1] == session.silence_payload
    # negotiated: the gap is noise, until another source's stream restarts the receive side
    session.update_remote(SRC, "pcmu", 101, 20, cn_pt=13)
    session.receive_datagram(writer.build(13, False, 3, 320, b"\x14"), SRC, 0.2)
    assert session.read_frame(0.22) != session.silence_payload
    other = RtpHeaderWriter(0xBEEF)
    session.receive_datagram(other.build(0, True, 50, 9000, b"\x10" * 160), SRC, 0.24)
    later = [session.read_frame(0.26 + 0.02 * k) for k in range(8)]
    assert later[-1] == session.silence_payload


def test_cn_is_sent_only_when_configured() -> None:
    quiet = RtpSession(now=0.0, remote_addr=SRC, ssrc=7)
    quiet.update_remote(SRC, "pcmu", 101, 20, cn_pt=13)  # negotiated, not configured
    sent = [RtpPacket.parse(quiet.packetize(None, 0.02 * k) or b"") for k in range(3)]
    assert [p.payload_type for p in sent] == [0, 0, 0] and quiet.cn_pt is None
    talker = RtpSession(now=0.0, remote_addr=SRC, ssrc=7, send_cn=True)
    talker.update_remote(SRC, "pcmu", 101, 20)  # configured, not negotiated: no CN
    assert RtpPacket.parse(talker.packetize(None, 0.0) or b"").payload_type == 0
    talker.update_remote(SRC, "pcmu", 101, 20, cn_pt=13)
    out = [talker.packetize(None, 0.02 * k) for k in range(1, 4)]
    assert RtpPacket.parse(out[0] or b"").payload_type == 13 and out[1:] == [None, None]


def test_a_cn_gap_on_a_g722_call_is_noise_at_the_leg_rate_and_level() -> None:
    # G.722's RTP clock is 8000 (RFC 3551 §4.5.2), so CN/8000 (PT 13) goes with it; the session
    # carries G.722 payloads, so the gap is left to the leg, which renders it at 16 kHz
    session = RtpSession(now=0.0, codec="g722", remote_addr=SRC, ssrc=7)
    session.update_remote(SRC, "g722", 101, 20, cn_pt=13, payload_type=9)
    writer = RtpHeaderWriter(0xCA11)
    for k in range(3):
        session.receive_datagram(writer.build(9, k == 0, 1 + k, 160 * k, b"\x55" * 160), SRC, 0.0)
    session.receive_datagram(writer.build(13, False, 4, 480, b"\x32"), SRC, 0.06)  # -50 dBov
    frames = [session.read_frame(0.02 * k) for k in range(40)]
    audio = [i for i, f in enumerate(frames) if f == b"\x55" * 160]
    assert len(audio) == 3 and audio == list(range(audio[0], audio[0] + 3))  # all of it, in order
    gap = [f for f in frames[audio[-1] + 1 :] if f is COMFORT_NOISE]
    assert len(gap) == len(frames) - audio[-1] - 1  # then noise only, never silence
    noise = np.concatenate([session.comfort_noise_pcm(320) for _ in gap]).astype(np.float64)
    level = 20 * np.log10(np.sqrt(np.mean(noise**2)) / 32768)
    assert abs(level + 50) <= 1.0, level
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 0.1  # white, not a tone
    # audio after the CN ends the gap
    session.receive_datagram(writer.build(9, True, 5, 160 * 60, b"\x66" * 160), SRC, 1.2)
    later = [session.read_frame(1.2 + 0.02 * k) for k in range(6)]
    assert b"\x66" * 160 in later and later[-1] is not COMFORT_NOISE
