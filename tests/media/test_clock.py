"""The media clock on a real event loop: grid pacing, slot spreading, stall handling."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.media.clock import MediaClock, Outbox
from tests.support.simloop import SimulatedTimeLoop


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        self.ticks.append((now, deadline))


class Sender:
    """A leg that queues one datagram per tick and records when it was really sent."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        self.log.append(f"tick {self.name}")
        outbox.add(self.send, self.name.encode())

    def send(self, datagram: bytes) -> None:
        if self.fail:
            raise OSError("socket closed")
        self.log.append(f"send {datagram.decode()}")


async def test_deadlines_are_an_absolute_grid_per_slot() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period_ms=20, slots=4)
    legs = [Recorder() for _ in range(8)]
    for leg in legs:
        clock.add(leg)
    await asyncio.sleep(0.5)
    clock.close()
    for leg in legs:
        deadlines = [d for _, d in leg.ticks]
        assert len(deadlines) >= 20
        steps = {round(b - a, 6) for a, b in itertools.pairwise(deadlines)}
        assert steps == {0.02}, steps  # no drift: every deadline exactly one period apart
    # eight legs over four slots: two per slot, and slots are 5 ms apart
    firsts = sorted({round(leg.ticks[0][1] - legs[0].ticks[0][1], 6) for leg in legs})
    assert firsts == [0.0, 0.005, 0.01, 0.015]


def _stalled_clock(stall_s: float, max_catch_up: int) -> tuple[MediaClock, Recorder, float]:
    """A one-slot 20 ms clock on simulated time, whose loop is blocked for `stall_s` after
    0.1 s (time passes, nothing runs), then runs 0.1 s more. Returns (clock, leg, stall end)."""
    loop = SimulatedTimeLoop()
    try:
        clock = MediaClock(loop, period_ms=20, slots=1, max_catch_up=max_catch_up)
        leg = Recorder()
        clock.add(leg)
        loop.advance(0.1)
        loop.jump(stall_s)  # the loop was blocked: every tick in between is overdue
        stall_end = loop.time()
        loop.advance(0.1)
        clock.close()
    finally:
        loop.close()
    return clock, leg, stall_end


def test_a_long_stall_skips_ahead_instead_of_bursting() -> None:
    clock, leg, stall_end = _stalled_clock(0.31, max_catch_up=2)  # 15 frames overdue
    t0 = leg.ticks[0][1]
    grid = [round((deadline - t0) / 0.02, 6) for _, deadline in leg.ticks]
    assert all(g == int(g) for g in grid)  # every deadline stays on the grid
    burst = [(now, deadline) for now, deadline in leg.ticks if now == stall_end]
    # the late burst is the frame now due plus at most `max_catch_up` overdue ones
    assert len(burst) == 3
    assert [round(stall_end - d, 6) for _, d in burst] == [0.05, 0.03, 0.01]
    frames = [int(g) for g in grid]
    assert frames[: frames.index(18)] == [0, 1, 2, 3, 4, 5]  # frames 6..17 were skipped
    after = leg.ticks[frames.index(18) :]
    assert [int(g) for g in grid[frames.index(18) :]] == list(range(18, 18 + len(after)))
    assert all(now == deadline for now, deadline in after[3:])  # back on time after the burst
    assert clock.stalls == 1


def test_a_short_stall_is_caught_up_in_full() -> None:
    clock, leg, stall_end = _stalled_clock(0.09, max_catch_up=5)  # 4 frames overdue
    t0 = leg.ticks[0][1]
    frames = [round((deadline - t0) / 0.02, 6) for _, deadline in leg.ticks]
    assert frames == list(range(len(frames)))  # no frame skipped: a late burst, no loss
    burst = [deadline for now, deadline in leg.ticks if now == stall_end]
    assert [round(stall_end - d, 6) for d in burst] == [0.07, 0.05, 0.03, 0.01]
    assert clock.stalls == 0


async def test_remove_stops_the_timer() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period_ms=20, slots=2)
    leg = Recorder()
    clock.add(leg)
    await asyncio.sleep(0.05)
    clock.remove(leg)
    n = len(leg.ticks)
    await asyncio.sleep(0.06)
    assert len(leg.ticks) == n
    assert len(clock) == 0


