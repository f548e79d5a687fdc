"""Wideband framing, sans-I/O: SDP for G.722 and Opus with telephone-event per clock, RtpSession
carrying G.722 (8000 Hz clock, 16 kHz audio) and Opus (48000, whole packets) with the leg's
coders (gateway/media/wideband.py), a codec switch mid-stream, and property tests over random
loss and reordering. Time is passed in; no sockets."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.wideband import G722Codec, OpusCodec, codec_for, wants_fec
from gateway.rtp.packet import RtpPacket
from gateway.rtp.session import RtpSession
from gateway.sip.sdp import (
    CODECS,
    MediaPolicy,
    SessionDescription,
    describe,
    make_offer,
    negotiate,
)

A = ("127.0.0.1", 40000)
B = ("127.0.0.1", 40002)


def tone(freq: float, samples: int, rate: int, start: int = 0) -> np.ndarray:
    t = (np.arange(samples) + start) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


# --- SDP


def test_our_offer_lists_wideband_first_with_telephone_event_at_each_clock() -> None:
    offer = make_offer("127.0.0.1", 30000, MediaPolicy())
    text = offer.serialize().decode()
    assert "m=audio 30000 RTP/AVP 9 111 0 8 101 102 103\r\n" in text
    for line in (
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 maxplaybackrate=24000;sprop-maxcapturerate=24000;useinbandfec=1",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:102 telephone-event/16000",
        "a=rtpmap:103 telephone-event/48000",
    ):
        assert line in text, line
    narrow = make_offer("127.0.0.1", 30000, MediaPolicy(codecs=("pcmu",))).serialize().decode()
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in narrow and "telephone-event/16000" not in narrow


def _offer(formats: str, *lines: str) -> SessionDescription:
    body = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            f"m=audio 5000 RTP/AVP {formats}",
            *lines,
        ]
    )
    return SessionDescription.parse(body + "\r\n")


def test_the_answer_picks_our_first_codec_and_the_telephone_event_at_its_clock() -> None:
    offer = _offer(
        "0 96 9 100 101 102",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 useinbandfec=1;stereo=1",
        "a=rtpmap:100 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:102 telephone-event/16000",
    )
    g722 = negotiate(offer, "127.0.0.1", 30000)
    assert (g722.codec, g722.payload_type, g722.dtmf_payload_type) == ("g722", 9, 101)
    assert g722.media.dtmf_clock_rate == 8000
    answer = g722.answer_sdp.decode()
    assert "m=audio 30000 RTP/AVP 9 101" in answer and "telephone-event/8000" in answer
    opus = negotiate(offer, "127.0.0.1", 30000, MediaPolicy(codecs=("opus", "pcmu")))
    assert (opus.codec, opus.payload_type, opus.dtmf_payload_type) == ("opus", 96, 100)
    assert opus.media.dtmf_clock_rate == 48000 and opus.media.fmtp == "useinbandfec=1;stereo=1"
    answer = opus.answer_sdp.decode()
    assert "a=rtpmap:96 opus/48000/2" in answer and "a=rtpmap:100 telephone-event/48000" in answer
    # no telephone-event at the codec's clock: 8000, else the one there is
    only16 = _offer("9 102", "a=rtpmap:102 telephone-event/16000")
    media = describe(only16)
    assert (media.codec, media.dtmf_payload_type, media.dtmf_clock_rate) == ("g722", 102, 16000)
    pcmu = describe(_offer("0 101", "a=rtpmap:101 telephone-event/8000"))
    assert (pcmu.codec, pcmu.dtmf_clock_rate) == ("pcmu", 8000)


# --- RtpSession with the coders


def _pair(codec: str, pt: int | None = None) -> tuple[RtpSession, RtpSession]:
    tx = RtpSession(now=0.0, codec=codec, remote_addr=B, payload_type=pt, ssrc=1)
    rx = RtpSession(now=0.0, codec=codec, remote_addr=A, payload_type=pt, ssrc=2)
    return tx, rx


def test_g722_rtp_clock_is_8000_while_its_audio_is_16_khz() -> None:
    tx, rx = _pair("g722")
    enc, dec = G722Codec(20), G722Codec(20)
    sent = [tx.packetize(enc.encode(tone(6000, 320, 16000, 320 * k)), 0.02 * k) for k in range(25)]
    packets = [RtpPacket.parse(d) for d in sent if d]
    assert all(p.payload_type == 9 and len(p.payload) == 160 for p in packets)
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(packets)} == {160}
    out = []
    for k, datagram in enumerate(sent):
        assert datagram is not None
        rx.receive_datagram(datagram, B, 0.02 * k + 0.001)
        frame = rx.read_frame(0.02 * k + 0.002)
        if frame is not None:
            out.append(dec.decode(frame))
    heard = np.concatenate(out)
    assert len(heard) % 320 == 0 and abs(peak_hz(heard[-3200:], 16000) - 6000) < 20


def test_opus_uses_the_negotiated_dynamic_payload_type_and_a_48000_clock() -> None:
    tx, rx = _pair("opus", 96)
    enc, dec = OpusCodec(20), OpusCodec(20)
    sent = [tx.packetize(enc.encode(tone(6000, 960, 48000, 960 * k)), 0.02 * k) for k in range(25)]
    packets = [RtpPacket.parse(d) for d in sent if d]
    assert all(p.payload_type == 96 for p in packets)
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(packets)} == {960}
    out = []
    for k, datagram in enumerate(sent):
        assert datagram is not None
        rx.receive_datagram(datagram, B, 0.02 * k + 0.001)
        frame = rx.read_frame(0.02 * k + 0.002)
        if frame is not None:
            out.append(dec.decode(frame))
    heard = np.concatenate(out)
    assert abs(peak_hz(heard[-9600:], 48000) - 6000) < 20


def test_a_codec_switch_mid_stream_loses_at_most_one_frame() -> None:
    """pcmu, then a re-INVITE to G.722 (the receiver's session and coder switch as
    SipLeg.media_updated does): the tone goes on with at most one 20 ms frame missing."""
    tx, rx = _pair("pcmu")
    from telcodecs import ulaw_encode

    frames: list[np.ndarray] = []
    dec = None
    enc = None
    now = 0.0
    for k in range(40):
        now = 0.02 * k
        if k == 20:  # both sides apply the new SDP between two ticks
            tx.update_remote(B, "g722", 101, 20)
            rx.update_remote(A, "g722", 101, 20)
            enc, dec = codec_for("g722", 20), codec_for("g722", 20)
        if enc is None:
            payload = ulaw_encode(tone(1000, 160, 8000, 160 * k))
        else:
            payload = enc.encode(tone(1000, 320, 16000, 320 * k))
        datagram = tx.packetize(payload, now)
        assert datagram is not None
        rx.receive_datagram(datagram, B, now + 0.001)
        frame = rx.read_frame(now + 0.002)
        if frame is None:
            continue
        if dec is None:
            from telcodecs import resample, ulaw_decode

            frames.append(resample(ulaw_decode(frame), 8000, 16000))
        else:
            frames.append(dec.decode(frame))
    after = frames[-19:]  # the frames played once the switch happened
    silent = sum(1 for f in after if np.sqrt(np.mean(f.astype(np.float64) ** 2)) < 500)
    assert silent <= 1, [int(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in after]
    assert abs(peak_hz(np.concatenate(after[-10:]), 16000) - 1000) < 20


# --- property tests: random loss and reordering


@settings(max_examples=40, deadline=None)
@given(
    codec=st.sampled_from(["g722", "opus"]),
    lost=st.sets(st.integers(5, 44), max_size=8),
    swaps=st.lists(st.integers(5, 43), max_size=6),
)
def test_loss_and_reordering_play_one_frame_per_tick_on_the_codec_clock(
    codec: str, lost: set[int], swaps: list[int]
) -> None:
    rate = {"g722": 16000, "opus": 48000}[codec]
    clock = {"g722": 8000, "opus": 48000}[codec]
    tx, rx = _pair(codec)
    enc, dec = codec_for(codec, 20), codec_for(codec, 20)
    assert enc is not None and dec is not None
    samples = rate // 50
    datagrams = [
        tx.packetize(enc.encode(tone(3000, samples, rate, samples * k)), 0.02 * k)
        for k in range(50)
    ]
    stamps = [RtpPacket.parse(d).timestamp for d in datagrams if d]
    # the RTP clock: one frame of ticks per packet, whatever the audio rate
    assert {(b - a) & 0xFFFFFFFF for a, b in pairwise(stamps)} == {clock // 50}
    order = list(range(50))
    for i in swaps:  # neighbours swapped: one packet arrives a tick late
        order[i], order[i + 1] = order[i + 1], order[i]
    played: list[bytes] = []
    for tick, k in enumerate(order):
        now = 0.02 * tick
        if k not in lost:
            datagram = datagrams[k]
            assert datagram is not None
            rx.receive_datagram(datagram, B, now + 0.001)
        frame = rx.read_frame(now + 0.002)
        if frame is not None:
            played.append(frame)
            pcm = dec.decode(frame)
            assert pcm.dtype == np.int16 and len(pcm) == samples  # one whole frame each tick
    stats = rx.stats
    assert stats.lost == len(lost - {49})  # a lost last packet is not yet known lost
    # what played is every payload that arrived in time, in order, and gaps where none did
    sent_payloads = [RtpPacket.parse(d).payload for d in datagrams if d]
    real = [p for p in played if p]
    assert real == [p for p in sent_payloads if p in real]
    assert set(real) <= set(sent_payloads) and len(real) >= 50 - len(lost) - len(swaps) - 3


def _glide(samples: int, rate: int) -> np.ndarray:
    """A gliding, pulsing tone: PLC cannot predict it, FEC carries it."""
    t = np.arange(samples) / rate
    freq = 300 + 200 * np.sin(2 * np.pi * 1.5 * t)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return (8000 * env * np.sin(2 * np.pi * np.cumsum(freq) / rate)).astype(np.int16)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y) + 1e-9))


def test_a_lost_opus_packet_is_rebuilt_from_the_next_packets_fec() -> None:
    # RFC 6716 §2.1.7: a sender asked for `useinbandfec=1` (our fmtp) puts a low-rate copy of
    # each frame in the next packet; the receive side plays it when a packet is lost and the
    # next one is already buffered (the jitter buffer's delay), PLC only when it is not
    assert "useinbandfec=1" in (CODECS["opus"].fmtp or "")
    assert wants_fec("maxplaybackrate=24000; useinbandfec=1") and not wants_fec("useinbandfec=0")
    frames = 100
    pcm = _glide(960 * frames, 48000)
    tx = OpusCodec(20, fec=True)
    packets = [tx.encode(pcm[960 * k : 960 * (k + 1)]) for k in range(frames)]
    lost = set(range(7, frames - 1, 9))

    def receive(with_next: bool) -> tuple[list[np.ndarray], OpusCodec]:
        tx_session, rx_session = _pair("opus", 111)
        dec = OpusCodec(20)
        out: list[np.ndarray] = []
        for k, payload in enumerate(packets):
            datagram = tx_session.packetize(payload, 0.02 * k)
            assert datagram is not None
            if k not in lost:
                rx_session.receive_datagram(datagram, B, 0.02 * k + 0.001)
            frame = rx_session.read_frame(0.02 * k + 0.002)
            if frame is None:
                continue
            # the leg's rule (SipLeg.tick): a lost frame with the next payload at hand
            following = rx_session.next_payload() if with_next and not frame else None
            out.append(dec.decode(frame, following) if not frame else dec.decode(frame))
        return out, dec

    clean_dec = OpusCodec(20)
    clean = [clean_dec.decode(p) for p in packets]
    with_fec, dec = receive(True)
    plc_only, _ = receive(False)
    assert dec.fec_frames >= len(lost) - 1  # all but maybe one lost before playout began
    # which packet each played frame is (the jitter buffer's start-up delay shifts them): the
    # shift under which frames around no loss match the clean decode best
    offset = max(
        range(-5, 6),
        key=lambda s: sum(_correlation(with_fec[i], clean[i + s]) for i in range(20, 25)),
    )
    scores_fec, scores_plc = [], []
    for k in sorted(lost):
        i = k - offset
        if 0 <= i < len(with_fec) and i < len(plc_only):
            scores_fec.append(_correlation(with_fec[i], clean[k]))
            scores_plc.append(_correlation(plc_only[i], clean[k]))
    assert len(scores_fec) >= len(lost) - 2
    # FEC plays (nearly) what was sent; PLC only extrapolates (seen: medians 0.9996 and 0.54)
    assert np.median(scores_fec) > 0.95 and np.median(scores_plc) < 0.8, (scores_fec, scores_plc)
    better = sum(f > p + 0.05 for f, p in zip(scores_fec, scores_plc, strict=True))
    assert better >= len(scores_fec) // 2, (scores_fec, scores_plc)


_AUDIO_RATE = {"pcmu": 8000, "g722": 16000, "opus": 48000}


@settings(max_examples=15, deadline=None)
@given(
    before=st.sampled_from(["pcmu", "g722", "opus"]),
    after=st.sampled_from(["pcmu", "g722", "opus"]),
    switch_at=st.integers(6, 30),
)
def test_a_codec_switch_at_any_frame_loses_at_most_one_frame(
    before: str, after: str, switch_at: int
) -> None:
    """A re-INVITE between any two of our codecs, at any frame (both sides apply the new SDP
    between two ticks, the receiver's coder follows as SipLeg.media_updated does): the tone
    goes on at its pitch with at most one 20 ms frame missing, on each codec's own RTP clock."""
    from telcodecs import ulaw_decode, ulaw_encode

    tx, rx = _pair(before)
    frames: list[tuple[str, np.ndarray]] = []
    codec = before
    enc, dec = codec_for(codec, 20), codec_for(codec, 20)
    for k in range(switch_at + 25):
        now = 0.02 * k
        if k == switch_at:
            codec = after
            tx.update_remote(B, codec, 101, 20)
            rx.update_remote(A, codec, 101, 20)
            enc, dec = codec_for(codec, 20), codec_for(codec, 20)
        rate = _AUDIO_RATE[codec]
        pcm = tone(1000, rate // 50, rate, rate // 50 * k)
        payload = enc.encode(pcm) if enc is not None else ulaw_encode(pcm)
        datagram = tx.packetize(payload, now)
        assert datagram is not None
        rx.receive_datagram(datagram, B, now + 0.001)
        frame = rx.read_frame(now + 0.002)
        if frame is None:
            continue
        frames.append((codec, dec.decode(frame) if dec is not None else ulaw_decode(frame)))
    played = [pcm for name, pcm in frames[-24:] if name == after]  # after the switch
    rms = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in played]
    assert sum(r < 500 for r in rms) <= 1, rms
    tail = np.concatenate(played[-10:])
    assert abs(peak_hz(tail, _AUDIO_RATE[after]) - 1000) < 25
