"""Shared fixtures for the Realtime tests: the official openai SDK models as the schema."""

from __future__ import annotations

import pytest

from tests.support.realtime_schema import Conformance


@pytest.fixture
def conform() -> Conformance:
    return Conformance()
