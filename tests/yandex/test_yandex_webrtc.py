"""A WebRTC call (the aiortc client) to the whole gateway with `--provider yandex` pointed at the
Yandex-flavoured local provider: the greeting and the echo are heard by content after
44.1 kHz -> 48 kHz (Opus), a DTMF # on the data channel reaches the scenario, the model calls
end_call, and the gateway ends the call."""

from __future__ import annotations

import json

import aiohttp
import numpy as np
import telcodecs
from aiortc import RTCSessionDescription

from gateway.media.format import AudioFormat
from gateway.realtime.local.server import LocalProvider
from gateway.secret import Secret
from tests.support.audio import best_abs_correlation, chirp
from tests.support.gateway import running_gateway
from tests.support.waiting import wait_for
from tests.support.webrtc import Client

KEY = "yc-api-key-webrtc-test-3"


async def test_webrtc_call_greeting_echo_dtmf_and_end_call() -> None:
    provider = LocalProvider("yandex", use_espeak=False, record_frames=True, require_token=KEY)
    await provider.start()
    said = chirp(1.2)
    # 1.2 s of silence (the greeting plays), a chirp (Opus keeps its waveform), then silence
    pcm = np.concatenate([np.zeros(57600, np.int16), said, np.zeros(48000 * 6, np.int16)])
    client = Client(pcm)
    try:
        async with running_gateway(
            provider="yandex",
            provider_url=provider.url,
            yandex_folder_id="b1gtest",
            yandex_api_key=Secret(KEY),
            vad_silence_ms=400,
        ) as gw:
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"http://127.0.0.1:{gw.http_port}/webrtc/offer",
                    json={"sdp": offer, "type": "offer"},
                )
                assert resp.status == 201, await resp.text()
                body = await resp.json()
            await client.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
            call = gw.manager.calls[body["call_id"]]
            assert call._link.output_format == AudioFormat("pcm16", 44100)
            # greeting: the 44.1 kHz prompt, resampled to 48 kHz, through Opus
            greeting = np.frombuffer(
                provider.options.prompts.audio("greeting", AudioFormat("pcm16", 44100)), "<i2"
            )
            up = telcodecs.Resampler(44100, 48000)
            greeting_48k = np.concatenate([up.process(greeting), up.flush()])
            await wait_for(
                lambda: best_abs_correlation(client.heard_pcm(), greeting_48k[4800:24000]) > 0.8,
                10,
                every=0.05,
            )
            # echo of what was said
            await wait_for(
                lambda: best_abs_correlation(client.heard_pcm(), said[9600:48000]) > 0.9,
                12,
                every=0.05,
            )
            # DTMF # on the data channel: the scenario gets it, the model ends the call
            client.channel.send(json.dumps({"type": "dtmf", "digit": "#"}))
            await wait_for(lambda: not gw.manager.calls, 12, every=0.05)
            assert call.outcome == "completed"
            assert "end_call:ok" in call.stats["tool_calls"]
            assert call.stats["dtmf_digits"] == 1
    finally:
        await client.close()
        await provider.stop()
    frames = [json.loads(f) for f in provider.sessions[0].received or []]
    assert not {f["type"] for f in frames} & {
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
    }
    assert provider.sessions[0].stats["errors"] == 0
