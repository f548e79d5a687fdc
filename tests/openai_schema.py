"""The strict part of checking events against the openai SDK's pydantic models: the SDK's models
allow extra fields, so a misspelt field passes validation unless `model_extra` is walked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel


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
