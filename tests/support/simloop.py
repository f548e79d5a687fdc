"""An asyncio loop on simulated time, for tests of whole components on real loopback sockets.

`SimulatedTimeLoop.time()` is a number the loop moves itself: whenever nothing is ready (no
callback queued, no socket readable), the clock jumps straight to the next timer instead of
sleeping. A 40 s SIP timer therefore costs only the work done on the way. Loopback traffic
between components of the same process is readable as soon as it is sent, so "nothing ready"
means the system is at rest until its next timer.

    loop = SimulatedTimeLoop()
    loop.run_until_complete(start())
    loop.advance(32.0)        # run everything due in the next 32 simulated seconds
    loop.close()

It runs on the default selector loop only (uvloop's clock cannot be replaced); tests of the
transports themselves run on real time, on both loops.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _SimulatedSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; a wait becomes a jump of the loop's clock."""

    def __init__(self, loop: SimulatedTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # nothing scheduled at all: only another thread can wake us (executor results)
            return self._real.select(0.01)
        self._loop.jump(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class SimulatedTimeLoop(asyncio.SelectorEventLoop):
    """The default selector loop with a clock that jumps over idle time."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        super().__init__(_SimulatedSelector(self))

    def time(self) -> float:
        return self._now

    def jump(self, seconds: float) -> None:
        """Move the clock forward (the loop calls this when it would otherwise wait)."""
        if seconds > 0:
            self._now += seconds

    def advance(self, seconds: float) -> None:
        """Run everything due within the next `seconds` of simulated time."""
        stop = self.create_future()
        handle = self.call_at(self._now + seconds, lambda: stop.done() or stop.set_result(None))
        try:
            self.run_until_complete(stop)
        finally:
            handle.cancel()
