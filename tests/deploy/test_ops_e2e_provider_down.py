"""A gateway whose AI provider is down, behind the real Kamailio (deploy/kamailio/kamailio.cfg)
with a healthy gateway beside it (issue 13, item 10).

- Its first INVITEs get 503 (provider_unavailable) and Kamailio fails them over: no call fails.
- After 3 connect failures in a row it is not ready: /readyz 503 `provider_unavailable`,
  OPTIONS 503, so Kamailio's dispatcher probe takes it out and routes nothing more to it.
- A provider then comes up at its URL: its own probe finds it after the cool-down, /readyz and
  OPTIONS are 200 again, Kamailio puts it back, and calls land on it and complete.
- Its refusals are logged (bounded, with counts), the breaker's opening once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.support.gateway import GatewayProcess, call_summaries, sip_probe
from tests.support.harness import ChildProcess, free_port, start_process
from tests.support.ops_peers import ROUTED_UAC, Kamailio, routed
from tests.support.sipp import Sipp
from tests.support.waiting import wait_until


def calls_through(kamailio: Kamailio, workdir: Path, calls: int) -> None:
    host, port = kamailio.address
    sipp = Sipp(
        workdir,
        f"{host}:{port}",
        scenario=ROUTED_UAC,
        extra=["-m", str(calls), "-r", "5", "-l", "20", "-d", "1000"],
        timeout=40,
    )
    try:
        result = sipp.start().wait(60)
    finally:
        sipp.kill()
    assert result.successful_calls == calls and result.failed_calls == 0, (
        result.explain() + "\n--- kamailio:\n" + kamailio.log()[-3000:]
    )


def test_kamailio_routes_around_a_gateway_whose_provider_is_down(tmp_path: Path) -> None:
    provider_port = free_port()  # nothing listens there yet
    down = GatewayProcess(
        tmp_path,
        "--provider", "url",
        "--provider-url", f"ws://127.0.0.1:{provider_port}/v1/realtime",
        "--provider-breaker-failures", "3",
        "--provider-breaker-cooldown", "2",
    )  # fmt: skip
    healthy = GatewayProcess(tmp_path)
    provider: ChildProcess | None = None
    try:
        down.start()
        healthy.start()
        with Kamailio(
            tmp_path / "kamailio",
            [("127.0.0.1", down.sip_port), ("127.0.0.1", healthy.sip_port)],
            ping_interval=1,
        ) as kamailio:
            # --- the provider is down: calls fail over, the instance drops out
            calls_through(kamailio, tmp_path, 20)
            status, body = down.http("GET", "/readyz")
            assert (status, body) == (
                503,
                {"status": "not_ready", "reason": "provider_unavailable"},
            )
            options = sip_probe(down, "OPTIONS")
            assert options.startswith("SIP/2.0 503") and "Retry-After: 2" in options, options
            log = kamailio.log()
            assert 3 <= routed(log, down.sip_port) <= 12, log[-3000:]
            # a call's summary is logged as its clean-up ends, just after sipp saw the BYE's 200
            wait_until(lambda: len(call_summaries(healthy)) == 20, 5, "20 call summaries")
            assert len(call_summaries(down)) == 0
            # one probe interval and a margin later, nothing more is routed to it
            time.sleep(2.0)
            mark = len(kamailio.log())
            calls_through(kamailio, tmp_path, 10)
            assert routed(kamailio.log()[mark:], down.sip_port) == 0
            wait_until(lambda: len(call_summaries(healthy)) == 30, 5, "30 call summaries")

            # --- the provider comes up at its URL: ready again, back in the set, takes calls
            provider = start_process(
                "provider",
                [sys.executable, "-m", "gateway", "provider", "--listen",
                 f"127.0.0.1:{provider_port}", "--log-format", "json"],
                tmp_path / "provider.log",
            )  # fmt: skip
            wait_until(lambda: down.http("GET", "/readyz")[0] == 200, 10, "ready again")
            assert sip_probe(down, "OPTIONS").startswith("SIP/2.0 200")
            time.sleep(2.0)  # the next dispatcher probe
            mark = len(kamailio.log())
            calls_through(kamailio, tmp_path, 10)
            assert routed(kamailio.log()[mark:], down.sip_port) >= 3
            wait_until(lambda: len(call_summaries(down)) >= 3, 5, "3 call summaries")
    finally:
        if provider is not None:
            provider.stop(timeout=10.0)
        assert down.stop() == 0
        assert healthy.stop() == 0

    lines = list(down.log_lines())
    opened = [x for x in lines if x.get("event") == "provider_circuit_open"]
    assert len(opened) == 1 and opened[0]["failures"] == 3, opened
    assert [x["event"] for x in lines if x.get("event") == "provider_available"] == [
        "provider_available"
    ]
    # each of the first refusals came with the connect error; the ones after the breaker
    # opened did not try the provider at all
    failures = [x for x in lines if x.get("event") == "provider_unavailable"]
    assert 3 <= len(failures) <= 5 and all("connect" in x["error"] for x in failures), failures
    refusals = [x for x in lines if x.get("event", "").startswith("sip_request_refus")]
    first = [x for x in refusals if x["event"] == "sip_request_refused"]
    assert first and first[0]["reason"] == "provider_unavailable", first
    assert first[0]["method"] == "INVITE" and first[0]["status"] == 503
    counted = sum(x.get("count", 0) for x in refusals) + len(first)
    assert counted >= 3 and len(refusals) <= 6, refusals  # Kamailio: one source, summarised
