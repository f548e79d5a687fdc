"""The asyncio client against a faulty provider (`FaultyProvider` in front of the local one, real
loopback sockets, short settings): a stall after a committed turn is logged, counted, reported
and re-opened with the re-seeded session; stalls past the retries, and a provider that closes
every connection, end at the cap; failed responses are counted and logged, cancels are not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway import metrics
from gateway.logs import bind_call
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from tests.support.fault_provider import Fault, FaultyProvider
from tests.support.realtime import PHONE, collect_response_audio, next_of, silence_ulaw, speech_ulaw


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False, speedup=20.0)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def faulty(local: LocalProvider, faults: Any) -> FaultyProvider:
    proxy = FaultyProvider(local.url, faults)
    await proxy.start()
    return proxy


def value(counter: Any, **labels: str) -> float:
    child = counter.labels(**labels) if labels else counter
    return float(child._value.get())


def logged(lines: str, event: str) -> list[dict[str, Any]]:
    out = [json.loads(x) for x in lines.splitlines() if x.startswith("{")]
    return [x for x in out if x.get("event") == event]


def say(rt: RealtimeClient, seed: int = 3) -> None:
    """One caller turn: speech, then enough silence for the server VAD to commit it."""
    turn = silence_ulaw(200) + speech_ulaw(800, seed=seed) + silence_ulaw(700)
    for i in range(0, len(turn), 800):  # 100 ms appends
        rt.send_audio(turn[i : i + 800])


async def test_stall_after_commit_is_logged_counted_and_reopened_reseeded(
    local: LocalProvider, log_lines: Callable[[], str]
) -> None:
    proxy = await faulty(local, [Fault(stall_after="input_audio_buffer.committed")])
    stalls = value(metrics.REALTIME_STALLS, awaited="response.created")
    rt = RealtimeClient(make_profile("url", base_url=proxy.url), PHONE, stall_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    try:
        with bind_call("call-stall-1", "sip", "url"):
            await rt.connect()
        rt.add_user_text("my account number is 42")
        await next_of(rt, ev.ItemAdded)
        first_ws = rt.websocket_id
        say(rt)
        stalled = await next_of(rt, ev.SessionStalled, timeout=5.0)
        found_after = loop.time() - (proxy.connections[0].stall_at or 0.0)
        assert stalled.awaited == "response.created" and stalled.stalls == 1
        assert 0.5 <= stalled.silent_s < 1.0
        assert 0.5 <= found_after < 1.5, found_after  # within N + 1 s
        back = await next_of(rt, ev.SessionReconnected)
        assert back.reason == "stalled" and back.reseeded_items == 1
        assert rt.websocket_id not in (None, first_ws)
        # the new connection got the session and the conversation so far
        second = proxy.connections[1]
        assert [e["type"] for e in second.received[:2]] == [
            "session.update",
            "conversation.item.create",
        ]
        assert second.received[1]["item"] == ev.user_text_item("my account number is 42")
        # and the call goes on: the new session answers
        rt.create_response()
        audio, done = await collect_response_audio(rt)
        assert done.status == "completed" and audio
    finally:
        await rt.close()
        await proxy.stop()
    assert proxy.invalid == [] and proxy.conform.checked > 20
    assert value(metrics.REALTIME_STALLS, awaited="response.created") == stalls + 1
    [line] = logged(log_lines(), "realtime_provider_stalled")
    assert line["level"] == "warning" and line["call_id"] == "call-stall-1"
    assert line["awaited"] == "response.created"
    assert line["after"] == "input_audio_buffer.speech_stopped"  # server VAD: then committed
    assert line["reconnect"] is True


async def test_stalls_past_the_retries_lose_the_session(local: LocalProvider) -> None:
    proxy = await faulty(local, lambda _: Fault(stall_after="response.created"))
    lost_before = value(metrics.REALTIME_SESSIONS_LOST, reason="stall_retries")
    rt = RealtimeClient(
        make_profile("url", base_url=proxy.url), PHONE, stall_timeout_s=0.3, stall_retries=1
    )
    try:
        await rt.connect()
        rt.create_response()
        stalled = await next_of(rt, ev.SessionStalled)
        assert stalled.awaited == "response.done"
        await next_of(rt, ev.SessionReconnected)
        rt.create_response()  # stalls again: no more retries
        lost = await next_of(rt, ev.SessionLost)
        assert lost.reason == "stalled; stall_retries"
        assert [e async for e in rt.events()] == []  # the stream ended
        assert rt.closed
    finally:
        await rt.close()
        await proxy.stop()
    assert len(proxy.connections) == 2 and proxy.invalid == []
    assert value(metrics.REALTIME_SESSIONS_LOST, reason="stall_retries") == lost_before + 1


@pytest.mark.parametrize(
    ("policy", "reconnects", "reason"),
    [
        (ReconnectPolicy(attempts=1, max_per_call=5, max_per_minute=3), 3, "reconnect_rate"),
        (ReconnectPolicy(attempts=1, max_per_call=2, max_per_minute=None), 2, "reconnect_limit"),
    ],
)
async def test_a_provider_closing_every_connection_is_reconnected_up_to_the_cap(
    local: LocalProvider, policy: ReconnectPolicy, reconnects: int, reason: str
) -> None:
    proxy = await faulty(local, lambda _: Fault(close_after_s=0.3))
    lost_before = value(metrics.REALTIME_SESSIONS_LOST, reason=reason)
    rt = RealtimeClient(make_profile("url", base_url=proxy.url), PHONE, reconnect=policy)
    seen: list[ev.ServerEvent] = []
    try:
        await rt.connect()

        async def until_lost() -> None:
            async for e in rt.events():
                if isinstance(e, ev.SessionReconnected | ev.SessionLost):
                    seen.append(e)

        await asyncio.wait_for(until_lost(), 10.0)
        await asyncio.sleep(0.6)  # nothing reconnects after the loss
    finally:
        await rt.close()
        await proxy.stop()
    assert [type(e).__name__ for e in seen] == ["SessionReconnected"] * reconnects + ["SessionLost"]
    lost = seen[-1]
    assert isinstance(lost, ev.SessionLost) and lost.reason == f"dropped; {reason}"
    assert len(proxy.connections) == reconnects + 1 and rt.reconnects == reconnects
    assert value(metrics.REALTIME_SESSIONS_LOST, reason=reason) == lost_before + 1
    assert proxy.invalid == []


async def test_failed_responses_are_counted_and_logged_cancels_are_not(
    local: LocalProvider, log_lines: Callable[[], str]
) -> None:
    proxy = await faulty(local, [Fault(fail_responses=1)])
    failed = value(metrics.REALTIME_RESPONSES_FAILED, status="failed", reason="server_error")
    rt = RealtimeClient(make_profile("url", base_url=proxy.url), PHONE)
    try:
        await rt.connect()
        rt.create_response()
        audio, done = await collect_response_audio(rt)
        assert (done.status, done.failure, audio) == ("failed", "failed", b"")
        assert done.details == {
            "type": "failed",
            "error": {
                "type": "server_error",
                "code": "server_error",
                "message": "The server had an error while processing your request.",
            },
        }
        rt.create_response()  # asked again, it works
        audio, done = await collect_response_audio(rt)
        assert done.status == "completed" and audio
        # a barge-in cancel is not a failure
        rt.create_response()
        await next_of(rt, ev.AudioDelta)
        say(rt)
        _, done = await collect_response_audio(rt)
        assert (done.status, done.reason, done.failure) == ("cancelled", "turn_detected", None)
    finally:
        await rt.close()
        await proxy.stop()
    assert proxy.invalid == []
    after = value(metrics.REALTIME_RESPONSES_FAILED, status="failed", reason="server_error")
    assert after == failed + 1
    [line] = logged(log_lines(), "realtime_response_failed")
    assert line["level"] == "warning"
    assert (line["status"], line["error_type"], line["error_code"]) == (
        "failed",
        "server_error",
        "server_error",
    )
    assert "error_message" in line and "delta" not in json.dumps(line)
