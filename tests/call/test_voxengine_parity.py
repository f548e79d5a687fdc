"""VoxEngine parity on a real call (issue 17): event names given as strings, the MCP server
events, `close()` that keeps the call, and `create_realtime_api_client(parameters)`; against the
local provider over its WebSocket, the wire checked with the openai SDK's pydantic models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import (
    McpListToolsCompleted,
    McpListToolsFailed,
    McpListToolsInProgress,
    ResponseMcpCallArgumentsDelta,
    ResponseMcpCallArgumentsDone,
    ResponseMcpCallCompleted,
    ResponseMcpCallFailed,
    ResponseMcpCallInProgress,
)
from structlog.testing import capture_logs

from gateway.call.manager import CallManager
from gateway.call.voxengine import OpenAI, Yandex
from gateway.errors import UnknownEventName
from gateway.media.port import DtmfReceived
from gateway.realtime import events as rt
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from gateway.secret import Secret
from tests.support.audio import best_correlation, speech_like
from tests.support.local_provider import client_frames
from tests.support.memory_call import open_call
from tests.support.realtime_schema import Conformance
from tests.support.waiting import wait_for

TOKEN = "sk-local-test-token-7781"


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False, record_frames=True, require_token=TOKEN)
    await p.start()
    yield p
    await p.stop()


def _profile(provider: LocalProvider) -> Any:
    return make_profile("url", base_url=provider.url, token=Secret(TOKEN))


async def _start(provider: LocalProvider, setup: Any) -> tuple[Any, Any, asyncio.Task[None]]:
    call, m = await open_call(provider, profile=_profile(provider))
    task = CallManager(4).start(call, setup)
    return call, m, task


def _server_frames(provider: LocalProvider, session: int = 0) -> list[dict[str, Any]]:
    return [json.loads(f) for f in provider.sessions[session].sent or []]


async def test_string_event_names_register_and_fire(provider: LocalProvider) -> None:
    fired: dict[str, list[Any]] = {}
    names = (
        "ResponseAudioDelta",  # VoxEngine style, from the beta wire name
        "ResponseOutputAudioDelta",  # VoxEngine's GA name
        "response.output_audio.delta",  # the wire type
        "AudioDone",  # the gateway's class name
        "ResponseDone",
    )

    def setup(call: Any) -> None:
        client = OpenAI.create_realtime_api_client(call)
        for name in names:
            client.add_event_listener(name, fired.setdefault(name, []).append)
        call.on("ToneReceived", fired.setdefault("ToneReceived", []).append)
        client.response_create()

    call, _m, task = await _start(provider, setup)
    await wait_for(lambda: fired.get("ResponseDone"), 8, "response.done")
    assert all(isinstance(e, rt.AudioDelta) for e in fired["ResponseAudioDelta"])
    n = len(fired["ResponseAudioDelta"])
    assert n > 0 and len(fired["ResponseOutputAudioDelta"]) == n
    assert len(fired["response.output_audio.delta"]) == n
    assert isinstance(fired["AudioDone"][0], rt.AudioDone)
    call.leg_event(DtmfReceived("7", "rfc4733"))
    await wait_for(lambda: fired["ToneReceived"], 5, "ToneReceived")
    assert fired["ToneReceived"][0].digit == "7"
    # off() by name too
    call.realtime.remove_event_listener("ResponseDone", fired["ResponseDone"].append)
    # names that name no event are refused when registered, never silently ignored
    for bad in ("ResponseAudioDeltaa", "response.output_audio.deltas", "Tone"):
        with pytest.raises(UnknownEventName, match=bad):
            call.realtime.add_event_listener(bad, print)
        with pytest.raises(UnknownEventName):
            call.on(bad, print)
    with pytest.raises(UnknownEventName):
        call.realtime.on(42, print)  # type: ignore[arg-type]
    await call.hangup()
    await task


def test_mcp_server_events_built_by_the_sdk_parse_typed() -> None:
    common = {"event_id": "event_1", "item_id": "mcp_1"}
    call = {**common, "output_index": 2}
    resp = {**call, "response_id": "resp_1"}
    built: list[tuple[Any, type]] = [
        (McpListToolsInProgress(type="mcp_list_tools.in_progress", **common),
         rt.McpListToolsInProgress),
        (McpListToolsCompleted(type="mcp_list_tools.completed", **common),
         rt.McpListToolsCompleted),
        (McpListToolsFailed(type="mcp_list_tools.failed", **common), rt.McpListToolsFailed),
        (ResponseMcpCallArgumentsDelta(type="response.mcp_call_arguments.delta", delta='{"q"',
                                       **resp), rt.McpCallArgumentsDelta),
        (ResponseMcpCallArgumentsDone(type="response.mcp_call_arguments.done",
                                      arguments='{"q":1}', **resp), rt.McpCallArgumentsDone),
        (ResponseMcpCallInProgress(type="response.mcp_call.in_progress", **call),
         rt.McpCallInProgress),
        (ResponseMcpCallCompleted(type="response.mcp_call.completed", **call),
         rt.McpCallCompleted),
        (ResponseMcpCallFailed(type="response.mcp_call.failed", **call), rt.McpCallFailed),
    ]  # fmt: skip
    names = {
        rt.McpListToolsInProgress: "MCPListToolsInProgress",
        rt.McpListToolsCompleted: "MCPListToolsCompleted",
        rt.McpListToolsFailed: "MCPListToolsFailed",
        rt.McpCallArgumentsDelta: "ResponseMCPCallArgumentsDelta",
        rt.McpCallArgumentsDone: "ResponseMCPCallArgumentsDone",
        rt.McpCallInProgress: "ResponseMCPCallInProgress",
        rt.McpCallCompleted: "ResponseMCPCallCompleted",
        rt.McpCallFailed: "ResponseMCPCallFailed",
    }
    for model, cls in built:
        wire = model.model_dump(exclude_none=True)
        event = rt.parse_server_event(wire)
        assert type(event) is cls, wire["type"]
        assert event.item_id == "mcp_1" and event.event_id == "event_1"
        if "output_index" in wire:
            assert event.output_index == 2  # type: ignore[attr-defined]
        assert getattr(Yandex.RealtimeAPIEvents, names[cls]) is cls
    delta = rt.parse_server_event(built[3][0].model_dump(exclude_none=True))
    done = rt.parse_server_event(built[4][0].model_dump(exclude_none=True))
    assert isinstance(delta, rt.McpCallArgumentsDelta) and delta.delta == '{"q"'
    assert isinstance(done, rt.McpCallArgumentsDone) and done.arguments == '{"q":1}'
    assert done.response_id == "resp_1"


async def test_mcp_server_events_reach_the_scenario(provider: LocalProvider) -> None:
    seen: list[Any] = []
    mcp_tool = {"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example/sse"}

    def setup(call: Any) -> None:
        client = Yandex.create_realtime_api_client(call)
        for name in ("MCPListToolsInProgress", "MCPListToolsCompleted", "MCPListToolsFailed"):
            client.add_event_listener(name, seen.append)
        client.session_update({"tools": [mcp_tool]})

    call, _m, task = await _start(provider, setup)
    await wait_for(lambda: len(seen) == 2, 5, "the MCP listing events")
    started, failed = seen
    assert isinstance(started, rt.McpListToolsInProgress)
    assert isinstance(failed, rt.McpListToolsFailed)
    assert started.item_id == failed.item_id
    # the wire both ways is what the SDK's models accept
    check = Conformance()
    for frame in client_frames(provider):
        check.client(frame)
    for frame in _server_frames(provider):
        check.server(frame)
    assert provider.sessions[0].stats["errors"] == 0
    await call.hangup()
    await task


async def test_close_ends_the_session_not_the_call(provider: LocalProvider) -> None:
    call, m, task = await _start(provider, lambda call: None)
    await wait_for(lambda: m.leg.ticks > 5, 5)  # the call runs
    appended = provider.sessions[0].stats["appended_bytes"]
    call.realtime.close()
    await wait_for(lambda: provider.active_sessions == 0, 5)
    await asyncio.sleep(0.5)  # the bridge never takes the closed session for a failure
    assert not task.done() and not m.leg.closed and call.outcome is None
    # the caller's audio is dropped from now on; the scenario decides what the caller hears
    m.leg.say(speech_like(0.5, seed=3))
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype(np.int16)
    start = len(m.leg.sent)
    await call.play(tone, 8000)
    await wait_for(lambda: sum(f is not None for _, f in m.leg.sent[start:]) >= 20, 5)
    assert best_correlation(tone[400:2400], m.leg.heard()[start * 160 :]) > 0.99
    assert provider.sessions[0].stats["appended_bytes"] == appended
    await call.hangup()
    await task
    assert call.outcome == "completed" and m.leg.closed


async def test_client_parameters_voice_and_instructions_update_the_session(
    provider: LocalProvider,
) -> None:
    updated: list[rt.SessionUpdated] = []

    def setup(call: Any) -> None:
        client = OpenAI.create_realtime_api_client(
            call, {"voice": "cedar", "instructions": "Answer in one word."}
        )
        client.add_event_listener("SessionUpdated", updated.append)

    call, _m, task = await _start(provider, setup)
    await wait_for(lambda: updated, 5)
    assert updated[-1].session.voice == "cedar"
    assert updated[-1].session.instructions == "Answer in one word."
    updates = [f for f in client_frames(provider) if f["type"] == "session.update"]
    assert len(updates) == 2  # the gateway's, then one for both parameters
    check = Conformance()
    for frame in updates:
        check.client(frame)
    # the same values again: nothing to send
    OpenAI.create_realtime_api_client(call, voice="cedar", instructions="Answer in one word.")
    await asyncio.sleep(0.2)
    assert len([f for f in client_frames(provider) if f["type"] == "session.update"]) == 2
    with pytest.raises(ValueError, match="unknown parameter 'temperature'"):
        OpenAI.create_realtime_api_client(call, {"temperature": 0.7})
    await call.hangup()
    await task


async def test_client_parameters_model_reconnects_with_it(provider: LocalProvider) -> None:
    connector: list[Any] = []

    def setup(call: Any) -> None:
        client = OpenAI.create_realtime_api_client(
            call, {"model": "gpt-realtime-mini", "instructions": "Be brief."}
        )
        client.add_event_listener("ConnectorInformation", connector.append)

    call, _m, task = await _start(provider, setup)
    await wait_for(lambda: any(isinstance(e, rt.SessionReconnected) for e in connector), 5)
    assert provider.request_paths[-1].endswith("model=gpt-realtime-mini")
    assert call.realtime.link.profile.model == "gpt-realtime-mini"
    # the new session was set up with the scenario's instructions
    first = [f for f in client_frames(provider) if f["type"] == "session.update"]
    assert first[-1]["session"]["instructions"] == "Be brief."
    assert provider.sessions[-1].session["instructions"] == "Be brief."
    assert not task.done()
    await call.hangup()
    await task


async def test_client_parameters_refused_key_gives_http_response_never_logged(
    provider: LocalProvider,
) -> None:
    wrong = "sk-wrong-key-0000-not-for-logs"
    connector: list[Any] = []

    def setup(call: Any) -> None:
        client = Yandex.create_realtime_api_client(call, {"apiKey": wrong})
        client.add_event_listener(Yandex.RealtimeAPIEvents.ConnectorInformation, connector.append)

    with capture_logs() as logs:
        call, _m, task = await _start(provider, setup)
        await wait_for(lambda: any(isinstance(e, rt.SessionLost) for e in connector), 5)
        await call.hangup()  # a scenario that listens to SessionLost ends the call itself
        await asyncio.wait_for(task, 5)
    http = [e for e in connector if isinstance(e, Yandex.RealtimeAPIEvents.HTTPResponse)]
    assert http and http[0].status == 401
    assert provider.rejected == 1
    assert wrong not in repr(logs) and TOKEN not in repr(logs)
    assert wrong not in repr(call.realtime.link.profile)
