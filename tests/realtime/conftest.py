"""Shared fixtures for the Realtime tests: the official openai SDK models as the schema."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator

import pytest
import structlog

from gateway.logs import configure
from tests.support.realtime_schema import Conformance


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
