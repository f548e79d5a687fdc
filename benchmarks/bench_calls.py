"""Bridged-call load benchmark (issue 8): how many SIP calls one gateway carries on one core.

For each profile (passthrough: PCMU calls, session format pcmu; transcoding: PCMU calls, PCM16
24 kHz; g722: G.722 calls, 16 kHz legs resampled to PCM16 24 kHz) and each N:

1. the local provider (`gateway provider`) starts pinned to the load core, and a fresh gateway
   (`gateway serve --provider url ...`, uvloop) pinned to the gateway core;
2. the gateway's idle RSS is read; `benchmarks/loadgen.py`, pinned to the load core, places N calls
   at `--rate` calls/s, streams speech-like G.711 both ways and measures the gateway's packets with
   kernel receive timestamps;
3. over the steady window (`--duration` s after every call is up) the harness takes the gateway's
   CPU time (/proc/PID/stat), RSS (/proc/PID/status), core usage (/proc/stat) and two /metrics
   scrapes, whose histogram differences give send lateness, added latency and barge-in reaction;
4. every process it started is stopped by PID.

Processes, ports, /proc and /metrics come from `tests/support/harness.py`, the library the tests'
harnesses use too.

Prints a table, writes JSON to `benchmarks/results/`, optionally a PNG plot and a py-spy profile.
Figures, not pass/fail: the `misses` column names the issue's targets a point does not meet.
Run: `make bench-calls ARGS="--calls 50,100 --profile both"`; `--help` for every option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.support is the harness library

from tests.support.harness import (  # noqa: E402
    ChildProcess,
    HarnessError,
    Metrics,
    Processes,
    free_port,
    free_udp_tcp_port,
    proc_cpu_seconds,
    proc_rss_kib,
    scrape,
    wait_ready,
)

RESULTS = ROOT / "benchmarks" / "results"
#: profile -> the session format asked for; the codec the calls offer is PROFILE_CODECS'
PROFILES = {"passthrough": "pcmu", "transcoding": "pcm24k", "g722": "auto"}
#: what the load generator's calls offer (G.722: wideband legs, pcm16/24 kHz to the model)
PROFILE_CODECS = {"passthrough": "pcmu", "transcoding": "pcmu", "g722": "g722"}

# The targets (one gateway process, one core).
TARGETS = {
    "cpu_pct": 80.0,
    "lateness_p99_ms": 5.0,
    "lateness_max_ms": 20.0,
    "worst_gap_median_ms": 30.0,
    "max_gap_ms": 45.0,
    "rss_per_call_kib": 1024.0,
    "added_p99_ms": 5.0,
    "barge_in_p99_ms": 20.0,
    "setup_p99_ms": 100.0,
}


class BenchError(Exception):
    """The benchmark cannot run here (missing tool, busy port, a process that died)."""


# --- processes --------------------------------------------------------------------------------


def child_env(extra_path: str = "") -> dict[str, str]:
    """The environment of the programs started here: the repository and codecs importable."""
    return {**os.environ, "PYTHONPATH": f"{extra_path}{ROOT}:{ROOT / 'codecs'}"}


def pinned(core: int, argv: list[str], nice: int = 0, rt: int = 0) -> list[str]:
    """`argv` pinned to `core` (taskset), at niceness `nice` or SCHED_FIFO priority `rt` (chrt);
    each of these execs the next, so the PID is argv's."""
    prio = ["chrt", "-f", str(rt)] if rt else ["nice", "-n", str(nice)] if nice else []
    return ["taskset", "-c", str(core), *prio, *argv]


# --- preflight ---------------------------------------------------------------------------------


def preflight(args: argparse.Namespace) -> None:
    """Fail loudly, before starting anything, when this machine cannot run the benchmark."""
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found: install the Debian package util-linux")
    allowed = os.sched_getaffinity(0)
    for core in (args.gateway_core, args.load_core):
        if core not in allowed:
            raise BenchError(f"core {core} is not available (allowed: {sorted(allowed)})")
    if args.gateway_core == args.load_core:
        raise BenchError("--gateway-core and --load-core must differ")
    check = subprocess.run(
        ["taskset", "-c", str(args.gateway_core), "true"], capture_output=True, check=False
    )
    if check.returncode != 0:
        raise BenchError(f"taskset cannot pin to core {args.gateway_core}: {check.stderr!r}")
    lo, hi = (int(x) for x in args.rtp_ports.split("-"))
    need = max(args.calls) + 16
    free = count_free_rtp_pairs(lo, hi, need)
    if free < need:
        raise BenchError(
            f"--rtp-ports {args.rtp_ports}: only {free} free RTP/RTCP port pairs, need {need}"
        )
    if (args.gateway_rt or args.load_rt) and shutil.which("chrt") is None:
        raise BenchError("chrt not found: install the Debian package util-linux")
    if args.py_spy and py_spy_exe() is None:
        raise BenchError("--py-spy needs py-spy: .venv/bin/python -m pip install py-spy")


