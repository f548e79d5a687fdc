"""`make run` serves the call page: a real `python -m gateway serve` process with its defaults
(local provider, no API token) and a real headless Chromium on http://127.0.0.1:PORT/. One click
on Call connects, with no manual step and no token; the greeting reaches the page, and what the
fake microphone says comes back from the local echo agent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.browser import artifact_path, launch_chromium, speech_wav
from tests.support.gateway import GatewayProcess
from tests.support.waiting import eventually

# the gateway is a child process on uvloop: the test's own loop does not matter (conftest.py)
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

INBOUND_BYTES_JS = """async () => {
  const pc = window.gatewayCall.pc;
  if (!pc) return 0;
  let bytes = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") bytes += s.bytesReceived || 0;
  });
  return bytes;
}"""


async def test_served_page_connects_with_one_click(tmp_path: Path) -> None:
    wav = speech_wav(tmp_path / "speech.wav", "Hello there.", pad_s=1.0)
    gateway = GatewayProcess(tmp_path)
    for key in (
        "OPENAI_API_KEY",
        "GATEWAY_OPENAI_API_KEY",
        "GATEWAY_PROVIDER",
        "GATEWAY_API_TOKEN",
    ):
        gateway.env.pop(key, None)  # as on a fresh checkout: `make run` needs nothing set
    await asyncio.to_thread(gateway.start)
    try:
        started = [e for e in gateway.log_lines() if e.get("event") == "gateway_started"]
        assert started and started[0]["provider"] == "local"
        async with launch_chromium(wav) as browser:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            await page.goto(f"http://127.0.0.1:{gateway.http_port}/")
            assert await page.title() == "Call the agent"
            await page.click("#call")
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent === 'Connected.'"
            )
            assert await page.is_hidden("#error")
            assert await page.text_content("#call") == "Hang up"

            # the call is up in the gateway (no token configured: loopback may list calls)
            status, body = await asyncio.to_thread(gateway.http, "GET", "/calls")
            assert status == 200
            assert [c["leg"] for c in body["calls"]] == ["webrtc"]
            # the greeting is heard, and the agent's state shows on the page
            await eventually(lambda: _more_than(page, 20_000), 10.0, "20 kB of the agent's audio")
            await page.wait_for_function(
                "() => window.gatewayCall.events.some((e) => e.type === 'state'"
                " && e.state === 'speaking')"
            )
            # the caller's words reach the echo agent and its answer (the echo) comes back:
            # the local provider's transcript of it shows on the page
            await page.wait_for_function(
                "() => document.querySelector('#transcript').textContent.includes('echo of')"
            )
            await page.screenshot(path=str(artifact_path("webrtc-make-run.png")))

            await page.click("#call")

            async def no_calls() -> bool:
                status, body = await asyncio.to_thread(gateway.http, "GET", "/calls")
                return status == 200 and body["calls"] == []

            await eventually(no_calls, 5.0, "the call to end")
    finally:
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0
    errors = [e for e in gateway.log_lines() if e.get("level") in ("error", "critical")]
    assert not errors, errors


async def _more_than(page: object, nbytes: int) -> bool:
    value = await page.evaluate(INBOUND_BYTES_JS)  # type: ignore[attr-defined]
    return bool(value > nbytes)
