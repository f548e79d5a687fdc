"""A scenario that makes the gateway's event loop late on purpose (issue 20's overload test).

While any call to `heavy` is up, one task blocks the loop with `time.sleep` for 30 ms of every
40 ms: real bulk work on the loop thread, as a saturated core would be, so every packet due
meanwhile leaves late and the media clock measures it. Calls to `busy` spin the CPU instead of
sleeping (the overload gate's CPU half). Other calls get the default scenario."""

from __future__ import annotations

import asyncio
import time

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup

BLOCK_S = 0.030
BREATHE_S = 0.010

_heavy_calls = 0
_blocker: asyncio.Task[None] | None = None


async def _block_loop(spin: bool) -> None:
    while _heavy_calls:
        if spin:  # busy: the core's time is used, as a saturated core's is
            until = time.monotonic() + BLOCK_S
            while time.monotonic() < until:
                pass
        else:
            time.sleep(BLOCK_S)  # blocking the loop is the point
        await asyncio.sleep(BREATHE_S)


async def _heavy_while_up(spin: bool = False) -> None:
    global _heavy_calls, _blocker
    _heavy_calls += 1
    if _blocker is None or _blocker.done():
        _blocker = asyncio.get_running_loop().create_task(_block_loop(spin))
    try:
        await asyncio.Event().wait()  # until the call ends and cancels this task
    finally:
        _heavy_calls -= 1


def setup(call: Call) -> None:
    default_setup(call)
    if call.info.called == "heavy":
        call.spawn(_heavy_while_up())
    elif call.info.called == "busy":  # the same, but spinning: CPU time, not a blocked sleep
        call.spawn(_heavy_while_up(spin=True))
