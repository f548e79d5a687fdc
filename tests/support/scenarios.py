"""Scenarios that run the default one and record what each call saw, for end-to-end tests.

- `CallLog`: the calls, DTMF digits, hold changes (with the loop time) and how each call ended;
- `ScenarioRecorder`: the calls, DTMF events, and the audio the model sent per conversation item
  (in the session's output format).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import CallEnded, DtmfReceived, HoldChanged
from gateway.realtime import events as rt


@dataclass
class CallLog:
    """A scenario wrapping the default one that records what each call saw."""

    calls: list[Call] = field(default_factory=list)
    dtmf: list[tuple[str, str, str]] = field(default_factory=list)  # (call id, digit, source)
    hold: list[tuple[str, bool, float]] = field(default_factory=list)
    ended: dict[str, CallEnded] = field(default_factory=dict)

    def setup(self, call: Call) -> None:
        default_setup(call)
        self.calls.append(call)
        loop = asyncio.get_running_loop()

        def on_dtmf(ev: DtmfReceived) -> None:
            self.dtmf.append((call.id, ev.digit, ev.source))

        def on_hold(ev: HoldChanged) -> None:
            self.hold.append((call.id, ev.on_hold, loop.time()))

        def on_ended(ev: CallEnded) -> None:
            self.ended[call.id] = ev

        call.on(DtmfReceived, on_dtmf)
        call.on(HoldChanged, on_hold)
        call.on(CallEnded, on_ended)

    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.ended.values()]


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