def count_free_rtp_pairs(lo: int, hi: int, need: int) -> int:
    """How many even ports in [lo, hi) bind with their odd neighbour (stops at `need`)."""
    free = 0
    for port in range(lo + lo % 2, hi, 2):
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            free += 1
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
        if free >= need:
            break
    return free


def core_times() -> dict[int, tuple[int, int, int, int]]:
    """Per core: (busy, total, steal, softirq) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            out[int(name[3:])] = (busy, busy + v[3] + v[4], v[7], v[6])
    return out


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


Histogram = dict[tuple[tuple[str, str], ...], dict[float, float]]


def metrics_url(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}/metrics"


def hist_diff(a: Metrics | None, b: Metrics, name: str, **labels: str) -> dict[float, float]:
    key = tuple(sorted(labels.items()))
    hb = b.hist.get(name, {}).get(key, {})
    ha = a.hist.get(name, {}).get(key, {}) if a else {}
    return {le: hb[le] - ha.get(le, 0.0) for le in hb}


def value_diff(a: Metrics | None, b: Metrics, prefix: str) -> float:
    return b.total(prefix) - (a.total(prefix) if a else 0.0)


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """histogram_quantile(): linear interpolation inside the bucket holding the q-th value."""
    if not buckets:
        return None
    les = sorted(buckets)
    count = buckets[les[-1]]
    if count <= 0:
        return None
    rank = q * count
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return les[-1]


def max_bound(buckets: dict[float, float]) -> float | None:
    """The upper bound of the highest non-empty bucket: the histogram's honest 'max <='."""
    if not buckets:
        return None
    les = sorted(buckets)
    total = buckets[les[-1]]
    if total <= 0:
        return None
    for le in les:
        if buckets[le] >= total:
            return le
    return float("inf")


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


# --- one point ---------------------------------------------------------------------------------


def read_events(proc: ChildProcess, deadline: float) -> Any:
    """Yield the load generator's JSON lines until it exits or `deadline` passes."""
    assert proc.stdout is not None
    fd = proc.stdout
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("load generator overran its deadline")
            if not sel.select(min(left, 1.0)):
                continue
            line = fd.readline()
            if not line:
                return
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)
    finally:
        sel.close()


