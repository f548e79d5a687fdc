"""One media clock per packet time per process: a single timer services every call in one pass.

Per-call `sleep(0.02)` loops drift and, at hundreds of calls, cost thousands of timer wake-ups.
Instead each `MediaClock` keeps an absolute grid `t0 + n * period / slots` (a `DeadlineGrid`)
on the loop's monotonic clock. A leg is placed in the least loaded of `slots` phase slots, so the
packets of hundreds of calls are spread over the packet time instead of leaving in one burst. At
each sub-tick the clock calls `tick(now, deadline)` on the legs of that slot; the leg sends its
packet and records how late it left against `deadline`.

Legs do not send from inside `tick()`: they put their datagram in the slot's `Outbox`, and the
clock sends the whole slot back to back once every leg has run. A receiver that sleeps between
packets (a phone, an SBC, anything on loopback) is then woken once per slot instead of once per
packet; on loopback, where the sender pays for the receiver's wake-up, that halves the cost of a
send (4.5 → 2.2 µs per packet in a two-process test on this machine). Send lateness is recorded
per slot with the count of packets it sent: they all left at the same loop time.

After a stall (a blocked loop) the grid catches up at most `max_catch_up` frames per leg and
then jumps ahead: a phone plays late audio worse than a short gap.

Each slot's send lateness also feeds the process's `OverloadMonitor` (issue 20): while its p99
over the last 2 s is above `overload_lateness_ms`, new calls are refused (`CallManager`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable
from typing import Protocol

from gateway import metrics
from gateway.logs import get_logger
from gateway.media.grid import DeadlineGrid
from gateway.media.overload import OverloadGate

log = get_logger("media.clock")
_SEND_LATENESS = metrics.RTP_SEND_LATENESS


class Outbox:
    """The datagrams of one clock slot, sent back to back after every leg of the slot has run."""

    __slots__ = ("_sends",)

    def __init__(self) -> None:
        self._sends: list[tuple[Callable[[bytes], None], bytes]] = []

    def add(self, send: Callable[[bytes], None], datagram: bytes) -> None:
        """Queue `datagram` for `send` (a bound socket send) at the end of the slot."""
        self._sends.append((send, datagram))

    def __len__(self) -> int:
        return len(self._sends)

    def flush(self) -> int:
        """Send everything queued, in order; returns how many were sent. One failing send
        (a socket closed under us) is logged and does not stop the others."""
        sends = self._sends
        sent = 0
        for send, datagram in sends:
            try:
                send(datagram)
                sent += 1
            except Exception:
                log.exception("media_send_failed")
        sends.clear()
        return sent


class OverloadMonitor:
    """The overload gate on the loop: fed each slot's lateness, re-estimated every
    `check_every_s` while a clock runs and on each `overloaded()` (an admission, /readyz).
    Entering and leaving overload log one line each (at most one per `log_every_s`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        gate: OverloadGate,
        check_every_s: float = 0.25,
        log_every_s: float = 10.0,
    ) -> None:
        self._loop = loop
        self.gate = gate
        self._check_every = check_every_s
        self._next_check = 0.0
        self._log_every = log_every_s
        self._next_log = 0.0
        self._unlogged = 0  # transitions not logged since the last line
        #: called with the new state on each change (the SIP OPTIONS answer follows it)
        self.on_change: list[Callable[[bool], None]] = []
        #: how many calls are in progress (set up or live): the CPU projection's base
        self.calls_in_progress: Callable[[], int] = lambda: 0

    def observe(self, now: float, lateness_s: float, count: int) -> None:
        """One slot's packets left `lateness_s` late (O(1); an update every `check_every_s`)."""
        gate = self.gate
        gate.observe(now, lateness_s, count)
        if now >= self._next_check:
            self._update(now)

    def overloaded(self) -> bool:
        """Re-estimate now; True while new calls should be refused."""
        if not self.gate.enabled:
            return False
        self._update(self._loop.time())
        return self.gate.overloaded

    def admitted(self) -> None:
        """A new call was admitted (the projection counts it as young)."""
        self.gate.admitted(self._loop.time())

    def _update(self, now: float) -> None:
        gate = self.gate
        self._next_check = now + self._check_every
        if not gate.enabled:
            return
        gate.observe_cpu(now, time.process_time())
        changed = gate.update(now, self.calls_in_progress())
        metrics.MEDIA_LATENESS_P99.set(gate.p99)
        metrics.PROCESS_CPU_SHARE.set(gate.cpu_share)
        metrics.PROCESS_CPU_PROJECTED.set(gate.cpu_projected)
        if not changed:
            return
        metrics.OVERLOADED.set(1 if gate.overloaded else 0)
        for callback in self.on_change:
            callback(gate.overloaded)
        if now < self._next_log:
            self._unlogged += 1
            return
        self._next_log = now + self._log_every
        event = "overload_entered" if gate.overloaded else "overload_left"
        log.warning(
            event,
            reason=gate.reason,
            lateness_p99_ms=round(gate.p99 * 1000, 1),
            threshold_ms=round(gate.threshold_s * 1000, 1),
            cpu_pct=round(gate.cpu_share * 100, 1),
            cpu_projected_pct=round(gate.cpu_projected * 100, 1),
            cpu_threshold_pct=round(gate.cpu_threshold * 100, 1),
            unlogged_changes=self._unlogged,
        )
        self._unlogged = 0


