"""The media clock on a real event loop: grid pacing, slot spreading, stall handling."""

from __future__ import annotations

import asyncio
import itertools
import time

from gateway.media.clock import MediaClock


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []

    def tick(self, now: float, deadline: float) -> None:
        self.ticks.append((now, deadline))


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


async def test_stall_skips_ahead_instead_of_bursting() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period_ms=20, slots=1, max_catch_up=2)
    leg = Recorder()
    clock.add(leg)
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # block the loop: 15 frames overdue
    before = len(leg.ticks)
    await asyncio.sleep(0.1)
    clock.close()
    burst = [now for now, _ in leg.ticks[before:] if now - leg.ticks[before][0] < 0.001]
    assert len(burst) <= 3
    assert clock.stalls >= 1


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
