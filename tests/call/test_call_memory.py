"""A call is freed by reference counting alone when it ends (no cyclic-GC pass needed), and the
GC policy keeps full collections away while calls are live."""

from __future__ import annotations

import asyncio
import gc
import weakref

from gateway.call.default_scenario import setup
from gateway.call.manager import CallManager
from gateway.gcpolicy import GcPolicy
from gateway.realtime.local.server import LocalProvider
from tests.call.test_bridge import _open_call, speech_like


async def test_ended_call_is_freed_without_the_cyclic_collector() -> None:
    provider = LocalProvider(use_espeak=False)
    await provider.start()
    gc.collect()
    gc.disable()
    try:
        call, m = await _open_call(provider)
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
    policy = GcPolicy(lambda: live[0], idle_collect_growth=10)
    gc.collect()
    gc.freeze()
    policy._frozen_after_collect = gc.get_freeze_count()
    garbage = [_Node() for _ in range(100)]  # a ring: only the GC frees it
    for a, b in zip(garbage, garbage[1:] + garbage[:1], strict=True):
        a.next = b
    policy.step()
    assert policy.full_collections == 0  # calls live: freeze only, no full pass
    assert gc.get_freeze_count() >= policy._frozen_after_collect + 100
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
