"""What the local Realtime provider received from the gateway, read from its sessions' recorded
frames (`LocalProvider(record_frames=True)`, or `options.record_frames` set before a session
begins)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.realtime.local.engine import LocalEngine
from gateway.realtime.local.server import LocalProvider


def client_frames(provider: LocalProvider) -> list[dict[str, Any]]:
    """Every client event of every session, decoded, in order."""
    return [json.loads(f) for e in provider.sessions for f in e.received or []]


def client_events(engine: LocalEngine, kind: str) -> list[dict[str, Any]]:
    """Client events of type `kind` one provider session received."""
    out = []
    for frame in engine.received or []:
        obj: dict[str, Any] = json.loads(frame)
        if obj.get("type") == kind:
            out.append(obj)
    return out


def sent_client_events(provider: LocalProvider, kind: str) -> list[dict[str, Any]]:
    """Client events of type `kind` over all of the provider's sessions, session by session."""
    return [event for engine in provider.sessions for event in client_events(engine, kind)]


def appended_audio(engine: LocalEngine) -> bytes:
    """Every `input_audio_buffer.append` the provider session received."""
    out = bytearray()
    for frame in engine.received or []:
        obj: dict[str, Any] = json.loads(frame)
        if obj.get("type") == "input_audio_buffer.append":
            out += base64.b64decode(obj["audio"])
    return bytes(out)


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
