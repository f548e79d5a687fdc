"""The call page in a real browser: headless Chromium (Debian) driven by Playwright, its
microphone fed from a speech WAV made with espeak-ng, talking to the gateway's WebRTC routes on
loopback with a test sink that echoes the caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from gateway.media.port import MediaStarted
from tests.support.audio import best_abs_correlation, read_mono_wav
from tests.support.browser import artifact_path, launch_chromium, speech_wav
from tests.support.waiting import eventually
from tests.support.webrtc import gateway_server

INBOUND_STATS_JS = """async () => {
  const pc = window.gatewayCall.pc;
  if (!pc) return null;
  let packets = 0, bytes = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      packets += s.packetsReceived || 0; bytes += s.bytesReceived || 0;
    }
  });
  return [packets, bytes];
}"""


async def test_page_calls_talks_sends_dtmf_and_hangs_up(tmp_path: Path) -> None:
    wav = speech_wav(tmp_path / "speech.wav", "Hello gateway, this is a test call.", pad_s=0.5)
    speech = read_mono_wav(wav, 48000)
    voiced = np.flatnonzero(np.abs(speech) > 1000)
    # one second from the middle of the utterance: the reference the sink must contain
    mid = (voiced[0] + voiced[-1]) // 2
    reference = speech[mid - 24000 : mid + 24000]

    async with gateway_server() as gw, launch_chromium(wav) as browser:
        page = await browser.new_page(viewport={"width": 390, "height": 844})  # phone-sized
        await page.goto(gw.base_url + "/")
        assert await page.text_content("#call") == "Call"
        await page.click("#call")
        await page.wait_for_function(
            "() => document.querySelector('#status').textContent === 'Connected.'"
        )
        assert list(gw.service.calls) == ["call-1"]
        sink = gw.sinks["call-1"]
        leg = gw.legs["call-1"]
        await sink.wait_for(lambda: any(isinstance(e, MediaStarted) for e in sink.events))

        # audio from the gateway reaches the page: inbound-rtp counters grow
        first = await eventually(
            lambda: page.evaluate(INBOUND_STATS_JS), 5.0, "inbound rtp", every=0.1
        )
        await asyncio.sleep(0.6)
        second = await page.evaluate(INBOUND_STATS_JS)
        assert second[0] > first[0] and second[1] > first[1]

        # the caller's speech reaches the sink, recognisably (Chromium loops the file)
        async def heard_speech() -> bool:
            return best_abs_correlation(sink.received_pcm(), reference) > 0.5

        await eventually(heard_speech, 12.0, "the caller's speech in the sink", every=0.1)

        # events to the page: agent state and transcript, both sides
        await page.wait_for_function("() => window.gatewayCall.callId === 'call-1'")
        leg.send_event({"type": "state", "state": "speaking"})
        leg.send_event({"type": "transcript", "role": "user", "item_id": "u1", "delta": "Hello "})
        leg.send_event({"type": "transcript", "role": "user", "item_id": "u1", "delta": "there"})
        leg.send_event(
            {
                "type": "transcript",
                "role": "assistant",
                "item_id": "a1",
                "text": "Hi, how can I help?",
            }
        )
        await page.wait_for_function(
            "() => document.querySelector('#transcript').textContent.includes('help?')"
        )
        assert await page.text_content("#agent-state") == "speaking"
        transcript = await page.inner_text("#transcript")
        assert "You: Hello there" in transcript
        assert "Agent: Hi, how can I help?" in transcript

        # a keypad press reaches the call as DTMF
        await page.click('#keypad [data-digit="5"]')
        await page.click('#keypad [data-digit="#"]')
        await sink.wait_for(lambda: sink.digits() == "5#", 5.0)

        await page.wait_for_function("() => document.querySelector('#rtt').textContent !== '–'")
        await page.screenshot(path=str(artifact_path("webrtc-call.png")), full_page=True)

        # Hang up ends the leg and frees it
        await page.click("#call")
        await sink.wait_for(lambda: sink.ended() == ["remote_hangup"], 5.0)
        await eventually(lambda: leg.connection_state == "closed", 5.0, "leg closed", every=0.1)
        assert not gw.service.calls
        assert not leg._tasks
        assert await page.text_content("#call") == "Call"

        # a second call, ended from the server side (DELETE): the page notices and resets
        await page.click("#call")
        await page.wait_for_function(
            "() => document.querySelector('#status').textContent === 'Connected.'"
        )
        assert list(gw.service.calls) == ["call-2"]
        async with aiohttp.ClientSession() as http:
            resp = await http.delete(gw.base_url + "/webrtc/calls/call-2")
            assert resp.status == 200
        await page.wait_for_function(
            "() => document.querySelector('#status').textContent === 'The call has ended.'"
        )
        assert await page.text_content("#call") == "Call"
        assert gw.legs["call-2"].connection_state == "closed"
        assert not gw.service.calls


async def test_page_without_token_is_refused_with_a_readable_message(tmp_path: Path) -> None:
    async with gateway_server(api_token="s3cret-token") as gw, launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(gw.base_url + "/")
        await page.click("#call")
        await page.wait_for_selector("#error:not([hidden])")
        message = await page.text_content("#error")
        assert message is not None and "needs an access token" in message
        assert "Error" not in message and "at " not in message  # a sentence, not a trace
        assert gw.service.legs_created == 0
