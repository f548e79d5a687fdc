"""The media clock on a real event loop: grid pacing, slot spreading, stall handling."""

from __future__ import annotations

import asyncio
import itertools
import time

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
