"""The calls console in headless Chromium against a real `gateway serve`: a call placed by sipp
appears live on the page, ends, and the page then shows its transcript, latency figures and a
playable recording; without the token the page refuses (and the API answers 401)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from tests.support.browser import launch_chromium
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp

TOKEN = "console-test-token-19"


async def test_a_sipp_call_shows_live_then_in_the_history(tmp_path: Path) -> None:
    record_dir = tmp_path / "rec"
    gw = GatewayProcess(tmp_path, "--api-token", TOKEN, "--record-dir", str(record_dir))
    await asyncio.to_thread(gw.start)
    try:
        async with launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{gw.http_port}/console#token={TOKEN}")
            await page.wait_for_function("window.gatewayConsole && window.gatewayConsole.streaming")
            sipp = Sipp(
                tmp_path,
                f"127.0.0.1:{gw.sip_port}",
                scenario="console_speak_then_listen.xml",
                extra=["-m", "1", "-s", "agent"],
                timeout=40,
            ).start()
            try:
                # live: pushed by the server, with the leg, direction and state
                live_row = page.locator("#live tbody tr[data-call-id]")
                await live_row.first.wait_for(timeout=15000)
                cells = await live_row.first.locator("td").all_inner_texts()
                assert cells[1] == "sip" and cells[2] == "inbound", cells
                assert cells[4] == "agent", cells
                call_id = await live_row.first.get_attribute("data-call-id")
                result = await sipp.wait_async()
            finally:
                sipp.kill()
            assert result.successful_calls == 1, result.explain()
            # ended: it leaves the live table and shows in the history
            await page.locator("#live tbody tr[data-call-id]").wait_for(
                state="detached", timeout=15000
            )
            row = page.locator(f'#history tbody tr[data-call-id="{call_id}"]')
            await row.wait_for(timeout=15000)
            await row.click()
            await page.locator("#detail").wait_for(state="visible")
            transcript = await page.locator("#transcript li").all_inner_texts()
            assert transcript, "no transcript lines"
            assert any(t.startswith("Agent") for t in transcript), transcript
            latency = dict(
                zip(
                    await page.locator("#latency td:nth-child(1)").all_inner_texts(),
                    await page.locator("#latency td:nth-child(2)").all_inner_texts(),
                    strict=True,
                )
            )
            total = latency["speech_stopped → first packet to the caller"]
            assert total.endswith(" ms") and float(total[:-3]) > 0, latency
            duration = await page.wait_for_function(
                """() => { const a = document.getElementById('recording-audio');
                   return a.src && isFinite(a.duration) && a.duration > 0 ? a.duration : null; }""",
                timeout=15000,
            )
            seconds = await duration.json_value()
            assert math.isfinite(seconds) and seconds > 1.0, seconds
            assert await page.locator("#error").is_hidden()
    finally:
        await asyncio.to_thread(gw.stop)
    # the history is the default file under the working directory
    assert (tmp_path / "data" / "history.sqlite3").is_file()


async def test_the_page_refuses_without_the_token(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, "--api-token", TOKEN, "--history-path", "h.sqlite3")
    await asyncio.to_thread(gw.start)
    try:
        status, body = await asyncio.to_thread(gw.http, "GET", "/history")
        assert status == 401, body
        status, _ = await asyncio.to_thread(gw.http, "GET", "/live-calls")
        assert status == 401
        status, _ = await asyncio.to_thread(gw.http, "GET", "/history", None, "wrong")
        assert status == 401
        status, body = await asyncio.to_thread(gw.http, "GET", "/history", None, TOKEN)
        assert status == 200 and body == {"calls": []}, body
        async with launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{gw.http_port}/console")
            error = page.locator("#error")
            await error.wait_for(state="visible", timeout=10000)
            assert "#token=" in await error.inner_text()
            assert await page.locator("#live tbody tr[data-call-id]").count() == 0
    finally:
        await asyncio.to_thread(gw.stop)