async def test_bulk_work_waits_for_an_overdue_tick() -> None:
    from gateway.media.clock import MediaClocks

    loop = asyncio.get_running_loop()
    clocks = MediaClocks(loop)
    clock = clocks.for_ptime(20)
    leg = Recorder()
    clock.add(leg)
    await asyncio.sleep(0.05)
    assert not clock.overdue()
    time.sleep(0.03)  # the loop is busy past the next deadline
    assert clock.overdue()
    ticks_before = clock.ticks
    await clocks.yield_to_media()  # returns only once the due ticks have run
    assert clock.ticks > ticks_before and not clock.overdue()
    waiter = asyncio.ensure_future(clock.next_tick())
    clocks.close()
    await asyncio.wait_for(waiter, 1)  # closing releases anyone waiting


def _lateness_count() -> float:
    family = next(iter(metrics.RTP_SEND_LATENESS.collect()))
    return next(s.value for s in family.samples if s.name.endswith("_count"))


async def test_a_slot_sends_after_every_leg_has_ticked_and_counts_each_packet() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period_ms=20, slots=1)
    log: list[str] = []
    legs = [Sender("a", log), Sender("b", log, fail=True), Sender("c", log)]
    before = _lateness_count()
    for leg in legs:
        clock.add(leg)
    await clock.next_tick()
    clock.close()
    # every tick first, then the sends back to back; the failing socket does not stop "c"
    assert log[:5] == ["tick a", "tick b", "tick c", "send a", "send c"], log
    assert _lateness_count() - before == 2  # one observation per packet actually sent


async def test_a_late_sub_tick_is_logged_with_whether_the_process_was_busy() -> None:
    """A sub-tick held up 80 ms is logged once, with its cause read from the process's CPU time
    since the sub-tick before: a spin on the loop is `busy`; a blocking sleep on it (as when the
    core is taken away: the process does not run) is `off_cpu`. A second one within
    LATE_LOG_EVERY_S is counted, not logged."""
    import structlog

    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period_ms=20, slots=1)
    leg = Recorder()
    clock.add(leg)

    def spin() -> None:  # 80 ms of this process's CPU, however long the core takes to give it
        end = time.process_time() + 0.08
        while time.process_time() < end:
            pass

    def block() -> None:
        time.sleep(0.08)

    async def hold_up(how: Callable[[], None]) -> list[dict[str, Any]]:
        await asyncio.sleep(0.05)  # a few on-time ticks first
        with structlog.testing.capture_logs() as logs:
            n = len(leg.ticks)
            loop.call_soon(how)
            while len(leg.ticks) < n + 3:
                await asyncio.sleep(0.01)
        return [e for e in logs if e["event"] == "media_clock_late"]

    try:
        [busy] = await hold_up(spin)
        assert busy["late_ms"] >= 40 and busy["process_cpu_ms"] >= 75, busy
        # `busy` unless another process held the core for over half the window (a loaded CI)
        shared = busy["process_cpu_ms"] < 0.5 * busy["since_last_tick_ms"]
        assert busy["cause"] == ("off_cpu" if shared else "busy"), busy
        assert busy["calls"] == 1 and busy["unlogged"] == 0
        assert await hold_up(block) == []  # within LATE_LOG_EVERY_S: counted only
        clock._next_late_log = 0.0  # the next line may go now
        [waiting] = await hold_up(block)
        assert waiting["cause"] == "off_cpu" and waiting["late_ms"] >= 40, waiting
        assert waiting["process_cpu_ms"] < 20  # asleep: the 80 ms cost no CPU
        assert waiting["unlogged"] >= 1
    finally:
        clock.close()


async def test_each_tick_runs_in_its_own_call_s_log_context() -> None:
    """The clock is started by the first call's leg, inside that call's log context; each
    ticker's tick runs in the context it was added in (its own call's id on what it logs), and
    the clock itself in none (a ticker added outside any call sees no call's id)."""
    import structlog

    from gateway.logs import bind_call

    seen: dict[str, list[dict[str, Any]]] = {"first": [], "second": [], "none": []}

    class ContextRecorder(Recorder):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
            seen[self.name].append(structlog.contextvars.get_contextvars())

    clock = MediaClock(asyncio.get_running_loop(), period_ms=20, slots=2)
    try:
        with bind_call("first-call", "sip", "local"):
            clock.add(ContextRecorder("first"))
        with bind_call("second-call", "webrtc", "openai"):
            clock.add(ContextRecorder("second"))
        clock.add(ContextRecorder("none"))
        await asyncio.sleep(0.07)
        assert all(seen.values()), seen
        assert {c["call_id"] for c in seen["first"]} == {"first-call"}
        assert {(c["call_id"], c["leg"]) for c in seen["second"]} == {("second-call", "webrtc")}
        assert all(c == {} for c in seen["none"]), seen["none"][:3]
    finally:
        clock.close()
