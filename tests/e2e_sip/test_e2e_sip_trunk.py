"""A busy trunk against `gateway serve` as users run it (issue 13, items 3 and 10), with sipp.

- 320 calls at 40 calls/s from one allowed address, default settings: every call completes, no
  ACK is lost (no 200 OK is re-sent), every BYE gets its 200 at the first send, every hang-up
  ends its call on time, and nothing is refused.
- An INVITE burst at 500 calls/s over the call budget, while an address outside the allow-list
  floods too: every INVITE of the trunk is answered, 200 or 503 with Retry-After (never
  silence); the stranger's excess is dropped silently and counted; the refusal log has at most
  one line per source per 10 s, and its counts add up to the refusals counted in /metrics.
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path
from typing import Any

from tests.support.gateway import GatewayProcess, call_summaries
from tests.support.sipp import Sipp

CALLS = 320
RATE = 40
CALL_MS = 1000


def refusal_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    return [
        line
        for line in gw.log_lines()
        if line.get("event") in ("sip_request_refused", "sip_request_refusals_suppressed")
    ]


def rejected_counts(gw: GatewayProcess) -> dict[str, float]:
    status, text = gw.http("GET", "/metrics")
    assert status == 200
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'(?m)^gateway_sip_rejected_total\{reason="(\w+)"\} (\S+)$', text)
    }


def test_a_trunk_at_40_calls_per_second_loses_no_message(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()  # default settings: the trunk is 127.0.0.1
    sipp = Sipp(
        tmp_path,
        f"127.0.0.1:{gw.sip_port}",
        builtin="uac",
        extra=["-m", str(CALLS), "-r", str(RATE), "-l", "200", "-d", str(CALL_MS)],
        timeout=60,
    )
    try:
        result = sipp.start().wait()
    finally:
        sipp.kill()
        status = gw.stop()
    assert result.returncode == 0 and result.successful_calls == CALLS, result.explain()
    assert status == 0
    trace = sipp.traced()
    invite_200s = collections.Counter(
        m.call_id
        for m in trace
        if m.direction == "received" and m.status == 200 and m.cseq_method == "INVITE"
    )
    byes = collections.Counter(
        m.call_id for m in trace if m.direction == "sent" and m.method == "BYE"
    )
    bye_200s = collections.Counter(
        m.call_id
        for m in trace
        if m.direction == "received" and m.status == 200 and m.cseq_method == "BYE"
    )
    # one 200 per INVITE: the ACK arrived, the gateway never re-sent its 200 (§13.3.1.4)
    assert len(invite_200s) == CALLS and set(invite_200s.values()) == {1}, (
        f"200 OKs re-sent: {sum(invite_200s.values()) - len(invite_200s)}"
    )
    # one BYE per call, answered at its first send
    assert len(byes) == CALLS and set(byes.values()) == {1}, (
        f"BYEs re-sent: {sum(v - 1 for v in byes.values())}"
    )
    assert len(bye_200s) == CALLS
    assert result.stats.get("Retransmissions(C)") == "0", result.stats
    # every call ended by the caller's BYE, on time (not seconds later)
    calls = call_summaries(gw)
    assert len(calls) == CALLS and {c["outcome"] for c in calls} == {"remote_hangup"}
    late = [c["duration_s"] for c in calls if float(c["duration_s"]) > CALL_MS / 1000 + 1.0]
    assert not late, f"hang-ups delayed: {late}"
    assert refusal_lines(gw) == []


def test_an_invite_burst_gets_503_and_refusals_are_logged_in_bounded_lines(
    tmp_path: Path,
) -> None:
    burst_calls = 500
    gw = GatewayProcess(tmp_path, "--sip-allow", "127.0.0.1/32").start()
    trunk = Sipp(
        tmp_path,
        f"127.0.0.1:{gw.sip_port}",
        scenario="uac_200_or_503.xml",
        extra=["-m", str(burst_calls), "-r", "500", "-l", str(burst_calls), "-d", "300"],
        timeout=40,
    )
    stranger = Sipp(  # not allow-listed: INVITEs get 403 while its budget lasts, then nothing
        tmp_path,
        f"127.0.0.1:{gw.sip_port}",
        builtin="uac",
        local_ip="127.0.0.3",
        extra=["-m", "1000", "-r", "500", "-l", "1000"],
        timeout=6,
    )
    try:
        started = time.monotonic()
        stranger.start()
        result = trunk.start().wait()
        stranger.wait()
        # a summary line is due 10 s after each source's first line: let one come on its timer
        time.sleep(max(0.0, started + 11.0 - time.monotonic()))
        counted = rejected_counts(gw)
    finally:
        trunk.kill()
        stranger.kill()
        status = gw.stop()
    assert status == 0
    assert result.returncode == 0 and result.successful_calls == burst_calls, result.explain()
    trace = trunk.traced()
    answers = collections.Counter(
        m.status for m in trace if m.direction == "received" and m.cseq_method == "INVITE"
    )
    refused = [m for m in trace if m.direction == "received" and m.status == 503]
    assert answers[200] >= 100 and len(refused) >= 200, answers  # the burst, then the excess
    assert all(re.search(r"(?m)^Retry-After: \d+", m.text) for m in refused)
    assert counted.get("rate_limited", 0) >= 200, counted
    assert counted.get("not_allowed", 0) >= 100, counted  # the stranger's first ones: 403

    # the refusal log: at most one line per source per 10 s (plus the one written at
    # shutdown), and every refusal counted in /metrics is in a line or a summary's count
    lines = refusal_lines(gw)
    by_source = collections.Counter(line["source"] for line in lines)
    assert set(by_source) == {"127.0.0.1", "127.0.0.3"}, lines
    assert all(n <= 3 for n in by_source.values()), by_source
    firsts = [line for line in lines if line["event"] == "sip_request_refused"]
    assert {(f["source"], f["method"]) for f in firsts} == {
        ("127.0.0.1", "INVITE"),
        ("127.0.0.3", "INVITE"),
    }
    assert all(set(f) >= {"source", "method", "status", "reason"} for f in firsts)
    suppressed = [line for line in lines if line["event"] == "sip_request_refusals_suppressed"]
    stopping = next(x["timestamp"] for x in gw.log_lines() if x["event"] == "gateway_stopping")
    assert any(line["timestamp"] < stopping for line in suppressed), "no summary on its timer"
    logged = len(firsts) + sum(line["count"] for line in suppressed)
    assert logged == sum(counted.values()), (logged, counted)
    reasons: collections.Counter[str] = collections.Counter()
    for line in suppressed:
        reasons.update(line["reasons"])
    assert reasons["rate_limited"] >= 200 and reasons["not_allowed"] >= 50, reasons
    assert "Authorization" not in str(lines) and "Via" not in str(lines)  # no headers logged
