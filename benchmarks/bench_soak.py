"""Soak benchmark (issue 13, item 6): memory held and GC pauses under continuous calls.

1. the local provider (`gateway provider`) and a fresh gateway (`gateway serve --provider url`,
   uvloop, as users run it) start as child processes;
2. sipp places `--warmup` + `--calls` calls, `--concurrent` at a time, each streaming 3 s of PCMA
   speech (`tests/peers/sipp/e2e_pcap_short.xml`) and hanging up;
3. every `--sample-s` the harness reads the gateway's RSS (/proc/PID/status) and the number of
   calls ended (`gateway_calls_total`); after the warm-up, the least-squares slope of RSS over
   calls ended is the memory each call leaves behind;
4. the gateway's `gateway_gc_pause_seconds` histogram, read after the warm-up and at the end
   (calls live throughout), gives every cyclic-collector pass in between by generation: the
   longest bucket any pass fell in is the worst pause;
5. every process it started is stopped by PID.

Targets (the issue's): RSS growth <= 5 KiB per call after warm-up, no GC pass over 5 ms.
Run: `make soak` (ARGS="--calls 2000 --concurrent 20"); `--help` for every option.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_calls import RESULTS, ROOT, BenchError, child_env, machine, metrics_url

from tests.support.harness import (
    Histograms,
    Metrics,
    Processes,
    free_port,
    free_udp_tcp_port,
    proc_rss_kib,
    scrape,
    wait_ready,
)

SCENARIO = ROOT / "tests" / "peers" / "sipp" / "e2e_pcap_short.xml"
TARGET_KIB_PER_CALL = 5.0
TARGET_GC_PAUSE_S = 0.005


def calls_ended(values: dict[str, float]) -> int:
    return int(sum(v for k, v in values.items() if k.startswith("gateway_calls_total|")))


def gc_pauses(hists: Histograms, before: Histograms) -> dict[str, dict[str, float]]:
    """Per generation, between two scrapes: passes counted, and passes longer than the target."""
    out: dict[str, dict[str, float]] = {}
    earlier = before.get("gateway_gc_pause_seconds", {})
    for labels, now in hists.get("gateway_gc_pause_seconds", {}).items():
        gen = dict(labels).get("generation", "?")
        then = earlier.get(labels, {})
        buckets = {le: c - then.get(le, 0.0) for le, c in now.items()}
        total = buckets.get(float("inf"), 0.0)
        within = max((c for le, c in buckets.items() if le <= TARGET_GC_PAUSE_S), default=0.0)
        worst = min((le for le, c in buckets.items() if c >= total), default=float("inf"))
        out[gen] = {"passes": total, "over_target": total - within, "worst_le_s": worst}
    return out


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS KiB over calls ended."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx if sxx else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = Processes()
    workdir = RESULTS / "soak-run"
    try:
        provider_port = free_port()
        provider = started.start(
            "provider",
            [
                sys.executable,
                "-m",
                "gateway",
                "provider",
                "--listen",
                f"127.0.0.1:{provider_port}",
                "--log-level",
                "warning",
            ],
            workdir / "provider.log",
            cwd=ROOT,
            env=child_env(),
        )
        wait_ready(provider, port=provider_port)
        sip_port, http_port = free_udp_tcp_port(), free_port()
        gateway = started.start(
            "gateway",
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--provider",
                "url",
                "--provider-url",
                f"ws://127.0.0.1:{provider_port}/v1/realtime",
                "--sip-listen",
                f"127.0.0.1:{sip_port}",
                "--http-listen",
                f"127.0.0.1:{http_port}",
                "--rtp-ports",
                "30000-32000",
                "--max-calls",
                str(args.concurrent * 4),
                "--log-level",
                "warning",
                "--log-format",
                "json",
            ],
            workdir / "gateway.log",
            cwd=ROOT,
            env=child_env(),
        )
        wait_ready(gateway, url=f"http://127.0.0.1:{http_port}/readyz")
        total = args.warmup + args.calls
        sipp = started.start(
            "sipp",
            [
                "sipp",
                f"127.0.0.1:{sip_port}",
                "-sf",
                str(SCENARIO),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_udp_tcp_port()),
                "-cp",
                str(free_udp_tcp_port()),
                "-mp",
                str(free_udp_tcp_port()),
                "-m",
                str(total),
                "-l",
                str(args.concurrent),
                "-r",
                str(args.rate),
                "-nostdin",
                "-timeout",
                f"{int(total / args.rate * 3 + 120)}s",
            ],
            workdir / "sipp.log",
            cwd=ROOT,
            env=child_env(),
        )
        samples: list[tuple[float, int, int]] = []  # (t, calls ended, RSS KiB)
        t0 = time.monotonic()
        idle_rss = proc_rss_kib(gateway.pid)
        after_warmup: Metrics | None = None  # GC passes count from here, calls live
        last_live: Metrics | None = None  # ... to here (not the idle collection after)
        while sipp.alive():
            if not gateway.alive():
                raise BenchError(f"gateway exited:\n{gateway.tail()}")
            metrics_now = last_live = scrape(metrics_url(http_port))  # sipp runs: calls are up
            ended = calls_ended(metrics_now.values)
            if after_warmup is None and ended >= args.warmup:
                after_warmup = metrics_now
            samples.append((time.monotonic() - t0, ended, proc_rss_kib(gateway.pid)))
            print(f"\r{ended:6d} calls ended, RSS {samples[-1][2]:8d} KiB", end="", flush=True)
            time.sleep(args.sample_s)
        print()
        final = scrape(metrics_url(http_port))
        ended = calls_ended(final.values)
        failed = int(
            sum(
                v
                for k, v in final.values.items()
                if k.startswith("gateway_calls_total|") and "outcome=remote_hangup" not in k
            )
        )
        steady = [(c, r) for _t, c, r in samples if c >= args.warmup]
        per_call = slope(steady)
        live_end = last_live or final
        pauses = gc_pauses(live_end.hist, (after_warmup or live_end).hist)
        worst = max((p["worst_le_s"] for p in pauses.values()), default=float("nan"))
        over = sum(p["over_target"] for p in pauses.values())
        return {
            "benchmark": "soak",
            "calls": args.calls,
            "warmup": args.warmup,
            "concurrent": args.concurrent,
            "calls_ended": ended,
            "calls_not_remote_hangup": failed,
            "sipp_exit": sipp.returncode,
            "idle_rss_kib": idle_rss,
            "rss_after_warmup_kib": steady[0][1] if steady else None,
            "rss_end_kib": samples[-1][2] if samples else None,
            "rss_growth_kib_per_call": round(per_call, 3),
            "gc_pauses": pauses,
            "gc_worst_pause_le_s": worst,
            "gc_passes_over_5ms": over,
            "targets_met": {
                "rss_growth": per_call <= TARGET_KIB_PER_CALL,
                "gc_pause": over == 0,
            },
            "seconds": round(time.monotonic() - t0, 1),
            "machine": machine(),
        }
    finally:
        started.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls measured after warm-up")
    parser.add_argument("--warmup", type=int, default=200, help="calls before measuring")
    parser.add_argument("--concurrent", type=int, default=20, help="calls up at a time")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second (max)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling interval")
    parser.add_argument("--out", default="", help="JSON result path")
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp not found: install the Debian package sip-tester (make peers)")
        return 2
    report = run(args)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    out = Path(args.out) if args.out else RESULTS / f"soak-{commit or 'unknown'}.json"
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
