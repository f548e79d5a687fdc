"""The GA session configuration surface (issue 17): settings and routes set `tool_choice`
(objects too), `max_output_tokens`, `truncation`, `prompt`, `tracing`, `include`,
`parallel_tool_calls`, `noise_reduction` and the VAD's `eagerness`, `idle_timeout_ms`,
`create_response` and `interrupt_response`; the resulting session.update is what the openai
SDK's models accept, and the local provider takes it (and every GA session field the SDK has)
over its real WebSocket."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest, SessionUpdateEvent
from websockets.asyncio.client import connect

from gateway.call.default_scenario import TOOLS
from gateway.call.routing import build_session, resolve_profile, validate_routes
from gateway.errors import ConfigError
from gateway.media.format import PCMU_8K
from gateway.realtime import events as rt
from gateway.realtime.client import RealtimeClient
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from tests.support.gateway import settings
from tests.support.realtime_schema import Conformance

ROUTE: dict[str, Any] = {
    "called": "2000",
    "tool_choice": {"type": "function", "name": "end_call"},
    "max_output_tokens": 300,
    "truncation": 0.8,
    "prompt": {"id": "pmpt_123", "version": "4"},
    "tracing": {"workflow_name": "support-line"},
    "include": ["item.input_audio_transcription.logprobs"],
    "parallel_tool_calls": False,
    "noise_reduction": "far_field",
    "vad": "semantic_vad",
    "vad_eagerness": "low",
    "vad_create_response": True,
    "vad_interrupt_response": False,
}


def _session(called: str, **overrides: Any) -> rt.SessionConfig:
    s = settings(routes=[ROUTE], **overrides)
    s.validate()
    profile = resolve_profile(s, called=called, source="127.0.0.1", leg="sip")
    return build_session(
        profile,
        instructions="test",
        input_format=PCMU_8K,
        output_format=PCMU_8K,
        default_voice="marin",
        tools=TOOLS,
        settings=s,
    )


def test_a_route_sets_every_field_in_its_wire_form() -> None:
    wire = _session("2000").to_wire()
    assert wire["tool_choice"] == {"type": "function", "name": "end_call"}
    assert wire["max_output_tokens"] == 300
    assert wire["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.8}
    assert wire["prompt"] == {"id": "pmpt_123", "version": "4"}
    assert wire["tracing"] == {"workflow_name": "support-line"}
    assert wire["include"] == ["item.input_audio_transcription.logprobs"]
    assert wire["parallel_tool_calls"] is False
    audio_in = wire["audio"]["input"]
    assert audio_in["noise_reduction"] == {"type": "far_field"}
    assert audio_in["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": False,
    }
    Conformance().client(rt.session_update(wire))  # the SDK's SessionUpdateEvent takes it


def test_settings_set_them_for_calls_no_route_matches() -> None:
    wire = _session(
        "1000",
        tool_choice="mcp:crm:lookup",
        max_output_tokens="inf",
        truncation="disabled",
        prompt="pmpt_9@2",
        tracing="auto",
        vad_idle_timeout_ms=6000,
        vad_create_response=False,
    ).to_wire()
    assert wire["tool_choice"] == {"type": "mcp", "server_label": "crm", "name": "lookup"}
    assert wire["max_output_tokens"] == "inf"
    assert wire["truncation"] == "disabled"
    assert wire["prompt"] == {"id": "pmpt_9", "version": "2"}
    assert wire["tracing"] == "auto"
    td = wire["audio"]["input"]["turn_detection"]
    assert td["type"] == "server_vad" and td["idle_timeout_ms"] == 6000
    assert td["create_response"] is False and td["interrupt_response"] is True
    assert "parallel_tool_calls" not in wire and "include" not in wire  # defaults: not sent
    Conformance().client(rt.session_update(wire))
    # and the defaults send nothing new
    plain = _session("1000").to_wire()
    assert plain["tool_choice"] == "auto"
    assert not {"max_output_tokens", "truncation", "prompt", "tracing"} & set(plain)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("tool_choice", "sometimes", "tool_choice: 'sometimes' is not auto, none, required"),
        ("max_output_tokens", "5000", "max_output_tokens: '5000' is not a number of tokens"),
        ("truncation", "1.5", "truncation: '1.5' is not auto, disabled or a retention ratio"),
        ("include", ["everything"], "include: ['everything'] is not a list of"),
        ("noise_reduction", "studio", "noise_reduction: 'studio' is not near_field or far_field"),
        ("vad_eagerness", "eager", "vad_eagerness: 'eager' is not low, medium, high or auto"),
        ("vad_idle_timeout_ms", -1, "vad_idle_timeout_ms: -1 is not a number of milliseconds"),
    ],
)
def test_bad_values_are_one_line_errors(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        dataclasses.replace(settings(), **{name: value}).validate()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"routes\[0\]\.{name}"):
        validate_routes([{"called": "1", name: value}])


async def test_the_local_provider_takes_the_session_over_its_websocket(
    provider: LocalProvider,
) -> None:
    config = _session("2000")
    client = RealtimeClient(make_profile("local", base_url=provider.url), config)
    await client.connect()
    try:
        assert client.differences == []  # every field asked for is what the provider reports
        effective = client.effective
        assert effective is not None
        assert effective.parallel_tool_calls is False
        assert effective.tool_choice == {"type": "function", "name": "end_call"}
        assert effective.max_output_tokens == 300
        assert effective.turn_detection is not None
        assert effective.turn_detection.eagerness == "low"
    finally:
        await client.close()
    engine = provider.sessions[0]
    assert engine.stats["errors"] == 0
    check = Conformance()
    for frame in engine.received or []:
        check.client(frame)
    for frame in engine.sent or []:
        check.server(frame)


async def test_the_local_provider_accepts_every_ga_session_field_of_the_sdk(
    provider: LocalProvider,
) -> None:
    session = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "test",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.1},
        },
        "include": ["item.input_audio_transcription.logprobs"],
        "max_output_tokens": 1000,
        "parallel_tool_calls": False,
        "prompt": {"id": "pmpt_1", "version": "1", "variables": {"name": "Ann"}},
        "reasoning": {"effort": "low"},
        "tool_choice": "required",
        "tools": [dict(TOOLS[0])],
        "tracing": {"workflow_name": "w", "group_id": "g", "metadata": {"k": "v"}},
        "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
    }
    # every GA field the SDK's session model has is in this update (a new one fails here)
    assert set(RealtimeSessionCreateRequest.model_fields) == set(session)
    event = SessionUpdateEvent.model_validate({"type": "session.update", "session": session})
    async with connect(provider.url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(event.model_dump_json(exclude_none=True))
        answer = json.loads(await ws.recv())
    assert answer["type"] == "session.updated", answer
    got = answer["session"]
    for key in ("parallel_tool_calls", "reasoning", "include", "prompt", "tracing", "truncation"):
        assert got[key] == session[key], key
    Conformance().server(answer)
