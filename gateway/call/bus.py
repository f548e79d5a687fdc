"""The call's event bus: handlers by event class, run in order by one dispatcher task per call.

Leg events, the call's own events and Realtime server events are all emitted here (never
blocking, never running a handler inline) and handed to the scenario's handlers by the call's
dispatcher task. An exception in a handler is logged with the call's id and does not end the
call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.errors import UnknownEventName
from gateway.logs import get_logger

log = get_logger("call.scenario")

E = TypeVar("E")
Handler = Callable[[E], Awaitable[None] | None]


class EventBus:
    """Handlers by event class, run in order by one dispatcher task per call."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self._handlers: dict[type, list[Callable[[Any], Any]]] = {}
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False

    def on(self, event_type: type[E], handler: Handler[E]) -> None:
        """Call `handler(event)` for every event of `event_type` (subclasses included).
        UnknownEventName for anything but a class (names are resolved by the callers,
        `Call.on` and `call.realtime.on`), TypeError for a handler that cannot be called."""
        if not isinstance(event_type, type):
            raise UnknownEventName(f"not an event class: {event_type!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
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
