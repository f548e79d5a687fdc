"""What a re-opened session is given, over the local provider's real WebSocket with the real
client: after a drop and after a renewal (a short session limit), the new session's
`session.update` holds every mid-call change (instructions, tools, voice, turn detection) and
its re-seed holds both sides (the caller's transcribed words, the assistant's text cut to what
was heard, the function call and its output), each frame checked with the official openai SDK
models. Barge-in before the first audio: the response is cancelled and its item deleted from the
provider's conversation. A tail truncate the server refuses is quiet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway import metrics
from gateway.call.bridge import CallBridge
from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.dtmf import dtmf_text
from gateway.realtime.local.engine import LocalEngine
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from tests.support.realtime import next_of, silence_ulaw, speech_ulaw
from tests.support.realtime_schema import Conformance

PHONE_TOOLS = ev.SessionConfig(
    instructions="You answer the phone.",
    voice="marin",
    input_format=PCMU_8K,
    output_format=PCMU_8K,
    turn_detection=ev.TurnDetection(
        silence_duration_ms=500, create_response=True, interrupt_response=True
    ),
    tools=(ev.function_tool("transfer_call", "transfer"),),
    tool_choice="auto",
)
ORDER_STATUS = ev.function_tool(
    "order_status",
    "Look up an order",
    {"type": "object", "properties": {"order_id": {"type": "string"}}},
)
PIRATE = "Speak like a pirate."


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False, speedup=20.0, record_frames=True)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def client(local: LocalProvider, **kw: Any) -> RealtimeClient:
    """A client of the `local` profile (input transcription comes on by itself)."""
    return RealtimeClient(
        make_profile("local", base_url=local.url),
        PHONE_TOOLS,
        reconnect=ReconnectPolicy(attempts=2, within_s=2.0),
        stall_timeout_s=None,
        **kw,
    )


async def until(rt: RealtimeClient, done: Callable[[ev.ServerEvent], bool]) -> ev.ServerEvent:
    async def find() -> ev.ServerEvent:
        async for e in rt.events():
            if done(e):
                return e
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), 5.0)


async def one_call_so_far(rt: RealtimeClient) -> dict[str, Any]:
    """Mid-call changes, a caller turn answered and cut by a truncate, a function call and its
    output. Returns what the test must find again in the next session."""
    rt.update_session({"instructions": PIRATE, "tools": [*(PHONE_TOOLS.tools or ()), ORDER_STATUS]})
    await next_of(rt, ev.SessionUpdated)
    rt.update_session(
        {
            "audio": {
                "output": {"voice": "cedar"},
                "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 700}},
            }
        }
    )
    await next_of(rt, ev.SessionUpdated)
    # a refused update is never replayed (it would fail the next handshake)
    rt.update_session({"audio": {"output": {"format": {"type": "audio/opus"}}}})
    refused = await next_of(rt, ev.ErrorOccurred)
    assert refused.cause == "session.update"
    # the caller speaks; the transcription gives its words, the model answers
    turn = silence_ulaw(200) + speech_ulaw(1200, seed=7) + silence_ulaw(900)
    for i in range(0, len(turn), 800):
        rt.send_audio(turn[i : i + 800])
    heard = await next_of(rt, ev.InputTranscriptionCompleted)
    said = await next_of(rt, ev.TranscriptDone)
    await next_of(rt, ev.ResponseDone)
    received_ms = rt.audio_ms(said.item_id)
    assert received_ms > 1000
    rt.truncate(said.item_id, received_ms // 2)  # the caller heard half of it
    await next_of(rt, ev.ItemTruncated)
    # a function call (the local model calls transfer_call on DTMF 0) and its output
    rt.add_user_text(dtmf_text("0"))
    rt.create_response()
    call = await next_of(rt, ev.FunctionCallArgumentsDone)
    await next_of(rt, ev.ResponseDone)
    rt.send_function_output(call.call_id, '{"ok": true, "transferred_to": "operator"}')
    await until(rt, lambda e: isinstance(e, ev.ItemAdded) and e.item.get("call_id") == call.call_id)
    return {
        "user": heard.transcript,
        "assistant": said.transcript,
        "heard_share": (received_ms // 2) / received_ms,
        "call": call,
    }


def check_new_session(engine: LocalEngine, reseeded: int, so_far: dict[str, Any]) -> None:
    conform = Conformance()
    frames = [json.loads(f) for f in engine.received or []]
    for frame in frames:
        conform.client(frame)  # every frame of the new session, by the SDK's models
    first = frames[0]
    assert first["type"] == "session.update"
    session = first["session"]
    assert session["instructions"] == PIRATE
    assert [t["name"] for t in session["tools"]] == ["transfer_call", "order_status"]
    assert session["tools"][1] == ORDER_STATUS
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}  # not the refused one
    td = session["audio"]["input"]["turn_detection"]
    assert td == {"type": "server_vad", "silence_duration_ms": 700}  # replaced whole
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # merged, kept
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    # the provider applied it
    assert engine.session["instructions"] == PIRATE
    assert engine.session["audio"]["output"]["voice"] == "cedar"
    # the re-seed, in the provider's conversation, in order
    items = engine.conversation[:reseeded]
    assert [(i["type"], i.get("role")) for i in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
    ]
    user, assistant, dtmf, call, output = items
    assert user["content"] == [{"type": "input_text", "text": so_far["user"]}]
    text = assistant["content"][0]["text"]
    full = so_far["assistant"]
    assert text and full.startswith(text) and len(text) < len(full)
    assert full[len(text)] == " "  # cut at a word boundary
    assert len(text) <= len(full) * so_far["heard_share"] + 1
    assert dtmf["content"][0]["text"] == dtmf_text("0")
    fc = so_far["call"]
    assert (call["call_id"], call["name"], call["arguments"]) == (
        fc.call_id,
        "transfer_call",
        fc.arguments,
    )
    assert output["call_id"] == fc.call_id and json.loads(output["output"])["ok"] is True


async def test_a_drop_replays_the_mid_call_session_and_both_sides_of_the_conversation(
    local: LocalProvider,
) -> None:
    rt = client(local, max_session_s=None)
    try:
        await rt.connect()
        so_far = await one_call_so_far(rt)
        assert local.drop_connections() == 1
        back = await next_of(rt, ev.SessionReconnected)
        assert back.reason == "dropped" and back.reseeded_items == 5
        check_new_session(local.sessions[-1], back.reseeded_items, so_far)
        # the new session goes on with the replayed tools: the model can call them
        rt.add_user_text(dtmf_text("0"))
        rt.create_response()
        again = await next_of(rt, ev.FunctionCallArgumentsDone)
        assert again.name == "transfer_call"
    finally:
        await rt.close()


async def test_a_renewal_replays_the_mid_call_session_and_both_sides_of_the_conversation(
    local: LocalProvider,
) -> None:
    rt = client(local, max_session_s=2.0)
    try:
        await rt.connect()
        so_far = await one_call_so_far(rt)
        assert len(local.sessions) == 1  # all of it within the first session
        back = await next_of(rt, ev.SessionReconnected, timeout=5.0)
        assert back.reason == "renewed" and back.reseeded_items == 5
        assert rt.reconnects == 1 and rt.differences == []
        check_new_session(local.sessions[-1], back.reseeded_items, so_far)
    finally:
        await rt.close()


async def test_barge_in_before_the_first_audio_cancels_and_deletes_the_item(
    local: LocalProvider,
) -> None:
    """The bridge core between the real client and the local provider: the caller speaks over a
    response whose audio has arrived but not one frame of it was played."""
    local.options.speedup = 1.0  # a response that lasts
    rt = client(local, max_session_s=None)
    try:
        await rt.connect()
        bridge = CallBridge(PCMU_8K, 20, rt.input_format, rt.output_format)
        loop = asyncio.get_running_loop()
        rt.create_response()  # the greeting
        first = await until(
            rt, lambda e: bridge.server_event(e, loop.time()) or isinstance(e, ev.AudioDelta)
        )
        assert isinstance(first, ev.AudioDelta)
        bridge.server_event(ev.SpeechStarted(audio_start_ms=0, item_id="u1"), loop.time())
        cleared = bridge.barge_in(loop.time(), cancel_response=True)
        assert cleared.item_id == first.item_id and cleared.played_ms == 0
        sent = list(bridge.client_events)
        assert [e["type"] for e in sent] == ["response.cancel", "conversation.item.delete"]
        for e in sent:
            rt.send_event(e)
        done = await next_of(rt, ev.ResponseDone)
        assert done.status == "cancelled" and done.reason == "client_cancelled"
        deleted = await next_of(rt, ev.ItemDeleted)
        assert deleted.item_id == first.item_id
        engine = local.sessions[-1]
        assert [i for i in engine.conversation if i.get("role") == "assistant"] == []
        assert engine.stats["truncated"] == 0 and engine.stats["errors"] == 0
        # and a reconnect does not bring it back
        assert all(e.kind != "assistant" for e in rt.protocol.conversation.entries())
    finally:
        await rt.close()


async def test_a_tail_truncate_the_server_refuses_is_quiet(
    local: LocalProvider, log_lines: Callable[[], str]
) -> None:
    """The server's copy of an item is shorter than the audio received (pipecat#2106): a truncate
    at all that was received is refused; the error is benign, counted and logged at debug, and
    the session goes on."""
    local.options.short_item_ms = 85
    errors = metrics.REALTIME_ERRORS.labels(code="invalid_value")
    before = float(errors._value.get())
    rt = client(local, max_session_s=None)
    try:
        await rt.connect()
        rt.create_response()
        said = await next_of(rt, ev.TranscriptDone)
        await next_of(rt, ev.ResponseDone)
        rt.truncate(said.item_id, rt.audio_ms(said.item_id))  # the caller heard all of it
        refused = await next_of(rt, ev.ErrorOccurred)
        assert refused.cause == "conversation.item.truncate" and refused.benign
        assert rt.protocol.truncates_refused == 1
        rt.create_response()  # the call goes on
        assert (await next_of(rt, ev.ResponseDone)).status == "completed"
    finally:
        await rt.close()
    assert float(errors._value.get()) == before + 1
    lines = [json.loads(x) for x in log_lines().splitlines() if x.startswith("{")]
    (line,) = [x for x in lines if x.get("event") == "realtime_error_event"]
    assert line["level"] == "debug" and line["benign"] is True
    assert not [x for x in lines if x.get("level") in ("warning", "error")]
