"""Shared fixtures for the Realtime tests: the official openai SDK models as the schema."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
import structlog

from gateway.logs import configure
from tests.openai_schema import extras

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


@pytest.fixture
def conform() -> Conformance:
    return Conformance()


@pytest.fixture
def log_lines() -> Iterator[Callable[[], str]]:
    """The gateway's JSON logs at debug level into a buffer; returns a reader."""
    buf = io.StringIO()
    configure("json", "debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    yield buf.getvalue
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))
