"""Scale-out for real: Debian's `kamailio` with deploy/kamailio/kamailio.cfg in front of two
gateway processes on loopback, 40 sipp calls through it, and one instance drained mid-run.

- both instances take calls (their call_summary log lines);
- the drained instance answers OPTIONS with 503, Kamailio stops sending it INVITEs (its log),
  the drained instance's live calls end normally (remote_hangup from sipp's BYE, not drained),
  and every new call lands on the other instance;
- no call fails (sipp), and the drained process exits 0 once its calls have ended.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.gateway import API_TOKEN, GatewayProcess, call_summaries, live_calls, sip_probe
from tests.support.ops_peers import ROUTED_UAC, Kamailio, routed
from tests.support.sipp import Sipp
from tests.support.waiting import wait_until

CALLS = 40
CALL_MS = 4000


def answered_at(summary: dict[str, Any]) -> float:
    """When the call was answered (epoch seconds), from its call_summary line."""
    ended = datetime.fromisoformat(summary["timestamp"].replace("Z", "+00:00")).timestamp()
    return ended - float(summary["duration_s"])


def test_kamailio_spreads_calls_and_a_drained_instance_drops_out(tmp_path: Path) -> None:
    drained = GatewayProcess(tmp_path, "--api-token", API_TOKEN)
    other = GatewayProcess(tmp_path, "--api-token", API_TOKEN)
    sipp: Sipp | None = None
    try:
        drained.start()
        other.start()
        with Kamailio(
            tmp_path / "kamailio",
            [("127.0.0.1", drained.sip_port), ("127.0.0.1", other.sip_port)],
            ping_interval=1,
        ) as kamailio:
            host, port = kamailio.address
            sipp = Sipp(
                tmp_path,
                f"{host}:{port}",
                scenario=ROUTED_UAC,
                extra=["-m", str(CALLS), "-r", "8", "-l", "20", "-d", str(CALL_MS)],
                timeout=45,
            ).start()
            # mid-run: both instances have live calls, then one drains
            wait_until(
                lambda: live_calls(drained) >= 8 and live_calls(other) >= 8,
                timeout=15,
                what="calls on both instances",
            )
            drain_at = time.time()
            status, body = drained.http("POST", "/admin/drain", token=API_TOKEN)
            assert status == 202, body
            mark = len(kamailio.log())
            options = sip_probe(drained, "OPTIONS")
            assert options.startswith("SIP/2.0 503"), options
            # one probe interval (1 s) and a margin: Kamailio has marked it inactive
            time.sleep(2.0)
            settled = len(kamailio.log())
            result = sipp.wait(60)
            log = kamailio.log()
            assert result.successful_calls == CALLS and result.failed_calls == 0, (
                result.explain() + "\n--- kamailio:\n" + log[-3000:]
            )
        # the drained process exits 0 by itself once its calls have ended
        assert drained.wait(15) == 0
    finally:
        if sipp is not None:
            sipp.kill()
        drained.stop()
        other.stop()

    on_drained, on_other = call_summaries(drained), call_summaries(other)
    assert len(on_drained) + len(on_other) == CALLS
    assert len(on_drained) >= 8 and len(on_other) >= CALLS // 2, (len(on_drained), len(on_other))
    # the drained instance's calls ran to their end: sipp hung up, the drain did not
    assert {s["outcome"] for s in on_drained} == {"remote_hangup"}
    assert all(float(s["duration_s"]) >= CALL_MS / 1000 - 0.5 for s in on_drained)
    # no call started on it after the drain began; the rest of the run went to the other
    late = [answered_at(s) - drain_at for s in on_drained if answered_at(s) > drain_at]
    assert not late, f"calls answered by the drained instance after the drain: {late}"
    assert any(answered_at(s) > drain_at + 1.0 for s in on_other)
    # Kamailio: INVITEs sent to the drained instance after it was marked inactive: none
    assert routed(log[settled:], drained.sip_port) == 0, log[settled:][-2000:]
    assert routed(log[settled:], other.sip_port) >= 1
    # any INVITE it still got between the drain and the next probe was failed over (503)
    sent_late = routed(log[mark:settled], drained.sip_port)
    assert len(re.findall(r"failover ->", log[mark:settled])) >= sent_late
