"""The asyncio client against the local provider over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway import metrics
from gateway.errors import ConnectError
from gateway.media.format import PCM16_24K, PCMU_8K, AudioFormat
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.events import SessionConfig, TurnDetection
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from gateway.secret import Secret
from tests.support.realtime import (
    PHONE,
    collect_response_audio,
    next_of,
    silence_ulaw,
    speech_ulaw,
)

FAKE_KEY = "sk-fake-9f8e7d6c5b4a-secret"


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False, record_frames=True, speedup=20.0)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_session_greeting_echo_and_client_conformance(
    provider: LocalProvider, conform: Any
) -> None:
    profile = make_profile("local", base_url=provider.url)
    async with RealtimeClient(profile, PHONE) as rt:
        assert rt.input_format == PCMU_8K and rt.output_format == PCMU_8K
        assert rt.differences == []
        rt.create_response()
        greeting, done = await collect_response_audio(rt)
        assert done.status == "completed" and len(greeting) > 800
        speech = speech_ulaw(900, seed=11)
        turn = silence_ulaw(400) + speech + silence_ulaw(800)
        for i in range(0, len(turn), 480):  # 60 ms appends
            rt.send_audio(turn[i : i + 480])
        started = await next_of(rt, ev.SpeechStarted)
        echo, done = await collect_response_audio(rt)
        assert done.status == "completed"
        assert speech in echo  # exactly the caller's audio comes back
        assert rt.audio_ms(done.output[0]["id"]) == len(echo) // 8
        assert started.audio_start_ms >= 0
        rt.truncate(done.output[0]["id"], 10_000)  # clamped to what was received
        truncated = await next_of(rt, ev.ItemTruncated)
        assert truncated.audio_end_ms == len(echo) // 8
    engine = provider.sessions[0]
    assert engine.received
    for frame in engine.received:
        conform.client(frame)
    assert engine.stats["recv:input_audio_buffer.append"] == len(range(0, len(turn), 480))
    assert engine.stats["speech_started"] == 1 and engine.stats["truncated"] == 1


async def test_format_fallback_is_detected_and_followed(log_lines: Callable[[], str]) -> None:
    p = LocalProvider(
        use_espeak=False, substitute_formats={"audio/pcmu": {"type": "audio/pcm", "rate": 24000}}
    )
    url = await p.start()
    try:
        async with RealtimeClient(make_profile("local", base_url=url), PHONE) as rt:
            assert rt.input_format == PCM16_24K and rt.output_format == PCM16_24K
            assert ("input_format", PCMU_8K, PCM16_24K) in rt.differences
            assert ("output_format", PCMU_8K, PCM16_24K) in rt.differences
            rt.create_response()
            audio, _ = await collect_response_audio(rt)
            assert len(audio) % 2 == 0 and len(audio) > 24000  # PCM16 at 24 kHz now
    finally:
        await p.stop()
    lines = [json.loads(line) for line in log_lines().splitlines() if line.startswith("{")]
    differs = [x for x in lines if x.get("event") == "realtime_session_differs"]
    assert {x["field"] for x in differs} == {"input_format", "output_format"}


async def test_4xx_is_not_retried_and_secret_never_logged(log_lines: Callable[[], str]) -> None:
    p = LocalProvider(use_espeak=False, require_token=FAKE_KEY)
    url = await p.start()
    try:
        bad = make_profile("url", base_url=url, token=Secret("sk-wrong-" + FAKE_KEY[::-1]))
        with pytest.raises(ConnectError) as info:
            await RealtimeClient(bad, PHONE, reconnect=ReconnectPolicy(attempts=5)).connect()
        assert info.value.status == 401 and not info.value.retryable
        assert "401 Unauthorized from provider url" in str(info.value)
        assert p.rejected == 1
        good = make_profile("url", base_url=url, token=Secret(FAKE_KEY))
        async with RealtimeClient(good, PHONE) as rt:
            rt.add_user_text("hello")
            await next_of(rt, ev.ItemAdded)
            p.drop_connections()
            await next_of(rt, ev.SessionReconnected)
    finally:
        await p.stop()
    err = log_lines()
    assert "realtime_session_ready" in err  # logging was on
    assert FAKE_KEY not in err and FAKE_KEY[::-1] not in err


async def test_reconnect_after_drop_reseeds_conversation(provider: LocalProvider) -> None:
    before = metrics.REALTIME_RECONNECTS._value.get()
    async with RealtimeClient(make_profile("local", base_url=provider.url), PHONE) as rt:
        rt.add_user_text("my account number is 42")
        await next_of(rt, ev.ItemAdded)
        assert provider.drop_connections() == 1
        back = await next_of(rt, ev.SessionReconnected)
        assert back.reason == "dropped" and back.reseeded_items == 1
        assert len(provider.sessions) == 2
        # the new session got the conversation and still answers
        rt.create_response()
        audio, done = await collect_response_audio(rt)
        assert done.status == "completed" and audio
    reseed = [json.loads(f) for f in provider.sessions[1].received or []]
    items = [f["item"] for f in reseed if f["type"] == "conversation.item.create"]
    assert items == [ev.user_text_item("my account number is 42")]
    assert metrics.REALTIME_RECONNECTS._value.get() == before + 1


async def test_session_renewed_before_provider_limit() -> None:
    p = LocalProvider(use_espeak=False, record_frames=True, session_limit_s=30.0)
    url = await p.start()
    try:
        rt = RealtimeClient(make_profile("local", base_url=url), PHONE, max_session_s=0.3)
        async with rt:
            rt.add_user_text("keep this")
            back = await next_of(rt, ev.SessionReconnected)
            assert back.reason == "renewed" and back.reseeded_items == 1
        assert len(p.sessions) == 2
    finally:
        await p.stop()


async def test_provider_limit_close_is_reconnected() -> None:
    p = LocalProvider(use_espeak=False, session_limit_s=0.3)
    url = await p.start()
    try:
        async with RealtimeClient(make_profile("local", base_url=url), PHONE) as rt:
            back = await next_of(rt, ev.SessionReconnected)
            assert back.reason == "dropped"
    finally:
        await p.stop()


async def test_lost_when_reconnect_fails(provider: LocalProvider) -> None:
    rt = RealtimeClient(
        make_profile("local", base_url=provider.url),
        PHONE,
        reconnect=ReconnectPolicy(attempts=2, within_s=1.0, backoff_s=0.05),
    )
    await rt.connect()
    try:
        await provider.stop()  # closes the socket and the listener
        lost = await next_of(rt, ev.SessionLost)
        assert "connect" in lost.reason
        rest = [e async for e in rt.events()]  # the stream ends
        assert rest == []
        assert rt.closed
    finally:
        await rt.close()


async def test_send_queue_overflow_is_bounded(provider: LocalProvider) -> None:
    before = metrics.REALTIME_SEND_OVERFLOW._value.get()
    async with RealtimeClient(
        make_profile("local", base_url=provider.url), PHONE, max_queued_audio=20
    ) as rt:
        chunk = silence_ulaw(20)
        for _ in range(500):  # no await: the send task cannot run meanwhile
            rt.send_audio(chunk)
        assert rt.protocol.queued <= 20
        assert rt.protocol.dropped_audio == 480
        for _ in range(200):
            if not rt.protocol.queued:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert metrics.REALTIME_SEND_OVERFLOW._value.get() == before + 480
    assert provider.sessions[0].stats["recv:input_audio_buffer.append"] == 20


async def test_yandex_profile_against_local_yandex_flavor() -> None:
    p = LocalProvider("yandex", use_espeak=False, record_frames=True)
    url = await p.start()
    try:
        profile = make_profile(
            "yandex", base_url=url, yandex_folder_id="b1gtest", yandex_api_key=Secret("k")
        )
        cfg = SessionConfig(
            voice=profile.default_voice,
            input_format=PCM16_24K,
            output_format=PCM16_24K,
            turn_detection=TurnDetection(),
            input_languages=("ru-RU",),
        )
        async with RealtimeClient(profile, cfg) as rt:
            assert rt.output_format == AudioFormat("pcm16", 44100)
            assert rt.clear_input() is False  # never sent to yandex
            rt.create_response()
            audio, done = await collect_response_audio(rt)
            assert done.status == "completed" and audio
        sent = [json.loads(f)["type"] for f in p.sessions[0].received or []]
        assert "input_audio_buffer.clear" not in sent
        update = json.loads((p.sessions[0].received or [])[0])
        assert "type" not in update["session"]
        assert p.sessions[0].stats["errors"] == 0
    finally:
        await p.stop()


async def test_error_event_is_surfaced_with_code(provider: LocalProvider) -> None:
    async with RealtimeClient(make_profile("local", base_url=provider.url), PHONE) as rt:
        rt.cancel_response()
        err = await next_of(rt, ev.ErrorOccurred)
        assert err.code == "response_cancel_not_active" and err.benign
        assert err.cause == "response.cancel"
        rt.create_response()
        rt.create_response()
        err = await next_of(rt, ev.ErrorOccurred)
        assert err.code == "conversation_already_has_active_response" and not err.benign
