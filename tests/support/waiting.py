"""Polling until something holds, with a deadline that fails the test (AssertionError).

- `wait_for(pred, timeout, what)`: async, on the running loop's clock, every 20 ms (or `every`);
- `eventually(check, timeout, what)`: async, `check` sync or async, every 50 ms (or `every`);
  returns the first truthy value it gave;
- `wait_until(check, timeout, what)`: blocking, on the monotonic clock, every 50 ms, for tests
  whose gateway is another process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(
    pred: Callable[[], object], timeout: float = 10.0, what: str = "", every: float = 0.02
) -> None:
    """Poll `pred` every `every` s; AssertionError naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(every)


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.05,
) -> Any:
    """Poll `check` (sync or async) every `every` s until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Block until `check()` holds, every 50 ms; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
