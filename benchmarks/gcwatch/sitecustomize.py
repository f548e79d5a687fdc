"""`bench_calls.py --gc-log`: put this folder on the gateway's PYTHONPATH to log slow GC passes.

Every garbage collection that takes 5 ms or more is written to stderr as one JSON line
(`{"event": "bench_gc", "generation": 2, "ms": 41.3, "collected": 120, "wall": <start>}`), so
the harness can tell loop stalls caused by the collector from other ones. Nothing else changes.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

_started: list[float] = [0.0]


def _watch(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000
    if ms >= 5.0:
        gen = info.get("generation", -1)
        line = {
            "event": "bench_gc",
            "generation": gen,
            "ms": round(ms, 1),
            "wall": round(time.time() - ms / 1000, 3),
            "collected": info.get("collected", 0),
        }
        sys.stderr.write(json.dumps(line) + "\n")


gc.callbacks.append(_watch)
