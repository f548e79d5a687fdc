"""PortPool bookkeeping (sans-I/O)."""

from __future__ import annotations

import pytest

from gateway.errors import PortsExhausted
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
