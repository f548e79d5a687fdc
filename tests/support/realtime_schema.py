"""Checking Realtime events against the openai SDK's pydantic models, strictly: the SDK's models
allow extra fields, so a misspelt field passes validation unless `model_extra` is walked
(`extras`). `Conformance` checks OpenAI traffic, `YandexConformance` Yandex traffic.

The Yandex profile (`YandexConformance`): the openai SDK's Realtime models plus Yandex AI
Studio's documented differences, and nothing more.

Each documented difference is patched back to the OpenAI shape at its exact place, after its own
check, and the result is validated with the SDK's TypeAdapters; `model_extra` is then walked so a
misspelt or invented field still fails. The differences (shared/reference/realtime-protocol.md):

* `session.created` / `session.updated` (and the client's `session.update`) carry no
  `session.type`;
* output audio is `audio/pcm` at 44100 Hz (session objects and `response.audio.output.format`);
* `session.audio.input.languages` (list of strings) and `session.audio.output.role` (string);
* `conversation.item.input_audio_transcription.completed` has no `usage`.

Anything else that departs from the SDK models fails, as it would for OpenAI traffic.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel

try:
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from pydantic import Field, TypeAdapter
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise RuntimeError("openai SDK missing: pip install -e '.[dev]'") from exc

_CLIENT: TypeAdapter[Any] = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])
_SERVER: TypeAdapter[Any] = TypeAdapter(Annotated[RealtimeServerEvent, Field(discriminator="type")])


class Conformance:
    """Validates events against openai.types.realtime (pydantic) and rejects unknown fields."""

    def __init__(self) -> None:
        self.checked = 0

    def _check(self, adapter: TypeAdapter[Any], event: str | dict[str, Any]) -> None:
        data = json.loads(event) if isinstance(event, str) else event
        model = adapter.validate_python(data)
        unknown = list(extras(model, data.get("type", "?")))
        assert not unknown, f"fields unknown to the SDK schema: {unknown}"
        self.checked += 1

    def client(self, event: str | dict[str, Any]) -> None:
        self._check(_CLIENT, event)

    def server(self, event: str | dict[str, Any]) -> None:
        self._check(_SERVER, event)


def extras(obj: Any, path: str) -> Iterator[str]:
    """Paths of fields the SDK model did not know (misspelt or invented fields)."""
    if isinstance(obj, BaseModel):
        for name in obj.model_extra or {}:
            yield f"{path}.{name}"
        for name in type(obj).model_fields:
            yield from extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list | tuple):
        for i, x in enumerate(obj):
            yield from extras(x, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from extras(v, f"{path}.{k}")


# --- the Yandex profile ------------------------------------------------------------------------

_SESSION_EVENTS = ("session.created", "session.updated", "session.update")
_RESPONSE_EVENTS = ("response.created", "response.done")
_TRANSCRIPTION_DONE = "conversation.item.input_audio_transcription.completed"


class YandexSchemaError(AssertionError):
    """A Yandex event departs from the OpenAI models in an undocumented way."""


def _output_rate_to_openai(fmt: Any) -> None:
    """Yandex's 44.1 kHz output: the only PCM rate allowed besides OpenAI's 24 kHz."""
    if isinstance(fmt, dict) and fmt.get("type") == "audio/pcm" and fmt.get("rate") == 44100:
        fmt["rate"] = 24000


def _patch_session(session: Any, where: str) -> None:
    if not isinstance(session, dict):
        return
    session.setdefault("type", "realtime")
    audio = session.get("audio")
    if not isinstance(audio, dict):
        return
    a_in, a_out = audio.get("input"), audio.get("output")
    if isinstance(a_in, dict) and "languages" in a_in:
        langs = a_in.pop("languages")
        if not (isinstance(langs, list) and all(isinstance(x, str) for x in langs)):
            raise YandexSchemaError(f"{where}: audio.input.languages must be a list of strings")
    if isinstance(a_out, dict):
        if "role" in a_out:
            role = a_out.pop("role")
            if not isinstance(role, str):
                raise YandexSchemaError(f"{where}: audio.output.role must be a string")
        _output_rate_to_openai(a_out.get("format"))


def to_openai_shape(event: dict[str, Any], *, server: bool) -> dict[str, Any]:
    """A copy of a Yandex event with exactly the documented differences patched away."""
    data = copy.deepcopy(event)
    kind = data.get("type")
    if kind in _SESSION_EVENTS:
        _patch_session(data.get("session"), str(kind))
    elif server and kind in _RESPONSE_EVENTS:
        response = data.get("response")
        if isinstance(response, dict):
            out = (response.get("audio") or {}).get("output")
            if isinstance(out, dict):
                _output_rate_to_openai(out.get("format"))
    elif server and kind == _TRANSCRIPTION_DONE:
        data.setdefault("usage", {"type": "duration", "seconds": 0.0})
    return data


class YandexConformance:
    """Validates Yandex traffic: `server(frame)`, `client(frame)`; counts what it checked."""

    def __init__(self) -> None:
        self.checked = 0

    def _check(self, adapter: TypeAdapter[Any], frame: str | dict[str, Any], server: bool) -> None:
        data = json.loads(frame) if isinstance(frame, str) else frame
        model = adapter.validate_python(to_openai_shape(data, server=server))
        unknown = list(extras(model, str(data.get("type", "?"))))
        if unknown:
            raise YandexSchemaError(f"fields unknown to the SDK schema: {unknown}")
        self.checked += 1

    def server(self, frame: str | dict[str, Any]) -> None:
        self._check(_SERVER, frame, server=True)

    def client(self, frame: str | dict[str, Any]) -> None:
        self._check(_CLIENT, frame, server=False)
