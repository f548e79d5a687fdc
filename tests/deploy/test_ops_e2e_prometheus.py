"""A real Prometheus (Debian's `prometheus`) scraping real gateway processes after real sipp calls.

One gateway serves `/metrics` on its own listener (`--metrics-listen`), the other on its public
HTTP port (the default). Prometheus scrapes both; five sipp calls go to the first. Then:
- Prometheus' HTTP API returns the calls, RTP and setup-time counters the calls produced;
- every PromQL expression of the Grafana dashboard and the alert rules evaluates in that same
  Prometheus, and every metric name they use is one the live gateway exports (with series in
  Prometheus for the ones a plain call produces).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.harness import free_port
from tests.support.ops_peers import Prometheus
from tests.support.promql import PROMETHEUS_SERIES, all_exprs, promql_selectors
from tests.support.sipp import Sipp, SippResult

CALLS = 5

# Series a plain answered SIP call (sipp's built-in uac, no RTP from the caller) must produce.
PRODUCED_BY_A_CALL = {
    "gateway_calls_total",
    "gateway_calls_active",
    "gateway_call_duration_seconds_bucket",
    "gateway_call_setup_seconds_bucket",
    "gateway_rtp_packets_total",
    "gateway_rtp_send_lateness_seconds_bucket",
    "gateway_realtime_sessions_active",
    "gateway_realtime_connect_seconds_bucket",
    "gateway_realtime_events_total",
    "gateway_sip_requests_total",
    "gateway_sip_responses_total",
    "gateway_draining",
    "gateway_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@dataclass
class Setup:
    prom: Prometheus
    separate: GatewayProcess  # --metrics-listen
    metrics_port: int
    public: GatewayProcess  # /metrics on the HTTP port
    sipp: SippResult


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir: Path = tmp_path_factory.mktemp("ops_prom")
    metrics_port = free_port()
    separate = GatewayProcess(workdir, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    public = GatewayProcess(workdir)
    prom: Prometheus | None = None
    try:
        separate.start()
        public.start()
        prom = Prometheus(
            workdir / "prom",
            [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{public.http_port}"],
        )
        prom.start()
        sipp = Sipp(
            workdir,
            f"127.0.0.1:{separate.sip_port}",
            builtin="uac",
            extra=["-m", str(CALLS), "-r", "5", "-l", str(CALLS), "-d", "1500"],
        ).start()
        result = sipp.wait(30)
        assert result.successful_calls == CALLS and result.failed_calls == 0, result.explain()
        yield Setup(prom, separate, metrics_port, public, result)
    finally:
        if prom is not None:
            prom.stop()
        assert separate.stop() == 0
        assert public.stop() == 0


def _instance(s: Setup) -> str:
    return f'instance="127.0.0.1:{s.metrics_port}"'


def test_prometheus_sees_the_calls(setup: Setup) -> None:
    prom, inst = setup.prom, _instance(setup)
    total = prom.wait_for(f"sum(gateway_calls_total{{{inst}}})", lambda v: v == CALLS)
    assert total == CALLS
    by_outcome = prom.query(f"sum by (leg, direction, outcome) (gateway_calls_total{{{inst}}})")
    series = {
        (r["metric"]["leg"], r["metric"]["direction"], r["metric"]["outcome"]): float(r["value"][1])
        for r in by_outcome["data"]["result"]
    }
    # sipp hung up each call after -d 1500 ms: BYE from the caller
    assert series == {("sip", "inbound", "remote_hangup"): CALLS}, series
    setup_count = prom.wait_for(
        f"sum(gateway_call_setup_seconds_count{{{inst}}})", lambda v: (v or 0) >= CALLS
    )
    assert setup_count is not None and setup_count >= CALLS
    # 1.5 s of greeting audio per call at 50 packets/s: far more than one packet each
    out = prom.wait_for(
        f'sum(gateway_rtp_packets_total{{{inst},direction="out"}})',
        lambda v: (v or 0) >= CALLS * 20,
    )
    assert out is not None and out >= CALLS * 20
    invites = prom.query_value(f'sum(gateway_sip_requests_total{{{inst},method="INVITE"}})')
    assert invites == CALLS
    assert prom.query_value(f"sum(gateway_calls_active{{{inst}}})") == 0
    assert prom.query_value(f"gateway_draining{{{inst}}}") == 0
    build = prom.query(f"gateway_build_info{{{inst}}}")["data"]["result"]
    assert len(build) == 1 and build[0]["metric"].get("version"), build


def test_the_other_instance_saw_no_calls(setup: Setup) -> None:
    other = f'instance="127.0.0.1:{setup.public.http_port}"'
    assert setup.prom.wait_for(f"up{{{other}}}", lambda v: v == 1) == 1
    assert setup.prom.query_value(f"sum(gateway_calls_total{{{other}}})") is None
    assert setup.prom.query_value(f"count(gateway_build_info{{{other}}})") == 1


def test_metrics_listen_keeps_metrics_off_the_public_port(setup: Setup) -> None:
    status, _ = _get(f"http://127.0.0.1:{setup.separate.http_port}/metrics")
    assert status == 404
    status, body = _get(f"http://127.0.0.1:{setup.metrics_port}/metrics")
    assert status == 200 and "gateway_calls_total" in body
    # and the metrics listener serves nothing else
    status, _ = _get(f"http://127.0.0.1:{setup.metrics_port}/calls")
    assert status == 404
    # the default: /metrics on the HTTP port
    status, body = _get(f"http://127.0.0.1:{setup.public.http_port}/metrics")
    assert status == 200 and "gateway_build_info" in body


def _live_names(text: str) -> tuple[set[str], set[str]]:
    """(sample names with at least one sample, family names declared by # TYPE)."""
    samples = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    families = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) \S+$", text, re.M)}
    return samples, families


