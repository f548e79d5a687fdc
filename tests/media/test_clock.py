"""The media clock on a real event loop: grid pacing, slot spreading, stall handling."""

from __future__ import annotations

import asyncio
import itertools
import time

from gateway import metrics
from gateway.media.clock import MediaClock, Outbox


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