def run_point(
    args: argparse.Namespace,
    profile: str,
    n: int,
    logdir: Path,
    *,
    spy: bool = False,
    attempt: int = 1,
) -> dict[str, Any]:
    started = Processes()
    python = sys.executable
    point_dir = logdir / f"{profile}-{n}{'-pyspy' if spy else f'-{attempt}'}"
    quiet_busy, quiet_waited = wait_quiet(args)
    try:
        provider_port = free_port()
        provider = started.start(
            "provider",
            pinned(
                args.load_core,
                [
                    python,
                    "-m",
                    "gateway",
                    "provider",
                    "--listen",
                    f"127.0.0.1:{provider_port}",
                    "--log-format",
                    "json",
                    "--log-level",
                    "warning",
                ],
            ),
            point_dir / "provider.log",
            cwd=ROOT,
            env=child_env(),
        )
        wait_ready(provider, port=provider_port)
        http_port, sip_port = free_port(), free_udp_tcp_port()
        gateway = started.start(
            "gateway",
            pinned(
                args.gateway_core,
                [
                    python,
                    "-m",
                    "gateway",
                    "serve",
                    "--http-listen",
                    f"127.0.0.1:{http_port}",
                    "--sip-listen",
                    f"127.0.0.1:{sip_port}",
                    "--provider",
                    "url",
                    "--provider-url",
                    f"ws://127.0.0.1:{provider_port}/v1/realtime",
                    "--session-format",
                    PROFILES[profile],
                    "--max-calls",
                    str(args.max_calls),
                    "--overload-lateness-ms",
                    str(args.overload_lateness_ms),
                    "--overload-cpu-pct",
                    str(args.overload_cpu_pct),
                    "--rtp-ports",
                    args.rtp_ports,
                    "--sip-rate-limit",
                    str(args.sip_rate_limit),
                    "--sip-rate-burst",
                    str(args.sip_rate_burst),
                    "--log-format",
                    "json",
                    "--log-level",
                    args.log_level,
                ],
                nice=args.gateway_nice,
                rt=args.gateway_rt,
            ),
            point_dir / "gateway.log",
            cwd=ROOT,
            env=child_env(f"{ROOT / 'benchmarks' / 'gcwatch'}:" if args.gc_log else ""),
        )
        wait_ready(gateway, url=f"http://127.0.0.1:{http_port}/readyz")
        pid = gateway.pid
        if args.load_nice:
            Path(f"/proc/{provider.pid}/autogroup").write_text(str(args.load_nice))
        if args.gateway_nice:
            # With autogroups, nice only ranks threads inside one session's group; the group's
            # own nice ranks it against other sessions' groups (other people's test runs).
            Path(f"/proc/{pid}/autogroup").write_text(str(args.gateway_nice))
        affinity = sorted(os.sched_getaffinity(pid))
        if affinity != [args.gateway_core]:
            raise BenchError(f"gateway pid {pid} runs on cores {affinity}, not pinned")
        uvloop_loaded = "uvloop" in Path(f"/proc/{pid}/maps").read_text()
        time.sleep(args.idle)
        cpu_i0, idle_t0 = proc_cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        idle_cpu_pct = (proc_cpu_seconds(pid) - cpu_i0) / (time.monotonic() - idle_t0) * 100
        rss_idle = proc_rss_kib(pid)

        loadgen = started.start(
            "loadgen",
            pinned(
                args.load_core,
                [
                    python,
                    str(ROOT / "benchmarks" / "loadgen.py"),
                    "--target",
                    f"127.0.0.1:{sip_port}",
                    "--calls",
                    str(n),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration),
                    "--settle",
                    str(args.settle),
                    "--codec",
                    PROFILE_CODECS[profile],
                    *([] if args.aligned else ["--staggered"]),
                ],
                rt=args.load_rt,
            ),
            point_dir / "loadgen.log",
            cwd=ROOT,
            env=child_env(),
            stdout_pipe=True,
        )
        if args.load_nice:
            Path(f"/proc/{loadgen.pid}/autogroup").write_text(str(args.load_nice))
        deadline = time.monotonic() + n / args.rate + 32 + args.settle + args.duration + 60
        a: dict[str, Any] = {}
        b: dict[str, Any] = {}
        gen: dict[str, Any] = {}
        established: dict[str, Any] = {}
        window = [0.0, 0.0]
        spy_proc: ChildProcess | None = None
        for ev in read_events(loadgen, deadline):
            kind = ev.get("event")
            if kind == "established":
                established = ev
            elif kind == "window_start":
                window[0] = float(ev.get("wall", 0.0))
                a = sample(pid, http_port)
                if spy:
                    spy_proc = start_py_spy(started, args, pid, point_dir)
            elif kind == "window_end":
                window[1] = float(ev.get("wall", 0.0))
                b = sample(pid, http_port)
                b["rss_kib"] = proc_rss_kib(pid)
            elif kind == "result":
                gen = ev
        loadgen.wait(30)
        if not gen:
            raise BenchError(f"load generator gave no result:\n{loadgen.tail()}")
        if not gateway.alive():
            raise BenchError(f"gateway died during the run:\n{gateway.tail()}")
        final = scrape(metrics_url(http_port))
        top = None
        if spy_proc is not None:
            spy_proc.wait(60)
            top = py_spy_top(point_dir / "gateway.pyspy.txt", args.spy_top)
        started.stop_all()
        errors, formats, gcs, gc_passes = read_gateway_log(gateway.log)
        return summarize(
            args,
            profile,
            n,
            a,
            b,
            final,
            gen,
            established,
            rss_idle=rss_idle,
            idle_cpu_pct=idle_cpu_pct,
            uvloop_loaded=uvloop_loaded,
            log_errors=errors,
            session_formats=formats,
            gc=gcs if args.gc_log else None,
            gc_passes=gc_passes,
            window=tuple(window),
            spy_top=top,
            quiet=(quiet_busy, quiet_waited),
        )
    finally:
        started.stop_all()


def wait_quiet(args: argparse.Namespace) -> tuple[float, float]:
    """Wait (at most --quiet-wait s) until the gateway core is nearly idle; (busy %, waited s)."""
    start = time.monotonic()
    core = args.gateway_core
    while True:
        a = core_times()[core]
        time.sleep(2.0)
        b = core_times()[core]
        busy = (b[0] - a[0]) / max(1, b[1] - a[1]) * 100
        waited = time.monotonic() - start
        if busy <= args.quiet_pct or waited >= args.quiet_wait:
            return round(busy, 1), round(waited, 1)


