"""Scenarios: per-call event handlers keyed by event class, and loading a user's scenario file.

A scenario is a Python file that defines `setup(call)` (sync or async). It registers handlers
with `call.on(EventClass, handler)` for call events and `call.realtime.on(EventClass, handler)`
for Realtime server events, and uses the call's actions. Handlers are sync or async, and run
one at a time, in registration order, per call. An exception in a handler is logged with the
call's id and does not end the call.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.logs import get_logger

if TYPE_CHECKING:
    from gateway.call.call import Call

log = get_logger("call.scenario")

E = TypeVar("E")
Handler = Callable[[E], Awaitable[None] | None]
ScenarioSetup = Callable[["Call"], Awaitable[None] | None]


class EventBus:
    """Handlers by event class, run in order by one dispatcher task per call."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self._handlers: dict[type, list[Callable[[Any], Any]]] = {}
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False

    def on(self, event_type: type[E], handler: Handler[E]) -> None:
        """Call `handler(event)` for every event of `event_type` (subclasses included)."""
        self._handlers.setdefault(event_type, []).append(handler)

    def off(self, event_type: type[E], handler: Handler[E] | None = None) -> None:
        """Remove `handler`, or every handler of `event_type`."""
        if handler is None:
            self._handlers.pop(event_type, None)
        elif handler in self._handlers.get(event_type, []):
            self._handlers[event_type].remove(handler)

    def wants(self, event_type: type) -> bool:
        """True when some handler would receive events of `event_type`."""
        return any(cls in self._handlers for cls in event_type.__mro__)

    def emit(self, event: object) -> None:
        """Queue `event` for the dispatcher; never blocks, never runs a handler inline."""
        if not self._closed and self.wants(type(event)):
            self._queue.put_nowait(event)

    def close(self) -> None:
        self._closed = True

    def clear(self) -> None:
        """Forget every handler and queued event (the call is over)."""
        self._closed = True
        self._handlers.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def dispatch_forever(self) -> None:
        """Run handlers for queued events until cancelled."""
        while True:
            event = await self._queue.get()
            await self.dispatch(event)

    async def dispatch(self, event: object) -> None:
        """Run every handler of `event` now, in order; log and swallow handler errors."""
        handlers: list[Callable[[Any], Any]] = []
        for cls in type(event).__mro__:
            handlers.extend(self._handlers.get(cls, ()))
        for handler in handlers:
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "scenario_handler_failed",
                    call_id=self.call_id,
                    event_type=type(event).__name__,
                    handler=getattr(handler, "__qualname__", repr(handler)),
                )


def load_scenario(path: str | Path) -> ScenarioSetup:
    """Import a scenario file and return its `setup(call)` function."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"gateway_scenario_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"scenario {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setup = getattr(module, "setup", None)
    if not callable(setup):
        raise ValueError(f"scenario {path}: defines no setup(call) function")
    return setup  # type: ignore[no-any-return]
