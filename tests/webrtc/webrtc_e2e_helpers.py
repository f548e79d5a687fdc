"""Shared pieces of the end-to-end WebRTC tests through the whole gateway (local provider): a
recording scenario around the default one, what the provider received, and polling."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from telcodecs import Resampler

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import DtmfReceived
from gateway.realtime import events as rt
from gateway.realtime.local.engine import LocalEngine


@dataclass
class ScenarioRecorder:
    """The default scenario, plus a record of what it saw: the calls, DTMF from the leg, and
    the audio the model sent per conversation item (in the session's output format)."""

    calls: list[Call] = field(default_factory=list)
    dtmf: list[DtmfReceived] = field(default_factory=list)
    audio: dict[str, bytearray] = field(default_factory=dict)
    item_order: list[str] = field(default_factory=list)

    def setup(self, call: Call) -> None:
        default_setup(call)
        self.calls.append(call)
        call.on(DtmfReceived, self.dtmf.append)
        call.realtime.on(rt.AudioDelta, self._on_audio)

    def _on_audio(self, event: rt.AudioDelta) -> None:
        if event.item_id not in self.audio:
            self.audio[event.item_id] = bytearray()
            self.item_order.append(event.item_id)
        self.audio[event.item_id] += event.audio

    def item_pcm(self, item_id: str) -> NDArray[np.int16]:
        return np.frombuffer(bytes(self.audio[item_id]), dtype=np.int16)


def provider_input(engine: LocalEngine) -> tuple[int, NDArray[np.int16]]:
    """(rate, PCM16) of every `input_audio_buffer.append` the provider received, in order;
    needs `record_frames`. The rate is the one the gateway asked for in `session.update`."""
    assert engine.received is not None, "record_frames was not on when the session began"
    rate = 0
    chunks: list[bytes] = []
    for frame in list(engine.received):
        event: dict[str, Any] = json.loads(frame)
        if event.get("type") == "session.update":
            fmt = event["session"].get("audio", {}).get("input", {}).get("format") or {}
            if fmt:
                assert fmt.get("type") == "audio/pcm", fmt
                rate = int(fmt["rate"])
        elif event.get("type") == "input_audio_buffer.append":
            chunks.append(base64.b64decode(event["audio"]))
    assert rate, "the gateway never set the input format"
    return rate, np.frombuffer(b"".join(chunks), dtype=np.int16)


def resample(pcm: NDArray[np.int16], src: int, dst: int) -> NDArray[np.int16]:
    """`pcm` at `dst` Hz (telcodecs, whole signal)."""
    if src == dst:
        return pcm
    resampler = Resampler(src, dst)
    out = np.concatenate([resampler.process(pcm), resampler.flush()])
    return np.asarray(out, dtype=np.int16)


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float, what: str
) -> Any:
    """Poll `check` (sync or async) every 50 ms until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
