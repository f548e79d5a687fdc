"""Every method and event of VoxEngine's Yandex `RealtimeAPIClient` on the gateway's scenario
API (docs/voxengine.md), exercised against the Yandex-flavoured local provider."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.call.events import BotMediaEnded, BotMediaStarted
from gateway.call.voxengine import CallEvents, Events, OpenAI, RealtimeAPIEvents, Yandex
from gateway.realtime import events as rt
from gateway.realtime.local.server import LocalProvider
from tests.support.local_provider import client_frames
from tests.support.waiting import wait_for
from tests.support.yandex import YANDEX_KEY, start_yandex_call

DOC = Path(__file__).resolve().parents[2] / "docs" / "voxengine.md"
METHODS = {
    "addEventListener": "add_event_listener",
    "removeEventListener": "remove_event_listener",
    "clearMediaBuffer": "clear_media_buffer",
    "close": "close",
    "conversationItemCreate": "conversation_item_create",
    "conversationItemDelete": "conversation_item_delete",
    "conversationItemRetrieve": "conversation_item_retrieve",
    "conversationItemTruncate": "conversation_item_truncate",
    "responseCancel": "response_cancel",
    "responseCreate": "response_create",
    "sendMediaTo": "send_media_to",
    "stopMediaTo": "stop_media_to",
    "sessionUpdate": "session_update",
    "id": "id",
    "webSocketId": "web_socket_id",
}
#: VoxEngine event name -> the wire type that produces it
WIRE = {
    "ConversationItemAdded": "conversation.item.added",
    "ConversationItemCreated": "conversation.item.created",
    "ConversationItemDeleted": "conversation.item.deleted",
    "ConversationItemDone": "conversation.item.done",
    "ConversationItemInputAudioTranscriptionCompleted": (
        "conversation.item.input_audio_transcription.completed"
    ),
    "ConversationItemInputAudioTranscriptionDelta": (
        "conversation.item.input_audio_transcription.delta"
    ),
    "ConversationItemInputAudioTranscriptionFailed": (
        "conversation.item.input_audio_transcription.failed"
    ),
    "ConversationItemInputAudioTranscriptionSegment": (
        "conversation.item.input_audio_transcription.segment"
    ),
    "ConversationItemRetrieved": "conversation.item.retrieved",
    "ConversationItemTruncated": "conversation.item.truncated",
    "Error": "error",
    "InputAudioBufferCleared": "input_audio_buffer.cleared",
    "InputAudioBufferCommitted": "input_audio_buffer.committed",
    "InputAudioBufferDTMFEventReceived": "input_audio_buffer.dtmf_event_received",
    "InputAudioBufferDtmfEventReceived": "input_audio_buffer.dtmf_event_received",  # old alias
    "InputAudioBufferSpeechStarted": "input_audio_buffer.speech_started",
    "InputAudioBufferSpeechStopped": "input_audio_buffer.speech_stopped",
    "InputAudioBufferTimeoutTriggered": "input_audio_buffer.timeout_triggered",
    "MCPListToolsCompleted": "mcp_list_tools.completed",
    "MCPListToolsFailed": "mcp_list_tools.failed",
    "MCPListToolsInProgress": "mcp_list_tools.in_progress",
    "OutputAudioBufferCleared": "output_audio_buffer.cleared",
    "OutputAudioBufferStarted": "output_audio_buffer.started",
    "OutputAudioBufferStopped": "output_audio_buffer.stopped",
    "RateLimitsUpdated": "rate_limits.updated",
    "ResponseContentPartAdded": "response.content_part.added",
    "ResponseContentPartDone": "response.content_part.done",
    "ResponseCreated": "response.created",
    "ResponseDone": "response.done",
    "ResponseFunctionCallArgumentsDelta": "response.function_call_arguments.delta",
    "ResponseFunctionCallArgumentsDone": "response.function_call_arguments.done",
    "ResponseMCPCallArgumentsDelta": "response.mcp_call_arguments.delta",
    "ResponseMCPCallArgumentsDone": "response.mcp_call_arguments.done",
    "ResponseMCPCallCompleted": "response.mcp_call.completed",
    "ResponseMCPCallFailed": "response.mcp_call.failed",
    "ResponseMCPCallInProgress": "response.mcp_call.in_progress",
    "ResponseOutputAudioDelta": "response.output_audio.delta",
    "ResponseOutputAudioDone": "response.output_audio.done",
    "ResponseOutputAudioTranscriptDelta": "response.output_audio_transcript.delta",
    "ResponseOutputAudioTranscriptDone": "response.output_audio_transcript.done",
    "ResponseOutputItemAdded": "response.output_item.added",
    "ResponseOutputItemDone": "response.output_item.done",
    "ResponseOutputTextDelta": "response.output_text.delta",
    "ResponseOutputTextDone": "response.output_text.done",
    "SessionCreated": "session.created",
    "SessionUpdated": "session.updated",
    "Unknown": "something.new",
}
#: one object with every field any parser needs (parsers ignore the rest)
FIELDS: dict[str, Any] = {
    "event_id": "event_1",
    "item_id": "item_1",
    "response_id": "resp_1",
    "call_id": "call_1",
    "name": "end_call",
    "arguments": "{}",
    "delta": "",
    "transcript": "",
    "text": "",
    "event": "5",
    "audio_start_ms": 0,
    "audio_end_ms": 0,
    "content_index": 0,
    "output_index": 0,
    "item": {"id": "item_1"},
    "part": {"type": "audio"},
    "response": {"id": "resp_1", "status": "completed"},
    "session": {},
    "error": {"type": "invalid_request_error", "message": "m"},
    "rate_limits": [],
}


def names(cls: type) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")}


def test_every_realtime_api_event_name_is_produced_by_its_wire_event() -> None:
    connector = {"ConnectorInformation", "HTTPResponse", "WebSocketError"}
    assert names(RealtimeAPIEvents) == set(WIRE) | connector
    for name, wire in WIRE.items():
        event = rt.parse_server_event({**FIELDS, "type": wire})
        assert isinstance(event, getattr(RealtimeAPIEvents, name)), name
        # the name as a string resolves to the same class (the VoxEngine name and the wire type)
        assert rt.event_class_named(name) is getattr(RealtimeAPIEvents, name), name
        if name != "Unknown":  # a type with no class is refused by name: listen to Unknown
            assert rt.event_class_named(wire) is getattr(RealtimeAPIEvents, name), wire
    # ConnectorInformation: what the client itself reports about the connection
    for event in (
        rt.SessionReconnected("dropped", 1),
        rt.SessionLost("closed"),
        rt.WebSocketError(1011, "internal error"),
        rt.HttpResponse(401),
    ):
        assert isinstance(event, RealtimeAPIEvents.ConnectorInformation)
    assert isinstance(rt.HttpResponse(401), RealtimeAPIEvents.HTTPResponse)
    assert isinstance(rt.WebSocketError(1011, ""), RealtimeAPIEvents.WebSocketError)
    # output_audio_buffer.* stay UnknownEvents too (the default scenario handles them so)
    assert isinstance(rt.parse_server_event({**FIELDS, "type": WIRE["OutputAudioBufferCleared"]}),
                      rt.UnknownEvent)  # fmt: skip
    assert Events.WebSocketMediaStarted is BotMediaStarted
    assert Events.WebSocketMediaEnded is BotMediaEnded
    assert Yandex.RealtimeAPIEvents is OpenAI.RealtimeAPIEvents is RealtimeAPIEvents


def test_the_doc_table_lists_every_method_and_event() -> None:
    text = DOC.read_text()
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`([A-Za-z.]+)`", text, re.M)}
    for js in METHODS:
        assert js in rows, js
    for name in names(RealtimeAPIEvents) | {"WebSocketMediaStarted", "WebSocketMediaEnded"}:
        assert name in rows, name


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    # real-time pace (speedup 1) so a response is still running when the test acts on it
    p = LocalProvider(
        "yandex", use_espeak=False, record_frames=True, require_token=YANDEX_KEY, speedup=1.0
    )
    await p.start()
    yield p
    await p.stop()


def _collect(client: Any, *classes: type) -> dict[type, list[Any]]:
    seen: dict[type, list[Any]] = {cls: [] for cls in classes}
    for cls in classes:
        client.add_event_listener(cls, seen[cls].append)
    return seen


async def test_every_method_against_yandex(provider: LocalProvider) -> None:
    c = await start_yandex_call(provider, lambda call: None, greeting=False)
    call = c.call
    client = Yandex.create_realtime_api_client(call)
    assert client is call.realtime
    for snake in METHODS.values():
        assert hasattr(client, snake), snake
    E = Yandex.RealtimeAPIEvents
    seen = _collect(
        client,
        E.SessionUpdated,
        E.ConversationItemAdded,
        E.ConversationItemRetrieved,
        E.ConversationItemDeleted,
        E.ConversationItemTruncated,
        E.ResponseCreated,
        E.ResponseDone,
        E.ResponseOutputAudioDelta,
        E.Error,
    )
    # id / webSocketId
    assert client.id == f"rt-{call.id}"
    ws_id = client.web_socket_id
    assert isinstance(ws_id, str) and len(ws_id) >= 32
    # sessionUpdate
    client.session_update({"instructions": "be brief"})
    await wait_for(lambda: seen[E.SessionUpdated])
    assert seen[E.SessionUpdated][-1].session.instructions == "be brief"
    # conversationItemCreate / Retrieve / Delete
    client.conversation_item_create(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    )
    await wait_for(lambda: seen[E.ConversationItemAdded])
    item_id = seen[E.ConversationItemAdded][-1].item["id"]
    client.conversation_item_retrieve(item_id)
    await wait_for(lambda: seen[E.ConversationItemRetrieved])
    assert seen[E.ConversationItemRetrieved][-1].item["id"] == item_id
    client.conversation_item_delete(item_id)
    await wait_for(lambda: seen[E.ConversationItemDeleted])
    assert seen[E.ConversationItemDeleted][-1].item_id == item_id
    # responseCreate, then responseCancel while it runs
    client.response_create()
    await wait_for(lambda: seen[E.ResponseCreated] and seen[E.ResponseOutputAudioDelta])
    client.response_cancel()
    await wait_for(lambda: seen[E.ResponseDone])
    done = seen[E.ResponseDone][-1]
    assert done.status == "cancelled" and done.reason == "client_cancelled"
    # conversationItemTruncate on what was played of that answer
    answer_id = seen[E.ResponseOutputAudioDelta][-1].item_id
    await asyncio.sleep(0.1)
    played = call.item_played_ms(answer_id)
    assert played > 0
    client.conversation_item_truncate(answer_id, played)
    await wait_for(lambda: seen[E.ConversationItemTruncated])
    assert seen[E.ConversationItemTruncated][-1].audio_end_ms == min(
        played, call.item_audio_ms(answer_id)
    )
    await wait_for(lambda: call.playout.queued_ms == 0)
    # stopMediaTo: the model's next answer is not played; sendMediaTo: it is again
    client.stop_media_to()
    before = len(c.leg.sent)
    client.response_create()
    await wait_for(lambda: len(seen[E.ResponseDone]) == 2, 5)
    await asyncio.sleep(0.2)
    assert all(f is None for _, f in c.leg.sent[before:])
    client.send_media_to()
    client.response_create()
    await wait_for(lambda: any(f is not None for _, f in c.leg.sent[before:]), 5)
    # clearMediaBuffer: drop what is queued for the caller
    await wait_for(lambda: call.playout.queued_ms > 20, 5)
    client.clear_media_buffer()
    assert call.playout.queued_ms == 0
    await wait_for(lambda: len(seen[E.ResponseDone]) == 3, 5)
    # removeEventListener: no more deliveries to that handler
    client.remove_event_listener(E.ResponseCreated, seen[E.ResponseCreated].append)
    n = len(seen[E.ResponseCreated])
    client.response_create()
    await wait_for(lambda: len(seen[E.ResponseDone]) == 4, 5)
    assert len(seen[E.ResponseCreated]) == n
    assert not seen[E.Error]
    # close: the provider session ends, the call does not (VoxEngine): the scenario decides
    client.close()
    await wait_for(lambda: provider.active_sessions == 0, 5)
    await asyncio.sleep(0.3)
    assert not c.task.done() and not c.leg.closed
    await call.hangup()
    await asyncio.wait_for(c.task, 5)
    assert call.outcome == "completed"
    sent = {f["type"] for f in client_frames(provider)}
    assert not sent & {"input_audio_buffer.clear", "output_audio_buffer.clear"}
    assert provider.sessions[0].stats["errors"] == 0


async def test_web_socket_id_changes_on_reconnect_id_does_not(provider: LocalProvider) -> None:
    c = await start_yandex_call(provider, lambda call: None, greeting=False)
    client = c.call.realtime
    first_ws, first_id = client.web_socket_id, client.id
    connector: list[rt.ConnectorEvent] = []
    client.add_event_listener(RealtimeAPIEvents.ConnectorInformation, connector.append)
    provider.drop_connections()
    await wait_for(lambda: any(isinstance(e, rt.SessionReconnected) for e in connector), 5)
    # the drop itself came first, as VoxEngine's WebSocketError
    assert isinstance(connector[0], RealtimeAPIEvents.WebSocketError)
    assert client.web_socket_id not in (None, first_ws)
    assert client.id == first_id
    await c.call.hangup()
    await c.task


async def test_websocket_media_started_and_ended_after_one_second_of_silence(
    provider: LocalProvider,
) -> None:
    events: list[tuple[float, object]] = []
    loop = asyncio.get_running_loop()

    def scenario(call: Any) -> None:
        call.on(Events.WebSocketMediaStarted, lambda e: events.append((loop.time(), e)))
        call.on(Events.WebSocketMediaEnded, lambda e: events.append((loop.time(), e)))
        call.on(CallEvents.Connected, lambda e: call.realtime.response_create())

    c = await start_yandex_call(provider, scenario, greeting=False)
    await wait_for(lambda: len(events) == 2, 5)
    (t_start, started), (t_end, ended) = events
    assert isinstance(started, BotMediaStarted) and isinstance(ended, BotMediaEnded)
    audio = [t for t, f in c.leg.sent if f is not None]
    first, last = audio[0], audio[-1]
    item_id = next(iter(c.call.playout.items))
    assert started.item_id == ended.item_id == item_id
    assert first <= t_start < first + 0.1
    # VoxEngine: WebSocketMediaEnded once 1 s of silence followed the provider's audio
    assert last + 1.0 <= t_end < last + 1.0 + 0.1, t_end - last
    await c.call.hangup()
    await c.task
