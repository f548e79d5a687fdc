"""The call bridge with `--provider yandex` pointed at the Yandex-flavoured local provider (base
URL override), over the in-memory SIP leg on the media clock: the greeting and the echo heard by
content after resampling the 44.1 kHz output, barge-in without input_audio_buffer.clear, DTMF to
the scenario, the end_call tool, and an unsupported event that harms nothing. Every frame of the
call both ways passes the Yandex profile of the schema check."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
import telcodecs

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import CallEnded, DtmfReceived
from gateway.media.format import AudioFormat
from gateway.realtime import events as rt
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import best_correlation, speech_like
from tests.support.local_provider import client_frames
from tests.support.realtime_schema import YandexConformance
from tests.support.waiting import wait_for
from tests.support.yandex import YANDEX_KEY, RunningCall, start_yandex_call, yandex_profile

UNSUPPORTED = ("input_audio_buffer.clear", "output_audio_buffer.clear")
OUT_44K = AudioFormat("pcm16", 44100)


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider("yandex", use_espeak=False, record_frames=True, require_token=YANDEX_KEY)
    await p.start()
    yield p
    await p.stop()


async def idle(c: RunningCall) -> None:
    await wait_for(lambda: c.call.playout.queued_ms == 0 and not c.call.realtime.response_active)


def to_8k(pcm: np.ndarray, rate: int) -> np.ndarray:
    resampler = telcodecs.Resampler(rate, 8000)
    return np.concatenate([resampler.process(pcm.astype(np.int16)), resampler.flush()])


async def test_greeting_and_echo_heard_after_44k_resampling(provider: LocalProvider) -> None:
    c = await start_yandex_call(provider)
    assert c.call._link.output_format == OUT_44K  # the bridge follows session.updated
    assert c.call._link.input_format == AudioFormat("pcm16", 24000)
    await wait_for(lambda: any(f is not None for _, f in c.leg.sent))
    await idle(c)
    # the greeting, by content: the provider's 44.1 kHz prompt, brought to 8 kHz
    greeting_44k = np.frombuffer(provider.options.prompts.audio("greeting", OUT_44K), "<i2")
    greeting_8k = to_8k(greeting_44k, 44100)
    heard = c.leg.heard()
    score = best_correlation(greeting_8k[800:4800], heard)
    assert score >= 0.9, score
    # the played duration matches: a wrong rate would stretch (24k: x1.84) or squeeze it
    greeting_id = next(iter(c.call.playout.items))
    played_ms = c.call.item_played_ms(greeting_id)
    assert abs(played_ms - len(greeting_44k) / 44.1) < 60, (played_ms, len(greeting_44k) / 44.1)
    # the caller speaks; the model echoes it (8k -> 24k -> 44.1k -> 8k, G.711 both ways)
    said = speech_like(1.2, seed=11)
    start = len(c.leg.sent)
    c.leg.say(said)
    await wait_for(lambda: len(c.call.playout.items) >= 2, 10)
    await idle(c)
    after = c.leg.heard()[start * 160 :]
    score = best_correlation(said[2000:7000], after)
    assert score >= 0.9, score
    echo_id = list(c.call.playout.items)[1]
    echo_ms = c.call.item_played_ms(echo_id)
    # the echo lasts what was said plus prefix padding and VAD silence (<= 300 + 400 ms)
    assert 1200 <= echo_ms <= 1200 + 800, echo_ms
    await c.call.hangup("completed")
    await c.task
    assert c.call.outcome == "completed" and c.leg.closed and len(c.clock) == 0
    # conformance: every frame both ways, with the Yandex profile of the schema check
    schema = YandexConformance()
    engine = provider.sessions[0]
    for frame in engine.received or []:
        schema.client(frame)
    for frame in engine.sent or []:
        schema.server(frame)
    sent_types = {json.loads(f)["type"] for f in engine.sent or []}
    assert "conversation.item.input_audio_transcription.completed" in sent_types
    assert schema.checked > 60  # ~40 appends of 100 ms and every server event of the call
    update = next(f for f in client_frames(provider) if f["type"] == "session.update")
    assert "type" not in update["session"]
    assert update["session"]["audio"]["output"]["voice"] == "marina"
    assert engine.stats["errors"] == 0


async def test_barge_in_works_without_buffer_clears(provider: LocalProvider) -> None:
    c = await start_yandex_call(provider)
    await wait_for(lambda: any(f is not None for _, f in c.leg.sent))
    await asyncio.sleep(0.3)  # some greeting has played
    c.leg.say(speech_like(1.0, seed=5))
    await wait_for(lambda: c.call.stats["barge_ins"] == 1)
    greeting_id = next(iter(c.call.playout.items))
    greeting_played = c.call.playout.items[greeting_id].played_bytes
    # the truncate is on its way to the provider (the session's send task sends it)
    await wait_for(
        lambda: any(f["type"] == "conversation.item.truncate" for f in client_frames(provider))
    )
    await asyncio.sleep(0.1)  # and no second one follows
    frames = client_frames(provider)
    truncates = [f for f in frames if f["type"] == "conversation.item.truncate"]
    assert len(truncates) == 1 and truncates[0]["item_id"] == greeting_id
    assert truncates[0]["audio_end_ms"] == c.call.item_played_ms(greeting_id)
    assert 0 < truncates[0]["audio_end_ms"] < c.call.item_audio_ms(greeting_id)
    await wait_for(lambda: provider.sessions[0].stats.get("truncated", 0) == 1)
    # the next turn is heard, and nothing unsupported ever went to the provider
    await wait_for(
        lambda: any(
            i != greeting_id and c.call.item_played_ms(i) > 1000 for i in c.call.playout.items
        ),
        10,
    )
    assert c.call.playout.items[greeting_id].played_bytes == greeting_played  # never resumed
    await c.call.hangup()
    await c.task
    sent = {f["type"] for f in client_frames(provider)}
    assert not sent & set(UNSUPPORTED)
    assert provider.sessions[0].stats["errors"] == 0


async def test_dtmf_reaches_the_scenario_and_hash_ends_the_call(provider: LocalProvider) -> None:
    digits: list[str] = []
    ended: list[CallEnded] = []

    def scenario(call: Call) -> None:
        default_setup(call)
        call.on(DtmfReceived, lambda e: digits.append(e.digit))
        call.on(CallEnded, ended.append)

    c = await start_yandex_call(provider, scenario, greeting=False)
    await asyncio.sleep(0.2)
    c.call.leg_event(DtmfReceived("5", "rfc4733"))
    await wait_for(lambda: digits == ["5"])
    await idle(c)
    c.call.leg_event(DtmfReceived("#", "sip_info"))
    await asyncio.wait_for(c.task, 15)
    assert digits == ["5", "#"]
    assert c.call.outcome == "completed" and ended and ended[0].outcome == "completed"
    assert "end_call:ok" in c.call.stats["tool_calls"]
    assert c.leg.closed
    creates = [f for f in client_frames(provider) if f["type"] == "conversation.item.create"]
    assert any(f["item"]["type"] == "function_call_output" for f in creates)
    assert provider.sessions[0].stats["function_calls"] == 1
    # the goodbye reply after the tool result was played before the line closed
    assert any(f is not None for _, f in c.leg.sent)


async def test_unsupported_event_error_neither_silences_nor_drops_the_call(
    provider: LocalProvider,
) -> None:
    # a profile that does not know Yandex lacks the clears: the client sends one anyway
    naive = dataclasses.replace(yandex_profile(provider), unsupported_events=frozenset())
    errors: list[rt.ErrorOccurred] = []

    def scenario(call: Call) -> None:
        default_setup(call)
        call.realtime.on(rt.ErrorOccurred, errors.append)

    c = await start_yandex_call(provider, scenario, profile=naive)
    await wait_for(lambda: any(f is not None for _, f in c.leg.sent))
    c.call.realtime.send({"type": "input_audio_buffer.clear"})
    await wait_for(lambda: errors, 5)
    assert errors[0].code == "unsupported_event"
    await idle(c)
    # the call is up, and the caller still hears the model
    said = speech_like(1.0, seed=21)
    start = len(c.leg.sent)
    c.leg.say(said)
    await wait_for(lambda: len(c.call.playout.items) >= 2, 10)
    await idle(c)
    assert c.call.state == "connected" and not c.task.done()
    assert best_correlation(said[2000:6000], c.leg.heard()[start * 160 :]) >= 0.9
    await c.call.hangup()
    await c.task
    assert c.call.outcome == "completed"
    sent = [f["type"] for f in client_frames(provider)]
    assert sent.count("input_audio_buffer.clear") == 1
    assert provider.sessions[0].stats["errors"] == 1


async def test_scenario_api_never_sends_unsupported_events_to_yandex(
    provider: LocalProvider,
) -> None:
    c = await start_yandex_call(provider, greeting=False)
    c.call.realtime.input_audio_buffer_clear()  # a no-op where the provider lacks it
    assert c.call._link.clear_output() is False
    await asyncio.sleep(0.2)
    assert c.call.state == "connected"
    await c.call.hangup()
    await c.task
    assert not {f["type"] for f in client_frames(provider)} & set(UNSUPPORTED)
    assert provider.sessions[0].stats["errors"] == 0