def sample(pid: int, http_port: int) -> dict[str, Any]:
    t = time.monotonic()
    return {
        "t": t,
        "cpu_s": proc_cpu_seconds(pid),
        "cores": core_times(),
        "loadavg": loadavg(),
        "metrics": scrape(metrics_url(http_port)),
    }


def read_gateway_log(
    log: Path,
) -> tuple[
    dict[str, int], dict[str, int], dict[str, dict[str, float]], list[tuple[float, int, float]]
]:
    """(error events by name, session formats seen in call summaries "in->out": calls,
    GC passes of 5 ms or more by generation when --gc-log)."""
    errors: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    gcs: dict[str, dict[str, float]] = {}
    passes: list[tuple[float, int, float]] = []
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        for line in f:
            if line.startswith('{"event": "bench_gc"'):
                with contextlib.suppress(json.JSONDecodeError, KeyError):
                    ev = json.loads(line)
                    g = gcs.setdefault(f"gen{ev['generation']}", {"n": 0, "max_ms": 0.0, "ms": 0.0})
                    g["n"] += 1
                    g["ms"] = round(g["ms"] + ev["ms"], 1)
                    g["max_ms"] = max(g["max_ms"], ev["ms"])
                    passes.append((float(ev.get("wall", 0.0)), int(ev["generation"]), ev["ms"]))
            elif '"level": "error"' in line or '"level": "critical"' in line:
                try:
                    errors[json.loads(line).get("event", "?")] += 1
                except json.JSONDecodeError:
                    errors["unparsed"] += 1
            elif '"call_summary"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    ev = json.loads(line)
                    formats[f"{ev.get('session_in')}->{ev.get('session_out')}"] += 1
    return dict(errors), dict(formats), gcs, passes


