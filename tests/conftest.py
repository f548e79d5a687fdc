"""The event loops async tests run on (pytest-asyncio's `pytest_asyncio_loop_factories` hook).

`gateway serve` runs on uvloop, whose transports are not `asyncio.Transport` subclasses and
which refuses things the default loop lets through (`sendto` to a host name, say). So these
async tests run twice, with the ids `[uvloop]` and `[asyncio]`:
- every one under `TRANSPORT_DIRS`: they move bytes through the gateway's own sockets
  in-process (the SIP transport, the RTP endpoint, the Realtime client, WebRTC, the media
  clock's sends);
- every one in a module that uses `tests.support.gateway.running_gateway` (the in-process
  end-to-end tests: SIP phones, the call API, Yandex over SIP and WebRTC).

A module there whose gateway is a child process (`GatewayProcess`, always on uvloop, as users
run it) opts out with `pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])`. Every
other async test runs on the default loop only: it uses no socket of the gateway's, so a
second loop would add time and no coverage.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import structlog
import uvloop

from gateway.logs import configure
from gateway.realtime.local.server import LocalProvider

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

TRANSPORT_DIRS = frozenset({"sip", "rtp", "realtime", "webrtc", "media"})
BOTH_LOOPS: Mapping[str, LoopFactory] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
DEFAULT_LOOP: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}


def on_both_loops(config: pytest.Config, item: pytest.Item) -> bool:
    """Whether `item` runs on uvloop and on the default loop (see the module's docstring)."""
    parts = item.path.relative_to(config.rootpath).parts
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in TRANSPORT_DIRS:
        return True
    return hasattr(getattr(item, "module", None), "running_gateway")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    return BOTH_LOOPS if on_both_loops(config, item) else DEFAULT_LOOP


@pytest.fixture
def log_lines() -> Iterator[Callable[[], str]]:
    """The gateway's JSON logs at debug level into a buffer; returns a reader."""
    buf = io.StringIO()
    configure("json", "debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    yield buf.getvalue
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    """The local provider (no espeak), recording the frames it receives; a module that needs
    another flavour (Yandex, a token, a pace) defines its own `provider`."""
    p = LocalProvider(use_espeak=False, record_frames=True)
    await p.start()
    yield p
    await p.stop()
