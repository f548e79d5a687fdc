"""PortPool bookkeeping and FrameDeadlines arithmetic (sans-I/O)."""

from __future__ import annotations

import pytest

from gateway.errors import PortsExhausted
from gateway.rtp.pacer import FrameDeadlines
from gateway.rtp.ports import PortPool


def test_pool_hands_out_even_ports_with_room_for_rtcp() -> None:
    pool = PortPool(10001, 10008)
    ports = [pool.acquire() for _ in range(pool.size)]
    assert ports == [10002, 10004, 10006]  # 10008 has no 10009 in range
    assert all(p % 2 == 0 and p + 1 <= 10008 for p in ports)
    with pytest.raises(PortsExhausted, match="10001-10008"):
        pool.acquire()
    assert pool.exhausted == 1


def test_release_reuses_least_recently_used_and_double_release_is_counted() -> None:
    pool = PortPool(20000, 20009)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    pool.release(a)
    assert pool.double_releases == 1 and pool.in_use == 1 and a not in pool and b in pool
    # the released port goes to the back: the three never-used ones come first
    assert [pool.acquire() for _ in range(4)] == [20004, 20006, 20008, a]


@pytest.mark.parametrize(("lo", "hi"), [(0, 10), (5000, 4000), (10001, 10001), (1, 70000)])
def test_bad_ranges(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        PortPool(lo, hi)


def test_deadlines_are_absolute() -> None:
    d = FrameDeadlines(start=100.0, period=0.02)
    assert d.take(99.99) == 0
    assert d.take(100.0) == 1 and d.last_lateness == 0.0
    assert d.next_deadline == pytest.approx(100.02)
    # a tick 7 ms late does not shift later deadlines (no drift)
    assert d.take(100.027) == 1 and d.last_lateness == pytest.approx(0.007)
    assert d.next_deadline == pytest.approx(100.04)


def test_short_stall_catches_up_long_stall_skips_ahead() -> None:
    d = FrameDeadlines(start=0.0, period=0.02, max_burst=2)
    d.take(0.0)
    assert d.take(0.041) == 2 and d.skipped == 0  # frames 1 and 2, a small catch-up
    assert d.take(0.505) == 2  # frames 3..25 due: 21 skipped, the last 2 sent
    assert d.skipped == 21
    assert d.next_deadline == pytest.approx(0.52)
    assert d.last_lateness == pytest.approx(0.025)


def test_reset_restarts_the_grid() -> None:
    d = FrameDeadlines(start=0.0, period=0.03)
    d.take(1.0)
    d.reset(5.0)
    assert d.next_deadline == 5.0 and d.take(5.0) == 1
    with pytest.raises(ValueError):
        FrameDeadlines(0.0, 0.0)