def summarize(
    args: argparse.Namespace,
    profile: str,
    n: int,
    a: dict[str, Any],
    b: dict[str, Any],
    final: Metrics,
    gen: dict[str, Any],
    established: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {"calls": n, "profile": profile, "session_format": PROFILES[profile]}
    row["commit"] = machine()["commit"]
    row["failed_calls"] = gen.get("failed_calls")
    row["established_calls"] = established.get("calls")
    row["streams_measured"] = gen.get("streams")
    row["failures"] = gen.get("failures")
    row["setup_ms"] = gen.get("setup_ms")
    if a and b:
        span = b["t"] - a["t"]
        cpu = b["cpu_s"] - a["cpu_s"]
        call_seconds = n * span
        cores: dict[int, list[float]] = {}
        for core in (args.gateway_core, args.load_core):
            delta = [b["cores"][core][i] - a["cores"][core][i] for i in range(4)]
            total = delta[1]
            # busy, steal, softirq as % of the core
            cores[core] = [
                x / total * 100 if total else 0.0 for x in (delta[0], delta[2], delta[3])
            ]
        ma, mb = a["metrics"], b["metrics"]
        late = hist_diff(ma, mb, "gateway_rtp_send_lateness_seconds")
        to_model = hist_diff(ma, mb, "gateway_media_added_latency_seconds", direction="to_model")
        to_caller = hist_diff(ma, mb, "gateway_media_added_latency_seconds", direction="to_caller")
        barge = hist_diff(ma, mb, "gateway_barge_in_reaction_seconds")
        response = hist_diff(ma, mb, "gateway_response_latency_seconds")
        rss_loaded = b["rss_kib"]
        row.update(
            {
                "window_s": round(span, 2),
                "cpu_pct": round(cpu / span * 100, 1),
                "cpu_ms_per_call_s": round(cpu * 1000 / call_seconds, 3) if n else None,
                "rss_idle_mib": round(extra["rss_idle"] / 1024, 1),
                "rss_mib": round(rss_loaded / 1024, 1),
                "rss_per_call_kib": round((rss_loaded - extra["rss_idle"]) / n, 1),
                "lateness_p50_ms": ms(quantile(late, 0.5)),
                "lateness_p99_ms": ms(quantile(late, 0.99)),
                "lateness_max_le_ms": ms(max_bound(late)),
                "lateness_count": int(late.get(float("inf"), 0)),
                "added_to_model_p50_ms": ms(quantile(to_model, 0.5)),
                "added_to_model_p99_ms": ms(quantile(to_model, 0.99)),
                "added_to_caller_p50_ms": ms(quantile(to_caller, 0.5)),
                "added_to_caller_p99_ms": ms(quantile(to_caller, 0.99)),
                "barge_in_p99_ms": ms(quantile(barge, 0.99)),
                "barge_ins": int(barge.get(float("inf"), 0)),
                "response_latency_p50_ms": ms(quantile(response, 0.5)),
                "rtp_dropped_window": {
                    k.split("reason=")[-1]: mb.values[k] - ma.values.get(k, 0.0)
                    for k in mb.values
                    if k.startswith("gateway_rtp_dropped_total|")
                },
                "rtp_lost_window": value_diff(ma, mb, "gateway_rtp_packets_lost_total"),
                "send_overflow_window": value_diff(ma, mb, "gateway_realtime_send_overflow_total"),
                "gateway_core_busy_pct": round(cores[args.gateway_core][0], 1),
                "gateway_core_others_pct": round(cores[args.gateway_core][0] - cpu / span * 100, 1),
                "gateway_core_steal_pct": round(cores[args.gateway_core][1], 1),
                "gateway_core_softirq_pct": round(cores[args.gateway_core][2], 1),
                "load_core_busy_pct": round(cores[args.load_core][0], 1),
                "loadavg_start": a["loadavg"],
                "loadavg_end": b["loadavg"],
            }
        )
    row["rtp_dropped_total"] = {
        k.split("reason=")[-1]: v
        for k, v in final.values.items()
        if k.startswith("gateway_rtp_dropped_total|")
    }
    row["rtp_lost_total"] = value_diff(None, final, "gateway_rtp_packets_lost_total")
    setup_hist = final.hist.get("gateway_call_setup_seconds", {}).get((), {})
    row["first_audio_p99_ms"] = ms(quantile(setup_hist, 0.99))
    # the provider's share of set-up: WebSocket connect to session.updated, as the gateway saw it
    connect_hist = final.hist.get("gateway_realtime_connect_seconds", {}).get((), {})
    row["provider_connect_p50_ms"] = ms(quantile(connect_hist, 0.5))
    row["provider_connect_p99_ms"] = ms(quantile(connect_hist, 0.99))
    row["realtime_errors"] = value_diff(None, final, "gateway_realtime_errors_total")
    for key in (
        "worst_gap_median_ms",
        "worst_gap_p90_ms",
        "max_gap_ms",
        "gaps_over_30ms",
        "gaps_over_45ms",
        "packets_expected",
        "packets_received",
        "packets_voiced",
        "streams_silent",
        "streams_without_bot_audio",
        "loadgen_send_late_max_ms",
        "loadgen_send_ticks_over_5ms",
        "stalls",
    ):
        row[key] = gen.get(key)
    row["ramp_s"] = round(established.get("ramp_s", 0.0), 2)
    row["idle_cpu_pct"] = round(extra["idle_cpu_pct"], 1)
    row["uvloop"] = extra["uvloop_loaded"]
    row["log_errors"] = extra["log_errors"]
    row["session_formats"] = extra["session_formats"]
    if extra.get("gc") is not None:
        row["gc_passes_over_5ms"] = extra["gc"]
        w0, w1 = extra.get("window") or (0.0, 0.0)
        row["gc_passes_in_window"] = [
            {"at_s": round(wall - w0, 3), "generation": gen, "ms": ms}
            for wall, gen, ms in extra["gc_passes"]
            if w0 <= wall <= w1
        ]
    row["gateway_core_busy_before_pct"], row["quiet_wait_s"] = extra["quiet"]
    if extra.get("spy_top") is not None:
        row["py_spy_top"] = extra["spy_top"]
    row["misses"] = misses(row)
    row["disturbed"] = disturbed(args, row)
    return row


def misses(row: dict[str, Any]) -> list[str]:
    """The issue's targets this point does not meet (or could not measure)."""
    out = []

    def over(key: str, limit: float, label: str) -> None:
        v = row.get(key)
        if v is None or v > limit:
            out.append(label if v is not None else f"{label}?")

    over("cpu_pct", TARGETS["cpu_pct"], "cpu")
    if row.get("failed_calls"):
        out.append("failed")
    if sum((row.get("rtp_dropped_window") or {}).values()):
        out.append("dropped")
    over("lateness_p99_ms", TARGETS["lateness_p99_ms"], "late_p99")
    over("lateness_max_le_ms", TARGETS["lateness_max_ms"], "late_max")
    over("worst_gap_median_ms", TARGETS["worst_gap_median_ms"], "gap_med")
    over("max_gap_ms", TARGETS["max_gap_ms"], "gap_max")
    over("rss_per_call_kib", TARGETS["rss_per_call_kib"], "rss")
    over("added_to_model_p99_ms", TARGETS["added_p99_ms"], "added_in")
    over("added_to_caller_p99_ms", TARGETS["added_p99_ms"], "added_out")
    over("barge_in_p99_ms", TARGETS["barge_in_p99_ms"], "barge_in")
    setup = (row.get("setup_ms") or {}).get("p99")
    if setup is None or setup > TARGETS["setup_p99_ms"]:
        out.append("setup")
    return out


def disturbed(args: argparse.Namespace, row: dict[str, Any]) -> bool:
    """Other work on the gateway's core, or a late load generator, spoils a point's figures."""
    others = None if args.gateway_rt else row.get("gateway_core_others_pct")
    late = row.get("loadgen_send_late_max_ms")
    return bool(
        (others is not None and others > args.disturbed_pct) or (late is not None and late > 20)
    )


# --- py-spy ------------------------------------------------------------------------------------


def py_spy_exe() -> str | None:
    """py-spy beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_py_spy(
    started: Processes, args: argparse.Namespace, pid: int, point_dir: Path
) -> ChildProcess:
    exe = py_spy_exe()
    assert exe is not None  # checked in preflight()
    duration = max(5, min(20, int(args.duration) - 2))
    return started.start(
        "py-spy",
        pinned(
            args.load_core,
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(duration),
                "--rate",
                "100",
                "--nonblocking",
                "--gil",
                "--format",
                "raw",
                "--output",
                str(point_dir / "gateway.pyspy.txt"),
            ],
        ),
        point_dir / "py-spy.log",
        cwd=ROOT,
        env=child_env(),
    )


def py_spy_top(path: Path, top: int) -> list[dict[str, Any]]:
    """Top functions by self time from py-spy's collapsed stacks ("a;b;c count")."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    if not path.exists():
        raise BenchError(f"py-spy wrote no profile ({path}); see py-spy.log beside it")
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        frames = [_function(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        self_counts[frames[-1]] += count
        for f in set(frames):
            total_counts[f] += count
    return [
        {
            "function": name,
            "self_pct": round(c / samples * 100, 1),
            "total_pct": round(total_counts[name] / samples * 100, 1),
        }
        for name, c in self_counts.most_common(top)
    ]


def _function(frame: str) -> str:
    """'tick (gateway/legs/sip/leg.py:87)' -> 'tick (gateway/legs/sip/leg.py)': by function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


# --- report ------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 100 else f"{v:.3g}" if v != int(v) else f"{int(v)}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "N",
        "profile",
        "CPU %",
        "CPU ms/call-s",
        "RSS MiB",
        "RSS/call KiB",
        "failed",
        "late p50/p99/max≤ ms",
        "rx gap med-worst/max ms",
        "dropped/lost",
        "added in p50/p99 ms",
        "added out p50/p99 ms",
        "barge-in p99 ms",
        "setup p99 ms",
        "load avg",
        "core0 others %",
        "misses",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        dropped = sum((r.get("rtp_dropped_window") or {}).values())
        cells = [
            fmt(r["calls"]),
            r["profile"],
            fmt(r.get("cpu_pct")),
            fmt(r.get("cpu_ms_per_call_s")),
            fmt(r.get("rss_mib")),
            fmt(r.get("rss_per_call_kib")),
            fmt(r.get("failed_calls")),
            "/".join(
                fmt(r.get(k)) for k in ("lateness_p50_ms", "lateness_p99_ms", "lateness_max_le_ms")
            ),
            f"{fmt(r.get('worst_gap_median_ms'))}/{fmt(r.get('max_gap_ms'))}",
            f"{fmt(dropped)}/{fmt(r.get('rtp_lost_window'))}",
            f"{fmt(r.get('added_to_model_p50_ms'))}/{fmt(r.get('added_to_model_p99_ms'))}",
            f"{fmt(r.get('added_to_caller_p50_ms'))}/{fmt(r.get('added_to_caller_p99_ms'))}",
            fmt(r.get("barge_in_p99_ms")),
            fmt((r.get("setup_ms") or {}).get("p99")),
            f"{fmt(r.get('loadavg_start'))}→{fmt(r.get('loadavg_end'))}",
            fmt(r.get("gateway_core_others_pct")),
            ", ".join(r.get("misses") or [])
            or "none" + (" (disturbed)" if r.get("disturbed") else ""),
        ]
        if r.get("disturbed") and r.get("misses"):
            cells[-1] += " (disturbed)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def capacity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for profile in PROFILES:
        points = sorted((r for r in rows if r["profile"] == profile), key=lambda r: r["calls"])
        if not points:
            continue
        best = None
        for r in points:
            if r["misses"]:
                break
            best = r["calls"]
        out[profile] = {
            "largest_n_meeting_targets": best,
            "measured_up_to": points[-1]["calls"],
            "first_miss": next(
                ({"calls": r["calls"], "misses": r["misses"]} for r in points if r["misses"]), None
            ),
        }
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import numpy

    versions = {"numpy": numpy.__version__}
    with contextlib.suppress(PackageNotFoundError):
        versions["uvloop"] = package_version("uvloop")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        **versions,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for profile, color in (
        ("passthrough", "tab:blue"),
        ("transcoding", "tab:orange"),
        ("g722", "tab:green"),
    ):
        pts = sorted(
            (r for r in rows if r["profile"] == profile and "cpu_pct" in r),
            key=lambda r: r["calls"],
        )
        if not pts:
            continue
        ns = [r["calls"] for r in pts]
        ax1.plot(ns, [r["cpu_pct"] for r in pts], "o-", color=color, label=profile)
        ax2.plot(
            ns,
            [max(0.5, r["lateness_p99_ms"] or 0.5) for r in pts],
            "o-",
            color=color,
            label=f"{profile}: send lateness p99",
        )
        ax2.plot(
            ns,
            [max(0.5, r["worst_gap_median_ms"] or 0.5) for r in pts],
            "s--",
            color=color,
            label=f"{profile}: median worst gap (rx)",
        )
    ax1.axhline(TARGETS["cpu_pct"], color="grey", ls=":", lw=1)
    ax1.set(
        xlabel="concurrent calls",
        ylabel="gateway CPU, % of one core",
        title="CPU against calls",
        ylim=(0, 105),
    )
    ax2.axhline(TARGETS["lateness_p99_ms"], color="grey", ls=":", lw=1)
    ax2.axhline(TARGETS["worst_gap_median_ms"], color="grey", ls="-.", lw=1)
    ax2.set(xlabel="concurrent calls", ylabel="ms", title="Outbound pacing against calls")
    ax2.set_yscale("log")
    ax2.set_ylim(0.5, 2000)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--calls",
        default="50,100,200,300,500",
        help="comma-separated concurrent call counts (default %(default)s)",
    )
    p.add_argument("--duration", type=float, default=30.0, help="steady window, s (default 30)")
    p.add_argument(
        "--profile",
        default="both",
        choices=["passthrough", "transcoding", "g722", "both", "all"],
        help="both: passthrough and transcoding; all: those and g722",
    )
    p.add_argument("--rate", type=float, default=20.0, help="new calls per second (default 20)")
    p.add_argument("--settle", type=float, default=3.0, help="s between ramp and window")
    p.add_argument("--idle", type=float, default=1.0, help="s of idle before the idle samples")
    p.add_argument(
        "--staggered",
        dest="aligned",
        action="store_false",
        help="random speech phase per call (default: every call in phase)",
    )
    p.add_argument("--gateway-core", type=int, default=0)
    p.add_argument("--load-core", type=int, default=1)
    p.add_argument("--rtp-ports", default="20000-29999")
    p.add_argument("--max-calls", type=int, default=2000)
    p.add_argument(
        "--overload-lateness-ms",
        type=float,
        default=0.0,
        help="the gateway's overload gate (issue 20; default 0: off, every call is admitted)",
    )
    p.add_argument(
        "--overload-cpu-pct",
        type=float,
        default=0.0,
        help="the overload gate's CPU half (issue 20; default 0: off)",
    )
    p.add_argument("--sip-rate-limit", type=float, default=5000.0)
    p.add_argument("--sip-rate-burst", type=int, default=10000)
    p.add_argument("--log-level", default="info", help="gateway log level (default info)")
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-runs of a point whose gateway core was disturbed (default 1)",
    )
    p.add_argument(
        "--disturbed-pct",
        type=float,
        default=15.0,
        help="other work on the gateway core above this %% marks a point disturbed",
    )
    p.add_argument(
        "--gateway-nice",
        type=int,
        default=0,
        help="niceness of the gateway (e.g. -10 on a machine shared with other work)",
    )
    p.add_argument(
        "--gateway-rt",
        type=int,
        default=0,
        metavar="PRIO",
        help="run the gateway SCHED_FIFO at PRIO (chrt; root): a core of its own on a shared box",
    )
    p.add_argument(
        "--load-rt",
        type=int,
        default=0,
        metavar="PRIO",
        help="run the load generator SCHED_FIFO at PRIO (the provider stays normal)",
    )
    p.add_argument(
        "--load-nice",
        type=int,
        default=0,
        help="scheduler autogroup nice of the provider and the load generator",
    )
    p.add_argument(
        "--gc-log",
        action="store_true",
        help="log the gateway's GC passes of 5 ms or more (benchmarks/gcwatch/sitecustomize.py)",
    )
    p.add_argument(
        "--quiet-pct",
        type=float,
        default=10.0,
        help="before each point, wait until the gateway core is below this %% busy",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="at most this many seconds of waiting for quiet (default 60)",
    )
    p.add_argument(
        "--py-spy",
        default="",
        metavar="PROFILE:N",
        help="also profile this point with py-spy (an extra run), e.g. transcoding:200",
    )
    p.add_argument("--spy-top", type=int, default=15)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default results/<time>)")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot of CPU and lateness vs N")
    p.add_argument(
        "--report-from",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="run nothing: merge these result files (later rows replace earlier ones for the "
        "same profile and N), print the table and capacity, write --out and --plot",
    )
    args = p.parse_args(argv)
    try:
        args.calls = [int(x) for x in str(args.calls).split(",") if x.strip()]
    except ValueError:
        p.error("--calls takes numbers like 50,100")
    if not args.calls or min(args.calls) < 1:
        p.error("--calls needs positive numbers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if args.report_from:
        return report_from(args)
    try:
        preflight(args)
    except (BenchError, HarnessError) as exc:
        print(f"bench-calls: error: {exc}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS / f"bench-calls-{stamp}.json"
    logdir = RESULTS / "logs" / stamp
    profiles = (
        list(PROFILES)
        if args.profile == "all"
        else ["passthrough", "transcoding"]
        if args.profile == "both"
        else [args.profile]
    )
    report: dict[str, Any] = {
        "command": "python benchmarks/bench_calls.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "started": stamp,
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": TARGETS,
        "rows": [],
    }
    print(f"bench-calls: {report['machine']}", flush=True)
    try:
        for profile in profiles:
            for n in args.calls:
                for attempt in range(args.retries + 1):
                    print(
                        f"-- {profile} N={n} (attempt {attempt + 1}) load avg {loadavg():.2f}",
                        flush=True,
                    )
                    row = run_point(args, profile, n, logdir, attempt=attempt + 1)
                    row["attempt"] = attempt + 1
                    print(table([row]).splitlines()[-1], flush=True)
                    if not row["disturbed"]:
                        break
                    print("   disturbed (other work on the gateway core); again", flush=True)
                report["rows"].append(row)
                write(out, report)
        if args.py_spy:
            profile, _, n_s = args.py_spy.partition(":")
            if profile not in PROFILES or not n_s.isdigit():
                raise BenchError("--py-spy takes PROFILE:N, e.g. transcoding:200")
            print(f"-- py-spy run: {profile} N={n_s}", flush=True)
            row = run_point(args, profile, int(n_s), logdir, spy=True)
            report["py_spy"] = {"row": row, "top": row.pop("py_spy_top", None)}
            write(out, report)
    except (BenchError, HarnessError) as exc:
        print(f"bench-calls: error: {exc}", file=sys.stderr)
        write(out, report)
        return 1
    except KeyboardInterrupt:
        print("bench-calls: interrupted; every started process was stopped", file=sys.stderr)
        write(out, report)
        return 130
    report["capacity"] = capacity(report["rows"])
    write(out, report)
    print()
    print(table(report["rows"]))
    print()
    print("capacity (largest N meeting every target):", json.dumps(report["capacity"]))
    if report.get("py_spy"):
        print_spy(report["py_spy"])
    if args.plot:
        plot(report["rows"], args.plot)
        print(f"plot: {args.plot}")
    print(f"results: {out}")
    return 0


def report_from(args: argparse.Namespace) -> int:
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    sources = []
    spy = None
    for path in args.report_from:
        data = json.loads(path.read_text())
        sources.append(
            {"file": str(path), "command": data.get("command"), "machine": data.get("machine")}
        )
        for row in data.get("rows", []):
            row.setdefault("commit", (data.get("machine") or {}).get("commit"))
            merged[(row["profile"], row["calls"])] = row
        spy = data.get("py_spy") or spy
    rows = [merged[k] for k in sorted(merged, key=lambda k: (list(PROFILES).index(k[0]), k[1]))]
    report: dict[str, Any] = {"merged_from": sources, "targets": TARGETS, "rows": rows}
    if spy:
        report["py_spy"] = spy
    report["capacity"] = capacity(rows)
    print(table(rows))
    print("\ncapacity (largest N meeting every target):", json.dumps(report["capacity"]))
    if spy:
        print_spy(spy)
    if args.out:
        write(args.out, report)
        print(f"results: {args.out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


def print_spy(spy: dict[str, Any]) -> None:
    row = spy.get("row", {})
    print(
        f"\npy-spy top functions by self time ({row.get('profile')} N={row.get('calls')}, "
        "samples holding the GIL):"
    )
    for f in spy.get("top") or []:
        print(f"  {f['self_pct']:5.1f}%  (total {f['total_pct']:5.1f}%)  {f['function']}")


def write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
