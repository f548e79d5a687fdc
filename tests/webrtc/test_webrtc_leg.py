"""WebRtcLeg pieces that need no network: frame conversion, page messages, events, closing."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from av import AudioFrame

from gateway.legs.webrtc.leg import FRAME_BYTES, WebRtcLeg
from gateway.media.format import PCM16_48K
from gateway.media.port import DtmfReceived
from gateway.webrtc.ice import IcePolicy
from tests.support.audio import best_abs_correlation, chirp
from tests.support.webrtc import EchoSink


def _frame(samples: np.ndarray, fmt: str, layout: str, rate: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


class FakeChannel:
    """Stands in for aiortc's RTCDataChannel (its open/closed states and send)."""

    label = "events"

    def __init__(self) -> None:
        self.readyState = "connecting"
        self.bufferedAmount = 0
        self.sent: list[str] = []
        self.handlers: dict[str, object] = {}

    def on(self, name: str, handler: object) -> None:
        self.handlers[name] = handler

    def send(self, text: str) -> None:
        assert self.readyState == "open"
        self.sent.append(text)


async def test_leg_contract_and_conversions() -> None:
    leg = WebRtcLeg(IcePolicy())
    try:
        assert leg.leg == "webrtc" and leg.native == PCM16_48K and leg.frame_ms == 20
        assert leg.g711_passthrough is None
        left = chirp(0.02)
        right = (left // 2).astype(np.int16)
        packed = np.stack([left, right], axis=1).reshape(1, -1)
        out = np.frombuffer(leg._mono48k(_frame(packed, "s16", "stereo", 48000)), np.int16)
        expected = ((left.astype(np.int32) + right) >> 1).astype(np.int16)
        assert np.array_equal(out, expected)
        planar = np.stack([left, right])
        out = np.frombuffer(leg._mono48k(_frame(planar, "s16p", "stereo", 48000)), np.int16)
        assert np.array_equal(out, expected)
        mono = left.reshape(1, -1)
        out = np.frombuffer(leg._mono48k(_frame(mono, "s16", "mono", 48000)), np.int16)
        assert np.array_equal(out, left)
    finally:
        await leg.aclose()


async def test_g711_rate_frames_are_resampled_to_48k() -> None:
    leg = WebRtcLeg(IcePolicy())
    try:
        sweep = chirp(0.5, 300, 3000)
        tone8k = sweep[::6].copy()  # the same sweep at 8 kHz (all of it is below 4 kHz)
        out = b"".join(
            leg._mono48k(_frame(tone8k[i : i + 160].reshape(1, -1), "s16", "mono", 8000))
            for i in range(0, len(tone8k), 160)
        )
        pcm = np.frombuffer(out, np.int16)
        assert len(pcm) == len(tone8k) * 6
        assert best_abs_correlation(pcm, sweep[2400:21600]) > 0.9  # back at 48 kHz, intact
    finally:
        await leg.aclose()


async def test_page_messages_events_and_ending() -> None:
    ended: list[str] = []
    leg = WebRtcLeg(IcePolicy(), on_ended=lambda _leg, reason: ended.append(reason))
    sink = EchoSink()
    # events before attach are kept and delivered at attach
    leg._on_page_message(json.dumps({"type": "dtmf", "digit": "7"}))
    leg.attach(sink)
    assert sink.events == [DtmfReceived("7", "datachannel")]
    with pytest.raises(RuntimeError):
        leg.attach(sink)
    for junk in (
        "{",
        "[]",
        '{"type": "dtmf", "digit": "55"}',
        '{"type": "dtmf"}',
        42,
        "x" * 5000,
        '{"type": "unknown"}',
    ):
        leg._on_page_message(junk)
    assert len(sink.events) == 1

    # page events wait for the channel to open, then go out in order
    channel = FakeChannel()
    leg.send_event({"type": "state", "state": "thinking"})
    leg._on_datachannel(channel)
    leg.send_dtmf("9#")
    assert channel.sent == []
    channel.readyState = "open"
    channel.handlers["open"]()  # type: ignore[operator]
    leg.send_event({"type": "call", "call_id": "c"})
    assert [json.loads(m) for m in channel.sent] == [
        {"type": "state", "state": "thinking"},
        {"type": "dtmf", "digits": "9#"},
        {"type": "call", "call_id": "c"},
    ]

    # a bridge pull of the wrong size is fixed up, an exception becomes silence
    sink.pull = lambda now: b"\x01\x02"  # type: ignore[method-assign]
    assert leg._pull(0.0) == b"\x01\x02" + bytes(FRAME_BYTES - 2)

    def broken(now: float) -> bytes | None:
        raise RuntimeError("bridge bug")

    sink.pull = broken  # type: ignore[method-assign]
    assert leg._pull(0.0) == bytes(FRAME_BYTES)

    # the page hangs up: one LegEnded, however many signals follow
    leg._on_page_message('{"type": "hangup"}')
    leg._on_page_message('{"type": "hangup"}')
    assert sink.ended() == ["remote_hangup"]
    assert ended == ["remote_hangup"]
    await leg.aclose()
    await leg.aclose()
    assert leg.connection_state == "closed"
    assert sink.ended() == ["remote_hangup"]
    leg.send_event({"type": "late"})  # ignored after close
    assert len(channel.sent) == 3


async def test_aclose_without_remote_hangup_reports_closed_once() -> None:
    ended: list[str] = []
    leg = WebRtcLeg(IcePolicy(), on_ended=lambda _leg, reason: ended.append(reason))
    sink = EchoSink()
    leg.attach(sink)
    await leg.aclose()
    await leg.aclose()
    assert ended == ["closed"]
    assert sink.ended() == []  # the bridge closed it: no LegEnded back to the bridge


async def test_outbound_frames_are_paced_on_the_grid_and_skip_a_stall() -> None:
    leg = WebRtcLeg(IcePolicy())
    track = leg._track
    try:
        frames = [await track.recv() for _ in range(6)]
        t0 = time.monotonic()
        frames += [await track.recv() for _ in range(5)]
        # paced: five 20 ms frames take about 80 ms or more (uvloop's timers round to 1 ms)
        assert time.monotonic() - t0 >= 0.075
        time.sleep(0.5)  # the loop stalls for 25 frames
        t1 = time.monotonic()
        frames += [await track.recv() for _ in range(6)]
        # one frame at once, then paced again: no burst of the 25 missed frames
        assert time.monotonic() - t1 >= 0.075
        # the timestamps run on without a gap, frame after frame
        assert [f.pts for f in frames] == [960 * i for i in range(len(frames))]
        assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    finally:
        await leg.aclose()
