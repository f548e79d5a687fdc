"""Checking events against the openai SDK's pydantic models (`Conformance`), strictly: the SDK's
models allow extra fields, so a misspelt field passes validation unless `model_extra` is walked
(`extras`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel

try:
    from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
    from pydantic import Field, TypeAdapter
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise RuntimeError("openai SDK missing: pip install -e '.[dev]'") from exc

_CLIENT = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])
_SERVER = TypeAdapter(Annotated[RealtimeServerEvent, Field(discriminator="type")])


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
