"""Per-call progress events (dialing, ringing, answered, tool calls, ended, failed) for
`GET /calls/{id}/events` and `gateway call`.

Each call keeps its short history, so a subscriber that comes late gets it replayed; a
finished call's history is kept for a while (a bounded number of calls), so a client that
connects after a quick rejection still learns how the call ended.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any

#: the event types that end a call's stream
TERMINAL = frozenset({"ended", "failed"})
MAX_EVENTS_PER_CALL = 256
MAX_FINISHED_CALLS = 512


class _Channel:
    __slots__ = ("changed", "done", "events")

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = False
        self.changed = asyncio.Event()


class CallProgress:
    """Progress events by call id; publishing never blocks (off the media path: signalling,
    tool results and the call's end publish)."""

    def __init__(self) -> None:
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def known(self, call_id: str) -> bool:
        return call_id in self._channels

    def publish(self, call_id: str, event: str, **fields: Any) -> None:
        """Append `event` (with `fields`) to the call's history and wake its subscribers."""
        channel = self._channels.get(call_id)
        if channel is None:
            channel = self._channels[call_id] = _Channel()
            self._trim()
        if channel.done:
            return
        if len(channel.events) < MAX_EVENTS_PER_CALL or event in TERMINAL:
            channel.events.append({"event": event, "call_id": call_id, **fields})
        channel.done = event in TERMINAL
        channel.changed.set()
        channel.changed = asyncio.Event()

    def _trim(self) -> None:
        finished = [cid for cid, ch in self._channels.items() if ch.done]
        for call_id in finished[: max(0, len(finished) - MAX_FINISHED_CALLS)]:
            del self._channels[call_id]

    async def follow(self, call_id: str) -> AsyncGenerator[dict[str, Any], None]:
        """The call's events so far, then each new one, until its terminal event."""
        sent = 0
        while True:
            channel = self._channels.get(call_id)
            if channel is None:
                return
            while sent < len(channel.events):
                sent += 1
                yield channel.events[sent - 1]
            if channel.done:
                return
            await channel.changed.wait()


def failure_outcome(status: int) -> str:
    """How an unanswered outbound call ended, from the final SIP status (0: no response):
    `busy` (486, 600), `no_answer` (408, 480, 487, none), else `rejected` (RFC 3261 §21)."""
    if status in (486, 600):
        return "busy"
    if status in (0, 408, 480, 487):
        return "no_answer"
    return "rejected"
