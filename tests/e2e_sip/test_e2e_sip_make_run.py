"""`make run` is true: `python -m gateway serve` with default settings (only the listen ports and
the RTP range moved so tests can run side by side) takes a softphone call to any user at the
gateway and puts it through to the local echo agent, with no API key anywhere."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp

_PROVIDER_ENV = ("OPENAI_API_KEY", "YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "YANDEX_FOLDER_ID")


async def test_default_serve_answers_a_softphone_with_the_local_agent(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path)
    # defaults only: no provider key, no GATEWAY_* setting inherited from this environment
    gw.env = {
        k: v for k, v in gw.env.items() if not k.startswith("GATEWAY_") and k not in _PROVIDER_ENV
    }
    await asyncio.to_thread(gw.start)
    try:
        sipp = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario="e2e_pcap_short.xml",
            extra=["-m", "1", "-s", "anything"],
            timeout=20,
        ).start()
        try:
            result = await sipp.wait_async()
        finally:
            sipp.kill()
        assert result.successful_calls == 1, result.explain()
        assert "INVITE sip:anything@127.0.0.1" in sipp.messages
        status, _body = await asyncio.to_thread(gw.http, "GET", "/healthz")
        assert status == 200
    finally:
        rc = await asyncio.to_thread(gw.stop)
    assert rc == 0, gw.log_path.read_text()[-3000:]
    lines = list(gw.log_lines())
    started = [x for x in lines if x.get("event") == "gateway_started"]
    assert started and started[0]["provider"] == "local", started
    summaries = [x for x in lines if x.get("event") == "call_summary"]
    assert len(summaries) == 1, gw.log_path.read_text()[-3000:]
    summary = summaries[0]
    assert summary["outcome"] == "remote_hangup"
    assert summary["provider"] == "local"
    # the greeting went out as RTP and the caller's speech came in
    assert summary["rtp_out"] > 50, summary
    assert summary["rtp_in"] > 50, summary