class Ticker(Protocol):
    """Something serviced once per packet time (a SIP leg)."""

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        """Take one frame in, produce one frame out into `outbox`; `deadline`: when it was due."""


#: a sub-tick this late is logged (`media_clock_late`, at most one line per LATE_LOG_EVERY_S)
LATE_LOG_S = 0.03
LATE_LOG_EVERY_S = 10.0


class MediaClock:
    """Ticks every registered `Ticker` once per `period_ms`, spread over `slots` phases.

    A sub-tick that runs more than `LATE_LOG_S` late is logged with why: the process's CPU time
    since the sub-tick before it says whether its own work held the loop (`cause: busy`) or it
    was not running (`off_cpu`: a blocking call on the loop, or the core taken by another
    process or the host)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        period_ms: int = 20,
        slots: int = 4,
        max_catch_up: int = 5,
        overload: OverloadMonitor | None = None,
    ) -> None:
        if period_ms <= 0 or slots <= 0:
            raise ValueError("period_ms and slots must be positive")
        self._loop = loop
        self.period = period_ms / 1000.0
        self.slots = slots
        # after a stall, at most `max_catch_up` frames (of every slot) are sent late
        self._grid = DeadlineGrid(self.period / slots, max_behind=max_catch_up * slots)
        # each ticker with the context it was added in (its call's log context)
        self._members: list[list[tuple[Ticker, contextvars.Context]]] = [[] for _ in range(slots)]
        self._where: dict[int, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self.ticks = 0
        self._tick_waiters: list[asyncio.Future[None]] = []
        self._outbox = Outbox()
        self._overload = overload
        self._context = contextvars.Context()
        self._last_run: tuple[float, float] | None = None  # (loop time, process CPU) s
        self._next_late_log = 0.0
        self._late_unlogged = 0

    def __len__(self) -> int:
        return len(self._where)

    @property
    def stalls(self) -> int:
        """Stalls the grid skipped ahead over instead of bursting."""
        return self._grid.stalls

    def add(self, ticker: Ticker) -> None:
        """Start servicing `ticker` from its slot's next deadline."""
        if id(ticker) in self._where:
            return
        slot = min(range(self.slots), key=lambda i: len(self._members[i]))
        self._members[slot].append((ticker, contextvars.copy_context()))
        self._where[id(ticker)] = slot
        if self._handle is None:
            self._grid.start(self._loop.time())
            # its own empty context, not that of the call whose leg started the clock (whose
            # call_id would be on every line the clock logs); each tick runs in its own call's
            self._handle = self._loop.call_at(self._grid.deadline, self._run, context=self._context)

    def overdue(self) -> bool:
        """True when a sub-tick is due and has not run: bulk work should wait for it."""
        if self._handle is None:
            return False
        # time.monotonic() shares the loop clock's base (CLOCK_MONOTONIC) but, unlike uvloop's
        # cached loop.time(), it moves during a long loop iteration.
        return time.monotonic() > self._grid.deadline

    async def next_tick(self) -> None:
        """Wait until the clock has serviced its next sub-tick (at once if it is stopped)."""
        if self._handle is None:
            return
        # One future per waiter (not a shared one): cancelling a waiter cancels only its own.
        waiter = self._loop.create_future()
        self._tick_waiters.append(waiter)
        await waiter

    def _wake_waiters(self) -> None:
        waiters = self._tick_waiters
        if waiters:
            self._tick_waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def remove(self, ticker: Ticker) -> None:
        """Stop servicing `ticker`; the timer stops when no ticker is left."""
        slot = self._where.pop(id(ticker), None)
        if slot is None:
            return
        members = self._members[slot]
        for i, (t, _context) in enumerate(members):
            if t is ticker:
                del members[i]
                break
        if not self._where and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._last_run = None
            self._wake_waiters()

    def close(self) -> None:
        """Stop the timer and forget every ticker."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._members = [[] for _ in range(self.slots)]
        self._where.clear()
        self._last_run = None
        self._wake_waiters()

    def _run(self) -> None:
        self._handle = None
        grid = self._grid
        now = self._loop.time()
        cpu = time.process_time()
        last, self._last_run = self._last_run, (now, cpu)
        if now - grid.deadline > LATE_LOG_S and last is not None:
            self._late(now - grid.deadline, now - last[0], cpu - last[1], now)
        deadline = grid.due(now)  # after a stall: skips whole sub-ticks rather than burst late
        members = self._members[grid.n % self.slots]
        outbox = self._outbox
        for ticker, context in list(members) if members else ():
            try:
                context.run(ticker.tick, now, deadline, outbox)
            except Exception:
                log.exception("media_tick_failed")
                self.remove(ticker)
        if outbox:
            sent = outbox.flush()
            if sent:
                lateness = max(0.0, self._loop.time() - deadline)
                _SEND_LATENESS.observe(lateness, sent)
                if self._overload is not None:
                    self._overload.observe(now, lateness, sent)
        self.ticks += 1
        nxt = grid.advance()
        self._wake_waiters()
        if self._where:
            self._handle = self._loop.call_at(nxt, self._run, context=self._context)

    def _late(self, late_s: float, since_s: float, cpu_s: float, now: float) -> None:
        if now < self._next_late_log:
            self._late_unlogged += 1
            return
        self._next_late_log = now + LATE_LOG_EVERY_S
        share = cpu_s / since_s if since_s > 0 else 1.0
        log.warning(
            "media_clock_late",
            late_ms=round(late_s * 1000, 1),
            since_last_tick_ms=round(since_s * 1000, 1),
            process_cpu_ms=round(cpu_s * 1000, 1),
            cause="busy" if share >= 0.5 else "off_cpu",
            calls=len(self._where),
            unlogged=self._late_unlogged,
        )
        self._late_unlogged = 0


class MediaClocks:
    """The process's clocks, one per packet time in use."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        slots_per_20ms: int = 4,
        overload: OverloadMonitor | None = None,
    ) -> None:
        self._loop = loop
        self._slots = slots_per_20ms
        #: the overload gate every clock feeds (None: no gate)
        self.overload = overload
        self._clocks: dict[int, MediaClock] = {}

    def for_ptime(self, ptime_ms: int) -> MediaClock:
        """The clock for `ptime_ms` packets (created on first use)."""
        clock = self._clocks.get(ptime_ms)
        if clock is None:
            slots = max(1, math.ceil(self._slots * ptime_ms / 20))
            clock = self._clocks[ptime_ms] = MediaClock(
                self._loop, ptime_ms, slots, overload=self.overload
            )
        return clock

    async def yield_to_media(self) -> None:
        """If a media tick is overdue, wait until it has run; otherwise return at once.

        Bulk work (a provider's burst of audio deltas) calls this before each message, so
        packets due to callers leave first: a single-threaded loop's only way to put media
        ahead. Checking before the work, not after, bounds what one loop pass can do once a
        deadline has passed to one message per task; returning at once when nothing is due
        costs no loop round trip."""
        for clock in self._clocks.values():
            for _ in range(2 * clock.slots * 5):  # bounded: a catch-up, not a starvation
                if not clock.overdue():
                    break
                await clock.next_tick()

    def close(self) -> None:
        for clock in self._clocks.values():
            clock.close()
        self._clocks.clear()
