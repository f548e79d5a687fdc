"""The call page in headless Chromium: a closed tab or a killed browser ends its call within
5 s, and a whole call leaves the page's console free of errors and 404s.

A tab that closes sends a `pagehide` beacon (its body is the call's hang-up secret); a browser
that is killed sends nothing, and the gateway's ICE consent checks (RFC 7675) end the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from gateway.secret import Secret
from tests.support.browser import (
    CHROMIUM,
    chromium_args,
    launch_chromium,
    require_chromium,
    speech_wav,
)
from tests.support.gateway import running_gateway
from tests.support.harness import free_port
from tests.support.waiting import eventually

TOKEN = "page-end-token-5c0e2a"
#: the issue's target: a closed tab's call is gone from GET /calls within this
END_WITHIN_S = 5.0


async def _live_calls(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(base + "/calls", headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 200
        calls: list[dict[str, Any]] = (await resp.json())["calls"]
        return calls


async def _seconds_until_no_calls(base: str, limit: float) -> float:
    started = time.monotonic()
    while await _live_calls(base):
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"the call is still listed after {elapsed:.1f} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _start_call(page: Any, base: str) -> str:
    page.set_default_timeout(10_000)
    await page.goto(f"{base}/#token={TOKEN}")
    await page.click("#call")
    await page.wait_for_function(
        "() => document.querySelector('#status').textContent === 'Connected.'"
    )
    (call,) = await _live_calls(base)
    assert call["leg"] == "webrtc"
    call_id: str = call["id"]
    return call_id


async def test_closed_tab_ends_its_call_by_beacon(tmp_path: Path) -> None:
    wav = speech_wav(tmp_path / "speech.wav", "Hello.", pad_s=1.0)
    async with running_gateway(api_token=Secret(TOKEN)) as gw, launch_chromium(wav) as browser:
        base = f"http://127.0.0.1:{gw.http_port}"
        for close in ("page", "context"):
            context = await browser.new_context()
            page = await context.new_page()
            await _start_call(page, base)
            with structlog.testing.capture_logs() as logs:
                if close == "page":
                    await page.close(run_before_unload=True)
                else:
                    await context.close()
                took = await _seconds_until_no_calls(base, END_WITHIN_S)
            beacons = [e for e in logs if e["event"] == "webrtc_beacon"]
            print(f"closed by {close}.close(): the call ended after {took:.2f} s")
            # the tab's beacon came (consent would take about 3 s and log no beacon). Chromium
            # may also close the peer connection (DTLS close_notify) as the tab goes: whichever
            # is first ends the call, and a beacon after that finds it gone (live False) and is
            # answered as an idempotent hang-up (CI, 2026-12-07: the close won by 70 ms)
            assert len(beacons) == 1, (close, logs)
            assert took < 2.0, (close, took)
            if close == "page":
                await context.close()
        assert not gw.manager.calls


@asynccontextmanager
async def _chromium_process(fake_audio: Path, profile: Path) -> AsyncIterator[tuple[Any, int]]:
    """Chromium started here (so the test holds its PID) and driven over CDP."""
    require_chromium()
    from playwright.async_api import async_playwright

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless=new",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        *chromium_args(fake_audio),
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with async_playwright() as pw:
            browser = None
            deadline = time.monotonic() + 20
            while browser is None:
                try:
                    browser = await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
                except Exception:
                    if time.monotonic() > deadline or proc.returncode is not None:
                        raise
                    await asyncio.sleep(0.2)
            yield browser, proc.pid
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)


async def test_killed_browser_ends_its_call_by_ice_consent(tmp_path: Path) -> None:
    wav = speech_wav(tmp_path / "speech.wav", "Hello.", pad_s=1.0)
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        base = f"http://127.0.0.1:{gw.http_port}"
        async with _chromium_process(wav, tmp_path / "profile") as (browser, pid):
            context = browser.contexts[0] if browser.contexts else await browser.new_context()
            page = await context.new_page()
            call_id = await _start_call(page, base)
            leg = gw.webrtc.calls[call_id] if gw.webrtc is not None else None
            assert leg is not None
            await asyncio.sleep(1.0)  # a few consent checks answered
            with structlog.testing.capture_logs() as logs:
                os.killpg(pid, signal.SIGKILL)  # no pagehide, no beacon, no DTLS close
                took = await _seconds_until_no_calls(base, END_WITHIN_S)
        print(f"browser killed: the call ended after {took:.2f} s")
        assert leg.ended == "ice_failed"
        events = [e["event"] for e in logs]
        assert "webrtc_consent_expired" in events and "webrtc_beacon" not in events, events
        assert not gw.manager.calls


async def test_a_whole_call_leaves_the_console_clean(tmp_path: Path) -> None:
    """Console messages and failed responses over two calls: hung up on the page, and ended by
    the gateway (DELETE /calls/{id}); the transcript shows both sides (local provider)."""
    wav = speech_wav(tmp_path / "speech.wav", "Hello gateway, this is a test.", pad_s=1.5)
    async with running_gateway(api_token=Secret(TOKEN)) as gw, launch_chromium(wav) as browser:
        base = f"http://127.0.0.1:{gw.http_port}"
        page = await browser.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.method} {r.url}"))
        statuses: list[tuple[str, str, int]] = []
        page.on("response", lambda r: statuses.append((r.request.method, r.url, r.status)))

        # --- a call hung up on the page, after both sides of the transcript showed
        await _start_call(page, base)
        await page.wait_for_function(
            "() => document.querySelectorAll('#transcript li.assistant .text').length > 0"
            " && [...document.querySelectorAll('#transcript li.user .text')]"
            "      .some((e) => e.textContent.length > 0)",
            timeout=20_000,
        )
        transcript = await page.inner_text("#transcript")
        assert "Agent: " in transcript and "You: [caller: " in transcript, transcript
        await page.click("#call")
        await page.wait_for_function(
            "() => document.querySelector('#status').textContent === 'Call ended.'"
        )
        await eventually(lambda: not gw.manager.calls, 5.0, "the call to end")

        # --- a call the gateway ends: the page is told and sends nothing back
        call_id = await _start_call(page, base)
        async with aiohttp.ClientSession() as http:
            resp = await http.delete(
                f"{base}/calls/{call_id}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert resp.status in (200, 202, 204)
        await page.wait_for_function(
            "() => document.querySelector('#status').textContent === 'The call has ended.'"
        )
        await asyncio.sleep(0.5)  # anything the page sends late

        bad = [s for s in statuses if s[2] >= 400]
        assert not bad, bad
        assert not problems, problems
        deletes = [s for s in statuses if s[0] == "DELETE"]
        assert [s[2] for s in deletes] in ([200], [204]), statuses
