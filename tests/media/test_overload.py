"""The overload gate (issue 20) on simulated time: no event loop, `now` passed in."""

from __future__ import annotations

from gateway.media.overload import (
    CPU_HYSTERESIS,
    MIN_YOUNG_WEIGHT,
    CpuShareWindow,
    LatenessWindow,
    OverloadGate,
)

SLOT = 0.005  # a clock sub-tick: 4 slots per 20 ms


def feed(
    gate: OverloadGate, start: float, seconds: float, lateness: float, per_slot: int = 25
) -> float:
    """Slots every 5 ms from `start` for `seconds`, each sending `per_slot` packets `lateness`
    late; the gate is updated every 250 ms like the clock does. Returns the end time."""
    now = start
    next_update = start
    while now < start + seconds:
        gate.observe(now, lateness, per_slot)
        if now >= next_update:
            gate.update(now)
            next_update = now + 0.25
        now += SLOT
    return now


def test_window_p99_follows_the_tail_and_forgets_it_after_the_span() -> None:
    window = LatenessWindow(slice_s=0.25, slices=8)
    for i in range(990):
        window.observe(i * 0.001, 0.0008)
    for i in range(10):
        window.observe(0.99 + i * 0.001, 0.021)
    assert window.quantile(1.0, 0.50) == 0.001
    assert window.quantile(1.0, 0.99) == 0.001  # 1% at 21 ms: the 99th rank is still on time
    window.observe(1.0, 0.021, 20)
    assert window.quantile(1.0, 0.99) == 0.025  # the bucket's upper bound: rounds up
    assert window.packets(1.0) == 1020
    # 2 s later every slice has aged out, with no observation in between
    assert window.quantile(3.1, 0.99) == 0.0
    assert window.packets(3.1) == 0


def test_the_gate_enters_overload_when_the_p99_passes_the_threshold() -> None:
    gate = OverloadGate(0.015, hold_s=5.0, min_packets=500)
    now = feed(gate, 0.0, 3.0, 0.002)
    assert not gate.overloaded and gate.p99 == 0.002
    now = feed(gate, now, 0.3, 0.030)  # a few hundred ms of 30 ms lateness: > 1% of the window
    assert gate.overloaded
    assert gate.p99 >= 0.03


def test_few_packets_are_no_overload() -> None:
    gate = OverloadGate(0.015, hold_s=5.0, min_packets=500)
    feed(gate, 0.0, 3.0, 0.050, per_slot=1)  # 1 packet per slot: 400 in the window
    assert not gate.overloaded
    assert gate.p99 > 0.015


def test_leaving_needs_half_the_threshold_held_for_the_hold_time() -> None:
    gate = OverloadGate(0.015, hold_s=5.0, min_packets=500)
    now = feed(gate, 0.0, 2.0, 0.040)
    assert gate.overloaded
    # below the threshold but above half of it: stays overloaded however long it lasts
    now = feed(gate, now, 10.0, 0.010)
    assert gate.overloaded and gate.p99 == 0.01
    # below half: the window needs 2 s to forget the 10 ms slots, then 5 s of hold
    calm_from = now
    now = feed(gate, now, 6.0, 0.001)
    assert gate.overloaded  # 2 s to clear the window + 5 s hold > 6 s
    now = feed(gate, now, 1.5, 0.001)
    assert not gate.overloaded
    assert now - calm_from >= 2.0 + 5.0 - 0.5


def test_a_late_spike_during_the_hold_restarts_it() -> None:
    gate = OverloadGate(0.015, hold_s=5.0, min_packets=500)
    now = feed(gate, 0.0, 2.0, 0.040)
    now = feed(gate, now, 6.0, 0.001)  # the window cleared, 4 s into the hold
    assert gate.overloaded
    now = feed(gate, now, 0.1, 0.040)  # a spike: above half the threshold again
    assert gate.overloaded
    now = feed(gate, now, 4.0, 0.001)  # would have been enough without the spike
    assert gate.overloaded
    now = feed(gate, now, 4.0, 0.001)
    assert not gate.overloaded


