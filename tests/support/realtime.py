"""The Realtime client against a provider in tests: a phone-like session (`PHONE`: G.711 u-law
both ways, server VAD that answers and interrupts, the end_call tool), caller audio as u-law,
and reading a client's event stream (`next_of`, `collect_response_audio`)."""

from __future__ import annotations

import asyncio
import audioop
from typing import Any

import numpy as np

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient
from gateway.realtime.events import SessionConfig, TurnDetection

PHONE = SessionConfig(
    instructions="test",
    voice="marin",
    input_format=PCMU_8K,
    output_format=PCMU_8K,
    turn_detection=TurnDetection(create_response=True, interrupt_response=True),
    tools=(ev.function_tool("end_call"),),
)


def speech_ulaw(ms: int, seed: int) -> bytes:
    """`ms` of loud seeded noise as G.711 u-law at 8 kHz (the local provider hears speech)."""
    rng = np.random.default_rng(seed)
    pcm = np.clip(rng.standard_normal(8 * ms) * 6000, -32768, 32767).astype("<i2")
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def silence_ulaw(ms: int) -> bytes:
    """`ms` of G.711 u-law silence at 8 kHz."""
    return b"\xff" * (8 * ms)


async def next_of(rt: RealtimeClient, kind: type[ev.ServerEvent], timeout: float = 5.0) -> Any:
    """The next server event of type `kind` (those before it are consumed)."""

    async def find() -> Any:
        async for e in rt.events():
            if isinstance(e, kind):
                return e
        raise AssertionError(f"stream ended before {kind.__name__}")

    return await asyncio.wait_for(find(), timeout)


async def collect_response_audio(rt: RealtimeClient, timeout: float = 5.0) -> tuple[bytes, Any]:
    """The audio of the next response and its `ResponseDone`."""
    audio = bytearray()

    async def run() -> Any:
        async for e in rt.events():
            if isinstance(e, ev.AudioDelta):
                audio.extend(e.audio)
            elif isinstance(e, ev.ResponseDone):
                return e
        raise AssertionError("stream ended")

    done = await asyncio.wait_for(run(), timeout)
    return bytes(audio), done
