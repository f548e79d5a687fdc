"""Graceful overload (issue 20) on one real gateway process with sipp callers.

Eight sipp calls to `heavy` run the scenario tests/deploy/scenarios/slow_loop.py, which blocks the
event loop 30 ms of every 40 ms while they are up: the media clock's packets leave late, its
lateness p99 passes `overload_lateness_ms` (15 ms). Then /readyz reports `overload`, a new INVITE
gets 503 with Retry-After and a WebRTC offer 503, each counted with reason `overload`, while the
eight live calls go on to their BYE. Once they have ended (the load is gone) and the p99 has
stayed low for the hold time, /readyz is ready again and a new sipp call is admitted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from tests.support.gateway import (
    GatewayProcess,
    aiortc_offer,
    gateway_process,
    header,
    live_calls,
    post_offer,
    sip_probe,
)
from tests.support.harness import parse_metrics
from tests.support.sip_messages import status_code
from tests.support.sipp import Sipp
from tests.support.waiting import wait_until

SLOW_LOOP = Path(__file__).parent / "scenarios" / "slow_loop.py"
HEAVY_CALLS = 8


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    status, text = gw.http("GET", "/metrics")
    assert status == 200
    return parse_metrics(str(text)).value(name, **labels) or 0.0


def overload_gateway(
    tmp_path: Path, *gate: str
) -> contextlib.AbstractContextManager[GatewayProcess]:
    """A gateway process running the slow_loop scenario with the gate's settings `gate` (the
    test gateways turn both halves off otherwise) and a 1 s hold."""
    return gateway_process(
        tmp_path, "--scenario", str(SLOW_LOOP), *gate, "--overload-hold-s", "1", "--max-calls", "50"
    )


def log_events(gw: GatewayProcess) -> list[str]:
    return [line.get("event", "") for line in gw.log_lines()]


async def test_late_media_refuses_new_calls_and_the_live_ones_go_on(tmp_path: Path) -> None:
    offer = await aiortc_offer()
    with overload_gateway(tmp_path, "--overload-lateness-ms", "15") as gw:
        assert gw.http("GET", "/readyz")[0] == 200
        assert metric(gw, "gateway_overloaded") == 0
        heavy = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            builtin="uac",
            extra=["-s", "heavy", "-m", str(HEAVY_CALLS), "-r", "20", "-d", "9000"],
            timeout=40,
        ).start()
        try:
            wait_until(lambda: live_calls(gw) == HEAVY_CALLS, timeout=10, what="the heavy calls")
            up_at = time.monotonic()
            wait_until(lambda: gw.http("GET", "/readyz")[0] == 503, timeout=6, what="overload")
            status, body = gw.http("GET", "/readyz")
            assert (status, body["reason"]) == (503, "overload"), body
            assert metric(gw, "gateway_overloaded") == 1
            assert metric(gw, "gateway_media_lateness_p99_seconds") > 0.015

            invite = sip_probe(gw, "INVITE")
            assert status_code(invite) == 503, invite
            retry_after = header(invite, "Retry-After")
            assert retry_after is not None and int(retry_after) > 0, invite
            assert metric(gw, "gateway_sip_rejected_total", reason="overload") >= 1
            # a balancer probing with OPTIONS (Kamailio's dispatcher) is told to move away
            options = sip_probe(gw, "OPTIONS")
            assert status_code(options) == 503, options
            assert int(header(options, "Retry-After") or 0) > 0, options

            status, headers, raw = post_offer(gw, offer)
            assert status == 503, raw
            assert json.loads(raw)["error"]["reason"] == "overload"
            assert int(headers["Retry-After"]) > 0

            # the refusals took nothing from the live calls: all still up, inside their 9 s
            assert live_calls(gw) == HEAVY_CALLS
            assert time.monotonic() - up_at < 9
            result = heavy.wait(40)
        finally:
            heavy.kill()
        assert result.successful_calls == HEAVY_CALLS, result.explain()
        assert result.failed_calls == 0, result.explain()

        # the load is gone with the calls: admitted again after the window and the hold
        wait_until(lambda: gw.http("GET", "/readyz")[0] == 200, timeout=10, what="ready again")
        assert metric(gw, "gateway_overloaded") == 0
        assert status_code(sip_probe(gw, "OPTIONS")) == 200
        after = Sipp(
            tmp_path, f"127.0.0.1:{gw.sip_port}", builtin="uac", extra=["-m", "1", "-d", "500"]
        ).start()
        try:
            late = after.wait(20)
        finally:
            after.kill()
        assert late.successful_calls == 1, late.explain()
        events = log_events(gw)
        assert events.count("overload_entered") == 1, events
        assert events.count("overload_left") == 1, events


async def test_a_busy_core_refuses_new_calls_by_its_cpu_share(tmp_path: Path) -> None:
    """The gate's CPU half alone (the lateness half off): two calls to `busy` keep the loop's
    core about 75% busy (well over the threshold even when the test machine's other workers
    compete for it); past `overload_cpu_pct` (25) /readyz reports `overload` and an INVITE gets
    503, the log line names the reason `cpu`, and the share is exported. Once the calls end,
    the gateway is ready again."""
    with overload_gateway(
        tmp_path, "--overload-lateness-ms", "0", "--overload-cpu-pct", "25"
    ) as gw:
        assert gw.http("GET", "/readyz")[0] == 200
        busy = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            builtin="uac",
            extra=["-s", "busy", "-m", "2", "-r", "20", "-d", "6000"],
            timeout=30,
        ).start()
        try:
            wait_until(lambda: live_calls(gw) == 2, timeout=10, what="the busy calls")
            wait_until(lambda: gw.http("GET", "/readyz")[0] == 503, timeout=6, what="overload")
            status, body = gw.http("GET", "/readyz")
            assert (status, body["reason"]) == (503, "overload"), body
            assert metric(gw, "gateway_process_cpu_share") > 0.25
            assert metric(gw, "gateway_overloaded") == 1
            invite = sip_probe(gw, "INVITE")
            assert status_code(invite) == 503, invite
            assert live_calls(gw) == 2  # the live calls go on
            result = busy.wait(30)
        finally:
            busy.kill()
        assert result.successful_calls == 2, result.explain()
        wait_until(lambda: gw.http("GET", "/readyz")[0] == 200, timeout=10, what="ready again")
        entered = [line for line in gw.log_lines() if line.get("event") == "overload_entered"]
        assert [line.get("reason") for line in entered] == ["cpu"], entered