def test_zero_turns_the_gate_off() -> None:
    gate = OverloadGate(0.0)
    feed(gate, 0.0, 3.0, 0.100)
    assert not gate.enabled
    assert not gate.update(3.0)
    assert not gate.overloaded


def test_update_reports_each_change_once() -> None:
    gate = OverloadGate(0.015, hold_s=1.0, min_packets=10)
    for i in range(400):
        gate.observe(i * SLOT, 0.05, 25)
    assert gate.update(2.0) is True
    assert gate.update(2.1) is False
    assert gate.overloaded
    # nothing observed since: the window empties at 4.0, the hold ends a second after
    assert gate.update(4.1) is False
    assert gate.update(5.2) is True
    assert not gate.overloaded


def run_busy(gate: OverloadGate, start: float, seconds: float, share: float, cpu: float) -> float:
    """Samples every 250 ms of a process using `share` of a core (CPU seconds from `cpu`), the
    clock on time; returns the CPU seconds at the end. The gate is updated at each sample."""
    now = start
    while now < start + seconds:
        gate.observe_cpu(now, cpu)
        gate.observe(now, 0.001, 25)
        gate.update(now)
        now += 0.25
        cpu += share * 0.25
    return cpu


def test_cpu_share_window_spans_its_samples_and_forgets_old_ones() -> None:
    window = CpuShareWindow(span_s=2.0, min_span_s=0.5)
    assert window.share() is None
    window.observe(0.0, 10.0)
    window.observe(0.25, 10.1)
    assert window.share() is None  # under min_span_s
    for i in range(2, 9):  # 40% of a core up to t=2.0
        window.observe(i * 0.25, 10.0 + 0.4 * i * 0.25)
    assert abs((window.share() or 0) - 0.4) < 1e-9
    for i in range(9, 17):  # then 90% for two seconds: the 40% ages out
        window.observe(i * 0.25, 10.8 + 0.9 * (i - 8) * 0.25)
    assert abs((window.share() or 0) - 0.9) < 1e-9
    window.observe(4.0, 0.0)  # the same instant again: ignored
    assert abs((window.share() or 0) - 0.9) < 1e-9


def test_the_gate_refuses_on_cpu_share_before_lateness_shows() -> None:
    """The lagging-lateness case: the clock is on time (1 ms) while the core fills up; the CPU
    half trips as the share passes its threshold, and admits again only once it has been
    CPU_HYSTERESIS below it for the hold time."""
    gate = OverloadGate(0.015, hold_s=5.0, min_packets=500, cpu_threshold=0.7)
    cpu = run_busy(gate, 0.0, 3.0, 0.5, 100.0)
    assert not gate.overloaded and abs(gate.cpu_share - 0.5) < 0.01
    cpu = run_busy(gate, 3.0, 1.5, 0.9, cpu)
    assert gate.overloaded and gate.reason == "cpu"
    assert gate.p99 == 0.001  # lateness never passed its threshold
    # just under the threshold is not calm: the share must fall below 0.7 - CPU_HYSTERESIS
    cpu = run_busy(gate, 4.5, 8.0, 0.7 - CPU_HYSTERESIS / 2, cpu)
    assert gate.overloaded
    cpu = run_busy(gate, 12.5, 4.0, 0.4, cpu)  # calm, but not for 5 s yet
    assert gate.overloaded
    run_busy(gate, 16.5, 3.0, 0.4, cpu)
    assert not gate.overloaded


def test_the_cpu_half_alone_and_either_half_off() -> None:
    cpu_only = OverloadGate(0.0, cpu_threshold=0.6)
    assert cpu_only.enabled
    run_busy(cpu_only, 0.0, 3.0, 0.8, 0.0)
    assert cpu_only.overloaded and cpu_only.reason == "cpu"
    lateness_only = OverloadGate(0.015)  # cpu_threshold 0: CPU is not even sampled
    run_busy(lateness_only, 0.0, 3.0, 1.0, 0.0)
    assert not lateness_only.overloaded and lateness_only.cpu.share() is None
    assert not OverloadGate(0.0).enabled


