"""A call is freed by reference counting alone when it ends (no cyclic-GC pass needed), and the
GC policy keeps full collections away while calls are live."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from pathlib import Path

from gateway import metrics
from gateway.call.call import Call
from gateway.call.default_scenario import setup
from gateway.call.manager import CallManager
from gateway.gcpolicy import GcPauseTimer, GcPolicy
from gateway.legs.sip.leg import SipLeg
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import speech_like
from tests.support.gateway import assert_nothing_leaked, run_sipp, running_gateway
from tests.support.memory_call import open_call


async def test_ended_call_is_freed_without_the_cyclic_collector() -> None:
    provider = LocalProvider(use_espeak=False)
    await provider.start()
    gc.collect()
    gc.disable()
    try:
        call, m = await open_call(provider)
        task = CallManager(2).start(call, setup)
        await asyncio.sleep(0.4)
        m.leg.say(speech_like(1.0))
        await asyncio.sleep(1.8)  # a turn, an echo, handlers, the recorder-free path
        await call.hangup()
        await task
        refs = [weakref.ref(call), weakref.ref(m.leg), weakref.ref(call.playout)]
        del call, m, task
        await asyncio.sleep(0.2)
        assert [r() is None for r in refs] == [True, True, True]
    finally:
        gc.enable()
        await provider.stop()


class _Node:
    next: object = None


def test_gc_policy_collects_only_when_idle() -> None:
    live = [3]
    policy = GcPolicy(lambda: live[0], idle_collect_growth=50)
    gc.collect()
    gc.freeze()
    frozen_before = gc.get_freeze_count()
    policy._blocks_after_collect = sys.getallocatedblocks()
    garbage = [_Node() for _ in range(100)]  # a ring: only the GC frees it
    for a, b in zip(garbage, garbage[1:] + garbage[:1], strict=True):
        a.next = b
    policy.step()
    assert policy.full_collections == 0  # calls live: freeze only, no full pass
    assert gc.get_freeze_count() >= frozen_before + 100
    ring = weakref.ref(garbage[0])
    del garbage, a, b
    live[0] = 3
    policy.step()
    assert ring() is not None  # cyclic garbage waits, frozen, while calls are live
    live[0] = 0
    policy.step()
    assert policy.full_collections == 1  # idle: collect what was frozen
    assert ring() is None
    gc.unfreeze()


async def test_ended_sip_call_leaves_nothing_to_the_cyclic_collector(tmp_path: Path) -> None:
    """A real SIP call (sipp, RTP both ways) through the whole gateway: once it has ended, its
    leg, RTP endpoint and session are gone by reference counting alone (issue 13, item 6)."""
    refs: list[weakref.ref[object]] = []

    def scenario(call: Call) -> None:
        setup(call)
        leg = call.leg
        assert isinstance(leg, SipLeg)
        refs.extend(weakref.ref(o) for o in (leg, leg.rtp, leg.rtp.session))

    async with running_gateway(scenario) as gw:
        await run_sipp(gw, tmp_path, scenario="e2e_pcap_short.xml")  # warm every code path
        await assert_nothing_leaked(gw)
        refs.clear()
        gc.collect()
        gc.disable()
        try:
            _sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_pcap_short.xml", calls=3)
            assert result.successful_calls == 3, result.explain()
            await assert_nothing_leaked(gw)
            await asyncio.sleep(0.1)
            assert len(refs) == 9
            alive = [type(r()).__name__ for r in refs if r() is not None]
            assert alive == []
        finally:
            gc.enable()


def test_every_collector_pass_is_timed_by_generation() -> None:
    timer = GcPauseTimer()
    child = metrics.GC_PAUSE.labels(generation="1")
    before = sum(child.snapshot()[0])
    gc.callbacks.append(timer)
    try:
        gc.collect(1)
        gc.collect(1)
    finally:
        gc.callbacks.remove(timer)
    counts, total_s = child.snapshot()
    assert sum(counts) == before + 2
    assert total_s > 0


def test_gc_policy_collects_with_calls_live_only_past_the_forced_growth() -> None:
    policy = GcPolicy(lambda: 5, idle_collect_growth=10, forced_collect_growth=20_000)
    gc.collect()
    policy._blocks_after_collect = sys.getallocatedblocks()
    garbage = [_Node() for _ in range(30_000)]
    for a, b in zip(garbage, garbage[1:] + garbage[:1], strict=True):
        a.next = b
    ring = weakref.ref(garbage[0])
    del garbage, a, b
    policy.step()
    assert policy.full_collections == 1  # grown past the forced limit: collected, calls or not
    assert ring() is None
    gc.unfreeze()
