"""The refusal log: one line per refused request, at most one line per source per window.

A refused SIP request or WebRTC offer is logged with its source address, method, status and
reason token (never headers, bodies or credentials). Under a flood the first refusal of a source
is logged at once; the ones after it within `window` seconds are counted, and when the window
ends one summary line carries the count by reason, which opens the next window. So a source
costs at most one line per window, and a flood from many addresses at most `max_sources + 1`
lines per window (sources beyond that share one `other` entry).

`RefusalLog` is the sans-I/O core (time passed in, summaries returned as data);
`RefusalLogger` is its asyncio glue: it writes the lines and arms one loop timer for the next
summary. The SIP transport and the WebRTC offer route each own one.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

OTHER = "other"


@dataclass(slots=True)
class _Window:
    until: float
    suppressed: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Refusals from `source` counted but not logged during the window that just ended."""

    source: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RefusalLog:
    """Decides which refusals are logged: `refused()` says whether to log this one now,
    `due(now)` returns the summaries whose window has ended, `next_due()` when the next is."""

    def __init__(self, window: float = 10.0, max_sources: int = 256) -> None:
        self.window = window
        self.max_sources = max_sources
        # ordered by window end: windows all last `window`, and a renewed one moves to the end
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def refused(self, source: str, reason: str, now: float) -> bool:
        """Record one refusal; True means log it now, False that it was counted for later."""
        window = self._windows.get(source)
        if window is None and len(self._windows) >= self.max_sources:
            source = OTHER
            window = self._windows.get(OTHER)
        if window is None:
            self._windows[source] = _Window(now + self.window)
            return True
        window.suppressed[reason] += 1
        return False

    def due(self, now: float, *, all_windows: bool = False) -> list[RefusalSummary]:
        """Summaries of the windows ended by `now` (of every window: `all_windows`, at
        shutdown); a summary line opens the next window."""
        out: list[RefusalSummary] = []
        while self._windows:
            source, window = next(iter(self._windows.items()))
            if window.until > now and not all_windows:
                break
            del self._windows[source]
            if window.suppressed:
                out.append(RefusalSummary(source, dict(window.suppressed)))
                if not all_windows:
                    self._windows[source] = _Window(now + self.window)
        return out

    def next_due(self) -> float | None:
        """When the oldest window ends, None when no window is open."""
        for window in self._windows.values():
            return window.until
        return None

    def __len__(self) -> int:
        return len(self._windows)


class RefusalLogger:
    """Writes a `RefusalLog`'s lines to `logger`: `{prefix}_refused` for a refusal logged at
    once, `{prefix}_refusals_suppressed` with `count` and `reasons` for a window's summary."""

    def __init__(self, logger: Any, prefix: str, window: float = 10.0) -> None:
        self.log = RefusalLog(window)
        self._logger = logger
        self._prefix = prefix
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, source: str, reason: str, **fields: Any) -> None:
        """One refusal: `fields` are short, bounded values (method, status), never secrets."""
        loop = asyncio.get_running_loop()
        if self.log.refused(source, reason, loop.time()):
            self._logger.info(f"{self._prefix}_refused", source=source, reason=reason, **fields)
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            when = self.log.next_due()
            if when is not None:
                self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        self._write(self.log.due(loop.time()))
        self._arm(loop)

    def _write(self, summaries: list[RefusalSummary]) -> None:
        for summary in summaries:
            self._logger.info(
                f"{self._prefix}_refusals_suppressed",
                source=summary.source,
                count=summary.total,
                reasons=summary.counts,
                window_s=self.log.window,
            )

    def close(self) -> None:
        """Cancel the timer and write the counts not summarised yet (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write(self.log.due(0.0, all_windows=True))