async def test_the_monitor_feeds_the_gate_this_process_cpu_time() -> None:
    """The I/O half: `OverloadMonitor` samples `time.process_time()` at each update, so a
    process that keeps its core busy is refused new calls by the CPU half alone (the lateness
    half is off), and the share is exported."""
    import asyncio
    import time

    from gateway import metrics
    from gateway.media.clock import OverloadMonitor

    loop = asyncio.get_running_loop()
    gate = OverloadGate(0.0, hold_s=5.0, cpu_threshold=0.3)
    monitor = OverloadMonitor(loop, gate)
    assert not monitor.overloaded()  # one sample: no share yet
    spin_until = time.monotonic() + 0.8
    while time.monotonic() < spin_until:  # CPU work, not a sleep: the share is the point
        sum(range(1000))
    await asyncio.sleep(0)  # loop.time() moves on (uvloop caches it per pass)
    assert monitor.overloaded()
    assert gate.reason == "cpu" and gate.cpu_share > 0.3
    assert metrics.PROCESS_CPU_SHARE._value.get() == gate.cpu_share


def offer_calls_at_20_per_s(gate: OverloadGate, ramp_s: float = 1.0) -> list[float]:
    """400 calls offered at 20/s (refused ones are not retried); an admitted call's cost grows
    linearly from nothing to 0.4% of a core over `ramp_s` (set-up, then its media), so 175
    mature calls make 70%. Simulated for 40 s; returns the admission times."""
    per_call = 0.004
    admitted: list[float] = []
    cpu, now, offered = 0.0, 0.0, 0
    while now < 40.0:
        gate.observe_cpu(now, cpu)
        gate.observe(now, 0.001, 25)
        if offered < 400 and now >= offered * 0.05:
            offered += 1
            gate.update(now, len(admitted))
            if not gate.overloaded:
                admitted.append(now)
                gate.admitted(now)
        else:
            gate.update(now, len(admitted))
        share = sum(per_call * min(1.0, (now - t) / ramp_s) for t in admitted)
        now += 0.05
        cpu += share * 0.05
    return admitted


def test_the_cpu_half_projects_young_calls_so_a_burst_does_not_overshoot() -> None:
    """At 20 calls a second the share (a 2 s average) trails the admitted calls' cost: the plain
    share admits calls until their mature cost is past the threshold; counting each young call
    at its whole cost keeps the mature total under it."""
    plain = OverloadGate(0.0, cpu_threshold=0.7, young_s=0.0)  # no projection
    overshoot = len(offer_calls_at_20_per_s(plain))
    assert overshoot * 0.004 > 0.8  # 206 calls: 82% of the core once mature

    gate = OverloadGate(0.0, cpu_threshold=0.7)  # young_s 4 s
    admitted = offer_calls_at_20_per_s(gate)
    assert 0.6 < len(admitted) * 0.004 <= 0.7  # mature cost: under the threshold, not starved
    assert gate.cpu_share <= 0.7 and gate.overloaded  # the rest offered were refused


def test_the_projection_is_near_the_share_when_calls_arrive_slowly() -> None:
    gate = OverloadGate(0.0, cpu_threshold=0.7, young_s=4.0)
    for i in range(100):  # one call a second for 100 s
        gate.admitted(float(i))
    cpu = run_busy(gate, 99.0, 2.0, 0.5, 0.0)
    gate.observe_cpu(101.0, cpu)
    gate.update(101.0, 100)
    # admitted at 98 and 99 (97 is exactly young_s old at 101), in the share for 3/4 and 2/4
    # of their cost: 100 calls' cost measured as 98 + 1.25
    assert gate.young_weight(101.0) == (2, 1.25)
    assert abs(gate.cpu_projected - 0.5 * 100 / 99.25) < 1e-9
    assert not gate.overloaded
    # a call admitted just now weighs MIN_YOUNG_WEIGHT, not nothing
    gate.admitted(101.0)
    assert gate.young_weight(101.0) == (3, 1.25 + MIN_YOUNG_WEIGHT)
