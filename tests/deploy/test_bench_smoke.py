"""`make bench-calls` works (issue 20: the bench in CI): 50 calls of each profile for 10 s.

It runs benchmarks/bench_calls.py as `make bench-calls` does and checks only that the benchmark
itself works: the JSON result has its structure, every call of each profile was set up and
measured. No timing is asserted (the machine is shared with the rest of the suite).

The gateway and load cores are the first two this process may run on (taskset pins only; no
realtime priority, so it needs no root and shares its cores with the xdist workers); the RTP ports
are this worker's own slice. uvloop is a runtime dependency; matplotlib and py-spy, which the
Makefile installs on demand, serve only `--plot` and `--py-spy`, which this does not use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import rtp_range

ROOT = Path(__file__).resolve().parents[2]
CALLS = 50


def test_bench_calls_runs_50_calls_of_each_profile(tmp_path: Path) -> None:
    assert shutil.which("taskset"), "taskset (util-linux) is needed by make bench-calls"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail(f"bench-calls needs two cores, this process may use {cores}")
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_calls.py"),
        *("--calls", str(CALLS), "--profile", "both", "--duration", "10"),
        *("--rate", "50", "--settle", "0.5", "--idle", "0.2", "--retries", "0"),
        *("--quiet-wait", "0", "--gateway-core", str(cores[0]), "--load-core", str(cores[1])),
        *("--rtp-ports", rtp_range(), "--out", str(out)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"command", "machine", "settings", "targets", "rows", "capacity"} <= set(report)
    rows = report["rows"]
    assert [(r["profile"], r["calls"]) for r in rows] == [
        ("passthrough", CALLS),
        ("transcoding", CALLS),
    ]
    for row in rows:
        where = f"{row['profile']}: {json.dumps(row)[:2000]}"
        assert row["failed_calls"] == 0, where
        assert row["established_calls"] == CALLS, where
        assert row["streams_measured"] == CALLS, where
        # measured: CPU, memory and the gateway's lateness histogram over the window, and every
        # call's stream seen by the load generator
        for key in ("cpu_pct", "rss_per_call_kib", "lateness_p99_ms", "worst_gap_median_ms"):
            assert isinstance(row[key], int | float), (key, where)
        assert row["packets_received"] > 0, where
        assert row["streams_silent"] == 0, where
        assert isinstance(row["misses"], list), where
    assert rows[1]["session_formats"] != rows[0]["session_formats"]
