"""Shared fixtures for the call tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.realtime.local.server import LocalProvider


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    """The local provider (no espeak), recording the frames it receives."""
    p = LocalProvider(use_espeak=False, record_frames=True)
    await p.start()
    yield p
    await p.stop()