def test_dashboard_and_alerts_use_live_series(setup: Setup) -> None:
    _, text = _get(f"http://127.0.0.1:{setup.metrics_port}/metrics")
    samples, families = _live_names(text)
    assert samples >= PRODUCED_BY_A_CALL, sorted(PRODUCED_BY_A_CALL - samples)
    prom, inst = setup.prom, _instance(setup)
    # Prometheus has scraped at least once after the calls ended
    prom.wait_for(f"sum(gateway_calls_total{{{inst}}})", lambda v: v == CALLS)
    problems: list[str] = []
    used: set[str] = set()
    for where, expr in all_exprs():
        answer = prom.query(expr)
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')}")
        for name, _labels in promql_selectors(expr):
            if name in PROMETHEUS_SERIES:
                continue
            used.add(name)
            # a name with no sample yet must still be a family the live gateway declares
            # (a labelled counter no event has touched), under its exposition name
            base = re.sub(r"_(total|bucket|count|sum|info)$", "", name)
            if name not in samples and base not in families and name not in families:
                problems.append(f"{where}: {name} is not in the live /metrics")
    assert not problems, "\n".join(problems)
    # what a call produces, the dashboard reads from Prometheus under the same names
    for name in sorted(used & PRODUCED_BY_A_CALL):
        count = prom.query_value(f'count({{__name__="{name}",{inst}}})')
        assert count and count >= 1, f"{name}: no series in Prometheus"
    assert len(used & PRODUCED_BY_A_CALL) >= 10


def test_dashboard_panels_show_the_calls(setup: Setup) -> None:
    """The panels that should show a plain call's traffic return data in Prometheus."""
    prom, inst = setup.prom, _instance(setup)
    prom.wait_for(f"sum(gateway_calls_total{{{inst}}})", lambda v: v == CALLS)
    wanted = {"Calls ended by outcome", "RTP packets", "Call setup time", "Realtime sessions"}
    seen: set[str] = set()
    for where, expr in all_exprs():
        title = where.removeprefix("dashboard: ")
        if title not in wanted:
            continue
        # the dashboard's 1m windows over a 3m range: the calls happened in it
        # (a counter series is born at its first value: rate() needs a second scrape)
        windowed = expr.replace("[1m]", "[3m]")
        deadline = time.monotonic() + 10
        while not prom.query(windowed)["data"]["result"]:
            assert time.monotonic() < deadline, f"{title}: {windowed} returned nothing"
            time.sleep(0.5)
        seen.add(title)
    assert seen == wanted
