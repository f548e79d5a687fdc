"""End to end with a pure-Python WebRTC client (aiortc, no ICE servers) through the whole gateway
and its local provider: a chirp said after the greeting reaches the model at the session rate and
comes back as its echo, recognisable by cross-correlation after Opus both ways.

The leg runs at 48 kHz and the session at 24 kHz, so this proves the resampling both ways: a
wrong rate or a broken resampler stretches or smears the chirp and the correlation collapses.
"""

from __future__ import annotations

import asyncio
import fractions
import json

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from numpy.typing import NDArray

from tests.support.audio import best_abs_correlation, chirp, resample
from tests.support.gateway import running_gateway
from tests.support.local_provider import provider_input
from tests.support.scenarios import ScenarioRecorder
from tests.support.waiting import eventually
from tests.support.webrtc import FRAME, RATE, Client


class GatedTrack(MediaStreamTrack):
    """Paced 20 ms frames of silence until `say()`, then the `pcm` it was given, then silence."""

    kind = "audio"

    def __init__(self, pcm: NDArray[np.int16]) -> None:
        super().__init__()
        self._pcm = pcm
        self._n = 0
        self._start: float | None = None
        self._said_at: int | None = None

    def say(self) -> None:
        self._said_at = self._n

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        data = np.zeros(FRAME, dtype=np.int16)
        if self._said_at is not None:
            pos = (self._n - self._said_at) * FRAME
            chunk = self._pcm[pos : pos + FRAME]
            data[: len(chunk)] = chunk
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = RATE
        frame.pts = self._n * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


async def test_chirp_after_the_greeting_comes_back_as_its_echo() -> None:
    reference = chirp(1.0)
    recorder = ScenarioRecorder()
    async with running_gateway(recorder.setup) as gw:
        assert gw.local_provider is not None and gw.webrtc is not None
        gw.local_provider.options.record_frames = True
        client = Client(np.zeros(0, np.int16))
        track = GatedTrack(reference)
        client.pc.getSenders()[0].replaceTrack(track)
        try:
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"http://127.0.0.1:{gw.http_port}/webrtc/offer",
                    json={"sdp": offer, "type": "offer"},
                )
                assert resp.status == 201, await resp.text()  # loopback, no token configured
                body = await resp.json()
            await client.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
            call_id = body["call_id"]
            assert [c.id for c in recorder.calls] == [call_id]
            call = recorder.calls[0]
            assert call.info.leg == "webrtc"

            # the greeting plays to its end (the client hears it), and only then the chirp
            (greeting,) = await eventually(lambda: recorder.item_order, 5.0, "the greeting")
            (engine,) = gw.local_provider.sessions
            await eventually(
                lambda: (
                    engine.stats["sent:response.done"] >= 1
                    and call.item_played_ms(greeting) >= call.item_audio_ms(greeting) > 500
                ),
                15.0,
                "the greeting played out",
            )
            assert engine.stats["speech_started"] == 0  # nothing was said during it
            heard_before = len(client.heard)
            track.say()

            # caller -> model: the chirp, resampled 48 -> 24 kHz, starts and ends a turn
            await eventually(lambda: engine.stats["committed"] >= 1, 5.0, "a committed turn")
            rate, heard_by_model = provider_input(engine)
            assert rate == 24000
            ref_model = resample(reference, RATE, rate)
            assert best_abs_correlation(heard_by_model, ref_model) >= 0.8

            # model -> caller: the echo, resampled 24 -> 48 kHz, comes back through Opus
            await eventually(
                lambda: engine.stats["sent:response.done"] >= 2, 5.0, "the echo response"
            )
            assert len(recorder.item_order) == 2
            echo_item = recorder.item_order[1]
            assert best_abs_correlation(recorder.item_pcm(echo_item), ref_model) >= 0.8
            await eventually(
                lambda: (
                    best_abs_correlation(np.concatenate(client.heard[heard_before:]), reference)
                    >= 0.8
                ),
                6.0,
                "the chirp's echo at the client",
            )
            assert call.item_played_ms(echo_item) > 900
            # the measurement tells signals apart: the chirp reversed is not in what was heard
            heard = np.concatenate(client.heard[heard_before:])
            assert best_abs_correlation(heard, reference[::-1].copy()) < 0.3

            # the page events channel told the client its call and the agent's state
            events = client.page_events
            assert {"type": "call", "call_id": call_id} in events
            assert {"type": "state", "state": "speaking"} in events
            assert {"type": "state", "state": "thinking"} in events

            # hang up from the client's data channel: the call ends and is released
            leg = gw.webrtc.calls[call_id]
            client.channel.send(json.dumps({"type": "hangup"}))
            await eventually(lambda: not gw.manager.calls, 5.0, "the call to end")
            await eventually(lambda: leg.connection_state == "closed", 5.0, "the leg closed")
            assert call.outcome is not None and not gw.webrtc.calls
        finally:
            await client.close()
