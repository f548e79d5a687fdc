"""Scenarios: what happens on a call, and loading a user's scenario file.

A scenario is a Python file that defines `setup(call)` (sync or async). It registers handlers
with `call.on(EventClass, handler)` for call events and `call.realtime.on(EventClass, handler)`
for Realtime server events, and uses the call's actions. Handlers are sync or async, and run
one at a time, in registration order, per call (`gateway.call.bus`). An exception in a handler
is logged with the call's id and does not end the call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.call.call import Call

ScenarioSetup = Callable[[Call], Awaitable[None] | None]


def load_scenario(path: str | Path) -> ScenarioSetup:
    """Import a scenario file and return its `setup(call)` function."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"gateway_scenario_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"scenario {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setup = getattr(module, "setup", None)
    if not callable(setup):
        raise ValueError(f"scenario {path}: defines no setup(call) function")
    return setup  # type: ignore[no-any-return]
