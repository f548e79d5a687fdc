"""The refusal log's windows in simulated time (issue 13, item 10): one line per refusal, at most
one line per source per window under a flood, with a count of what was suppressed."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.refusals import OTHER, RefusalLog, RefusalLogger, RefusalSummary


def test_first_refusal_is_logged_then_a_flood_is_one_summary_per_window() -> None:
    log = RefusalLog(window=10.0)
    assert log.refused("192.0.2.1", "not_allowed", 0.0) is True
    # 999 more in the next 25 s: none logged at once
    lines = 1
    summaries: list[RefusalSummary] = []
    for i in range(1, 1000):
        now = i * 0.025
        summaries += log.due(now)
        lines += log.refused("192.0.2.1", "rate_limited" if i % 2 else "not_allowed", now)
    summaries += log.due(30.0)
    assert lines == 1
    # a line at 10 s and one at 20 s: at most one per window, and every refusal accounted for
    assert [s.source for s in summaries] == ["192.0.2.1", "192.0.2.1", "192.0.2.1"]
    assert sum(s.total for s in summaries) == 999
    assert summaries[0].counts == {"rate_limited": 200, "not_allowed": 199}
    # quiet for a window: the next refusal is logged at once again
    assert log.due(45.0) == [] and len(log) == 0
    assert log.refused("192.0.2.1", "not_allowed", 46.0) is True


def test_sources_are_windowed_apart_and_bounded() -> None:
    log = RefusalLog(window=10.0, max_sources=3)
    assert [log.refused(f"10.0.0.{i}", "scanner", 0.0) for i in range(3)] == [True] * 3
    # a fourth source opens the shared `other` window; more sources are counted there
    assert log.refused("10.0.0.3", "scanner", 0.0) is True
    assert [log.refused(f"10.0.0.{i}", "scanner", 1.0) for i in range(4, 100)] == [False] * 96
    assert log.refused("10.0.0.1", "scanner", 1.0) is False
    assert len(log) == 4
    assert log.next_due() == 10.0
    due = log.due(10.0)
    assert {s.source: s.total for s in due} == {"10.0.0.1": 1, OTHER: 96}


async def test_the_logger_writes_summaries_on_its_timer_and_at_close() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Capture:
        def info(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

    logger = RefusalLogger(Capture(), "sip_request", window=0.05)
    for _ in range(5):
        logger.refused("192.0.2.7", "rate_limited", method="INVITE", status=503)
    assert lines == [
        (
            "sip_request_refused",
            {"source": "192.0.2.7", "reason": "rate_limited", "method": "INVITE", "status": 503},
        )
    ]
    await asyncio.sleep(0.12)
    assert lines[1] == (
        "sip_request_refusals_suppressed",
        {"source": "192.0.2.7", "count": 4, "reasons": {"rate_limited": 4}, "window_s": 0.05},
    )
    logger.refused("192.0.2.8", "not_allowed", method="OPTIONS", status=403)
    logger.refused("192.0.2.8", "not_allowed", method="OPTIONS", status=403)
    logger.close()  # at shutdown the pending count is written, not lost
    assert lines[-1][0] == "sip_request_refusals_suppressed" and lines[-1][1]["count"] == 1
    assert len(lines) == 4
