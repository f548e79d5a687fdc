"""The Call against the real local Realtime provider, with an in-memory leg on the media clock,
end to end: greeting, echo by cross-correlation, barge-in timing and truncate accounting, DTMF
tools, provider loss, and clean teardown. The bridge's logic itself (batching, barge-in at every
point of a response, truncate accounting, late deltas, hold, format changes) is tested in
simulated time in test_bridge_core.py."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from pathlib import Path

import numpy as np

from gateway.call.call import Call, CallOptions
from gateway.call.default_scenario import setup
from gateway.call.events import CallEnded
from gateway.call.manager import CallManager
from gateway.media.format import PCMU_8K, AudioFormat
from gateway.media.port import DtmfReceived
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import Pcm, best_correlation, speech_like
from tests.support.local_provider import sent_client_events
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for


async def test_greeting_then_echo_of_what_the_caller_said(provider: LocalProvider) -> None:
    call, m = await open_call(provider)
    manager = CallManager(10)
    task = manager.start(call, setup)
    # The greeting (a chime without espeak-ng) arrives first.
    await wait_for(lambda: any(f is not None for _, f in m.leg.sent), 8.0)
    await wait_for(
        lambda: call.playout.queued_ms == 0 and call.realtime.response_active is False, 8.0
    )
    greeting = provider.options.prompts.audio("greeting", PCMU_8K)
    from gateway.media.convert import decode

    assert best_correlation(decode(greeting, PCMU_8K)[:4000], m.leg.heard()) > 0.95
    # Now the caller speaks; the local model echoes exactly that back.
    said = speech_like(1.2)
    start = len(m.leg.sent)
    m.leg.say(said)
    await wait_for(lambda: sum(1 for _, f in m.leg.sent[start:] if f is not None) > 60, 10)
    await wait_for(lambda: call.playout.queued_ms == 0 and not call.realtime.response_active, 8.0)
    heard_after = m.leg.heard()[start * 160 :]
    # G.711 both ways (passthrough): the echo is the caller's audio, sample for sample.
    score = best_correlation(said[2000:7000], heard_after)
    assert score > 0.99, score
    await call.hangup("completed")
    await task
    assert call.outcome == "completed"
    assert m.leg.closed
    assert len(m.clock) == 0


async def test_transcoding_session_echo_is_resampled_correctly(provider: LocalProvider) -> None:
    call, m = await open_call(provider, fmt=AudioFormat("pcm16", 24000))
    call.options.greeting = False
    task = CallManager(10).start(call, setup)
    said = speech_like(1.2, seed=3)
    await asyncio.sleep(0.2)
    m.leg.say(said)
    await wait_for(lambda: sum(1 for _, f in m.leg.sent if f is not None) > 55, 10)
    await wait_for(lambda: call.playout.queued_ms == 0 and not call.realtime.response_active, 8.0)
    score = best_correlation(said[2000:7000], m.leg.heard())
    assert score > 0.97, score  # 8k -> 24k -> 8k through two G.711 codings
    # Caller audio goes out converted one append at a time: every append is 100 ms of 24 kHz
    # PCM16 (4800 bytes), give or take the resampler's rounding, never a 20 ms frame.
    sizes = [
        len(base64.b64decode(e["audio"]))
        for e in sent_client_events(provider, "input_audio_buffer.append")
    ]
    assert len(sizes) >= 10
    assert all(abs(n - 4800) <= 4 for n in sizes[1:]), sizes
    await call.hangup()
    await task


async def test_barge_in_stops_bot_audio_and_truncates_at_what_was_played(
    provider: LocalProvider,
) -> None:
    call, m = await open_call(provider)
    task = CallManager(10).start(call, setup)
    await wait_for(lambda: any(f is not None for _, f in m.leg.sent), 8.0)
    await asyncio.sleep(0.3)  # some greeting has played
    m.leg.say(speech_like(1.0, seed=5))
    await wait_for(lambda: call.bridge.speech_started_at is not None, 8.0)
    started = call.bridge.speech_started_at
    assert started is not None
    await wait_for(lambda: call.stats["barge_ins"] == 1, 8.0)
    greeting_id = next(iter(call.playout.items))
    greeting = call.playout.items[greeting_id]
    # Bot audio toward the caller stopped within 40 ms of speech_started reaching the gateway.
    assert greeting.last_played_at is not None
    assert greeting.last_played_at - started <= 0.04
    # the truncate is on its way to the provider (sent by the session's send task); that no
    # second one follows, whatever arrives late, is proven in simulated time by
    # test_bridge_core.py (test_one_barge_in_one_truncate_however_often_the_caller_speaks_again)
    await wait_for(lambda: sent_client_events(provider, "conversation.item.truncate") != [], 8.0)
    truncates = sent_client_events(provider, "conversation.item.truncate")
    assert truncates[0]["item_id"] == greeting_id
    # audio_end_ms is what the caller heard (PCMU: 8 bytes per ms), never more than the item holds.
    assert truncates[0]["audio_end_ms"] == greeting.played_bytes // 8
    greeting_played = greeting.played_bytes
    assert 0 < truncates[0]["audio_end_ms"] <= call.item_audio_ms(greeting_id)
    assert truncates[0]["audio_end_ms"] < call.item_audio_ms(greeting_id)  # it was cut short
    # interrupt_response is true: the server cancels, so the gateway sent no response.cancel.
    assert sent_client_events(provider, "response.cancel") == []
    # No error came back for the truncate (pipecat#3677: a bad truncate mutes the bot)...
    await wait_for(lambda: provider.sessions[0].stats.get("truncated", 0) == 1, 8.0)
    assert provider.sessions[0].stats.get("errors", 0) == 0
    # ...and the next turn is heard: the echo of what the caller said.
    await wait_for(
        lambda: any(
            i != greeting_id and p.played_bytes > 8000 for i, p in call.playout.items.items()
        ),
        10,
    )
    assert call.playout.items[greeting_id].played_bytes == greeting_played  # never resumed
    # seconds later, with the echo heard: still the one truncate
    assert len(sent_client_events(provider, "conversation.item.truncate")) == 1
    await call.hangup()
    await task


async def test_dtmf_hash_makes_the_model_end_the_call(provider: LocalProvider) -> None:
    call, m = await open_call(provider)
    call.options.greeting = False
    ended: list[CallEnded] = []
    task = CallManager(10).start(call, setup)
    call.on(CallEnded, ended.append)
    await asyncio.sleep(0.2)
    call.leg_event(DtmfReceived("#", "rfc4733"))
    await asyncio.wait_for(task, 15)
    assert call.outcome == "completed"
    assert "end_call:ok" in call.stats["tool_calls"]
    assert ended and ended[0].outcome == "completed"
    # The goodbye reply was played before the line closed.
    assert any(f is not None for _, f in m.leg.sent)
    outputs = sent_client_events(provider, "conversation.item.create")
    assert any(o["item"].get("type") == "function_call_output" for o in outputs)
    assert any(
        o["item"].get("type") == "message" and o["item"]["content"][0]["text"] == "DTMF: #"
        for o in outputs
    )


async def test_dtmf_zero_transfers_to_the_mapped_target(provider: LocalProvider) -> None:
    call, _m = await open_call(provider)
    call.options.greeting = False
    referred: list[str] = []

    async def transfer(uri: str) -> None:
        referred.append(uri)
        from gateway.media.port import TransferProgress

        call.leg_event(TransferProgress(100, False))
        call.leg_event(TransferProgress(200, True))

    call._transfer_fn = transfer
    task = CallManager(10).start(call, setup)
    await asyncio.sleep(0.2)
    call.leg_event(DtmfReceived("0", "sip_info"))
    await asyncio.wait_for(task, 10)
    assert referred == ["sip:op@127.0.0.1"]
    assert call.outcome == "transferred"


async def test_provider_loss_plays_apology_then_ends(provider: LocalProvider) -> None:
    call, m = await open_call(provider)
    call.options.greeting = False
    task = CallManager(10).start(call, setup)
    await asyncio.sleep(0.3)
    before = len(m.leg.sent)
    await provider.stop()  # the provider goes away for good: reconnect fails
    await asyncio.wait_for(task, 15)
    assert call.outcome == "provider_failed"
    apology_frames = [f for _, f in m.leg.sent[before:] if f is not None]
    assert len(apology_frames) > 25  # at least half a second of apology before BYE
    assert m.leg.closed and len(m.clock) == 0


async def test_handler_error_does_not_end_the_call(provider: LocalProvider) -> None:
    call, _m = await open_call(provider)
    call.options.greeting = False
    seen: list[str] = []

    def broken(_: DtmfReceived) -> None:
        raise RuntimeError("scenario bug")

    def after(ev: DtmfReceived) -> None:
        seen.append(ev.digit)

    def scenario(c: Call) -> None:
        c.on(DtmfReceived, broken)
        c.on(DtmfReceived, after)

    task = CallManager(10).start(call, scenario)
    await asyncio.sleep(0.1)
    call.leg_event(DtmfReceived("5", "rfc4733"))
    await wait_for(lambda: seen == ["5"], 8.0)
    assert call.state == "connected"
    await call.hangup()
    await call.hangup()  # twice is fine
    await task
    assert call.outcome == "completed"


async def test_recording_and_transcript_files(provider: LocalProvider, tmp_path: Path) -> None:
    call, m = await open_call(provider, options=CallOptions(record_dir=str(tmp_path)))
    task = CallManager(10).start(call, setup)
    await wait_for(lambda: any(f is not None for _, f in m.leg.sent), 8.0)
    await wait_for(lambda: call.playout.queued_ms == 0 and not call.realtime.response_active, 8.0)
    said = speech_like(1.0, seed=9)
    m.leg.say(said)
    await wait_for(lambda: call.stats["response_latency_ms"], 10)
    await wait_for(lambda: call.playout.queued_ms == 0 and not call.realtime.response_active, 8.0)
    call.leg_event(DtmfReceived("7", "rfc4733"))
    await asyncio.sleep(0.1)
    await call.hangup()
    await task
    import wave

    wav_path = tmp_path / "c1.wav"
    assert wav_path.exists() and not list(tmp_path.glob(".*.part"))
    with wave.open(str(wav_path)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    # caller audio on the left, the bot's echo of it on the right, later in time
    assert best_correlation(said[1000:6000], left) > 0.99
    assert best_correlation(said[1000:6000], right) > 0.99
    pos_left = _position(said[1000:6000], left)
    pos_right = _position(said[1000:6000], right)
    assert pos_right > pos_left + 8000 * 0.4  # the echo comes after at least the VAD silence
    lines = [json.loads(x) for x in (tmp_path / "c1.jsonl").read_text().splitlines()]
    kinds = [x["kind"] for x in lines]
    assert "dtmf" in kinds and kinds[-1] == "call_ended"
    assert any(x["kind"] == "transcript" and x["role"] == "assistant" for x in lines)
    assert all(a["t"] <= b["t"] for a, b in itertools.pairwise(lines))


def _position(needle: Pcm, haystack: Pcm) -> int:
    a = needle.astype(np.float64)
    b = haystack.astype(np.float64)
    corr = np.correlate(b, a, mode="valid")
    return int(np.argmax(corr))
