"""The protocol model and the sans-I/O client state machine, with no sockets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ProtocolError, SessionClosed, UnsupportedEventError
from gateway.media.format import PCM16_24K, PCMU_8K, AudioFormat
from gateway.realtime import events as ev
from gateway.realtime.dtmf import dtmf_text, parse_dtmf_text
from gateway.realtime.profiles import choose_session_format, make_profile
from gateway.realtime.protocol import TRANSITIONS, Input, RealtimeProtocol, State
from gateway.secret import Secret

VECTORS = Path(__file__).parent.parent / "vectors" / "realtime"

TELEPHONY = ev.SessionConfig(
    instructions="You are a phone assistant.",
    voice="marin",
    input_format=PCMU_8K,
    output_format=PCMU_8K,
    turn_detection=ev.TurnDetection(
        threshold=0.5,
        prefix_padding_ms=300,
        silence_duration_ms=500,
        create_response=True,
        interrupt_response=True,
    ),
    tools=(ev.function_tool("end_call", "hang up"),),
    tool_choice="auto",
    transcription={"model": "gpt-4o-mini-transcribe"},
    noise_reduction="far_field",
)


def frame(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def created() -> str:
    return frame({"type": "session.created", "event_id": "e0", "session": {"type": "realtime"}})


def updated(session: dict[str, Any]) -> str:
    return frame({"type": "session.updated", "event_id": "e1", "session": session})


def ready(proto: RealtimeProtocol, effective: dict[str, Any] | None = None) -> None:
    proto.connection_made(0.0)
    proto.receive_text(created(), 0.0)
    while proto.next_handshake_frame():
        pass
    proto.receive_text(updated(effective or TELEPHONY.to_wire()), 0.0)
    proto.events_received()


def test_session_update_is_ga_and_valid(conform: Any) -> None:
    wire = ev.session_update(TELEPHONY.to_wire())
    conform.client(wire)
    s = wire["session"]
    assert s["type"] == "realtime"
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert "input_audio_format" not in s and "turn_detection" not in s
    assert ev.SessionConfig.parse(s) == TELEPHONY


def test_every_client_builder_is_schema_valid(conform: Any) -> None:
    for event in [
        ev.input_audio_buffer_commit(),
        ev.input_audio_buffer_clear(),
        ev.output_audio_buffer_clear(),
        ev.conversation_item_create(ev.user_text_item(dtmf_text("#"))),
        ev.conversation_item_create(ev.assistant_text_item("hello"), previous_item_id="i1"),
        ev.conversation_item_create(ev.function_call_output_item("c1", '{"ok":true}')),
        ev.conversation_item_retrieve("i1"),
        ev.conversation_item_truncate("i1", 1500),
        ev.conversation_item_delete("i1"),
        ev.response_create(),
        ev.response_create(instructions="say bye", tool_choice="none"),
        ev.response_cancel(),
        ev.response_cancel("resp_1"),
        ev.session_update(ev.SessionConfig(turn_detection=None).to_wire()),
        ev.session_update(
            ev.SessionConfig(
                turn_detection=ev.TurnDetection("semantic_vad", eagerness="low")
            ).to_wire()
        ),
    ]:
        conform.client(event)
    conform.client(ev.encode_append(b"\x00\xff" * 80))
    assert json.loads(ev.encode_append(b"\x01\x02"))["audio"] == "AQI="


def test_formats_ga_and_beta() -> None:
    assert ev.format_from_wire({"type": "audio/pcm", "rate": 44100}) == AudioFormat("pcm16", 44100)
    assert ev.format_from_wire({"type": "audio/pcma"}) == AudioFormat("pcma", 8000)
    assert ev.format_from_wire("g711_ulaw") == PCMU_8K
    assert ev.format_from_wire("pcm16") == PCM16_24K
    with pytest.raises(ValueError):
        ev.format_from_wire({"type": "audio/opus"})
    with pytest.raises(ValueError):
        ev.format_to_wire(AudioFormat("pcmu", 16000))


def test_beta_events_map_to_ga_classes() -> None:
    lines = (VECTORS / "beta_events.jsonl").read_text().splitlines()
    parsed = [ev.parse_server_event(json.loads(line)) for line in lines]
    kinds = [type(p) for p in parsed]
    assert kinds == [
        ev.SessionUpdated,
        ev.ItemAdded,
        ev.AudioDelta,
        ev.TranscriptDone,
        ev.TextDelta,
        ev.AudioDone,
    ]
    session = parsed[0]
    assert isinstance(session, ev.SessionUpdated)
    assert session.session.input_format == PCMU_8K
    assert session.session.output_format == PCM16_24K
    assert session.session.voice == "alloy"
    assert session.session.turn_detection == ev.TurnDetection(
        threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500
    )
    delta = parsed[2]
    assert isinstance(delta, ev.AudioDelta) and delta.audio == b"\x00\x01\x02\x03"


def test_unknown_and_malformed_events() -> None:
    unknown = ev.parse_server_event({"type": "future.thing", "x": 1})
    assert isinstance(unknown, ev.UnknownEvent) and unknown.raw["x"] == 1
    with pytest.raises(ValueError, match="delta"):
        ev.parse_server_event(
            {
                "type": "response.output_audio.delta",
                "response_id": "r",
                "item_id": "i",
                "delta": "!!",
            }
        )
    proto = RealtimeProtocol(TELEPHONY)
    ready(proto)
    proto.receive_text("{oops", 1.0)
    proto.receive_text(frame({"type": "response.created"}), 1.0)
    proto.receive_text(frame({"type": "brand.new", "event_id": "e9"}), 1.0)
    out = proto.events_received()
    assert [type(e) for e in out] == [ev.MalformedEvent, ev.MalformedEvent, ev.UnknownEvent]


def test_diff_reports_format_fallback() -> None:
    effective = ev.SessionConfig.parse(
        {
            **TELEPHONY.to_wire(),
            "audio": {
                **TELEPHONY.to_wire()["audio"],
                "input": {
                    **TELEPHONY.to_wire()["audio"]["input"],
                    "format": {"type": "audio/pcm", "rate": 24000},
                },
            },
        }
    )
    d = ev.diff(TELEPHONY, effective)
    assert d == [("input_format", PCMU_8K, PCM16_24K)]
    assert ev.diff(TELEPHONY, ev.SessionConfig.parse(TELEPHONY.to_wire())) == []
    off = ev.SessionConfig.parse(
        {
            **TELEPHONY.to_wire(),
            "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
        }
    )
    assert ("turn_detection", "server_vad", None) in ev.diff(TELEPHONY, off)


def test_state_table_rejects_what_it_does_not_list() -> None:
    for state in State:
        for inp in Input:
            proto = RealtimeProtocol(TELEPHONY)
            proto.state = state
            if (state, inp) in TRANSITIONS:
                proto._transition(inp)
                assert proto.state is TRANSITIONS[(state, inp)]
            else:
                with pytest.raises(ProtocolError):
                    proto._transition(inp)


def test_handshake_effective_formats_and_events_before_ready() -> None:
    proto = RealtimeProtocol(TELEPHONY)
    proto.connection_made(0.0)
    with pytest.raises(ProtocolError):  # anything but session.created first
        proto.receive_text(frame({"type": "response.created", "response": {"id": "r"}}), 0.0)
    proto.receive_text(created(), 0.0)
    update = json.loads(proto.next_handshake_frame() or "")
    assert update["type"] == "session.update" and proto.next_handshake_frame() is None
    proto.send_audio(b"\xff" * 160)
    assert proto.next_frame() is None  # user frames wait for READY
    fallback = TELEPHONY.to_wire()
    fallback["audio"]["output"]["format"] = {"type": "audio/pcm", "rate": 24000}
    proto.receive_text(updated(fallback), 0.1)
    assert proto.state is State.READY
    assert proto.input_format == PCMU_8K and proto.output_format == PCM16_24K
    append = json.loads(proto.next_frame() or "")
    assert base64.b64decode(append["audio"]) == b"\xff" * 160


def test_send_queue_is_bounded_and_drops_oldest_audio() -> None:
    proto = RealtimeProtocol(TELEPHONY, max_queued_audio=5)
    ready(proto)
    proto.send_event(ev.input_audio_buffer_commit())
    for i in range(12):
        proto.send_audio(bytes([i]) * 4)
    assert proto.dropped_audio == 7
    frames = []
    while (f := proto.next_frame()) is not None:
        frames.append(json.loads(f))
    assert frames[0]["type"] == "input_audio_buffer.commit"  # control events are never dropped
    assert [base64.b64decode(f["audio"])[0] for f in frames[1:]] == [7, 8, 9, 10, 11]


def test_benign_errors() -> None:
    proto = RealtimeProtocol(TELEPHONY)
    ready(proto)
    truncate_id = proto.send_event(ev.conversation_item_truncate("item_9", 9000))
    commit_id = proto.send_event(ev.input_audio_buffer_commit())

    def error(code: str, event_id: str | None = None) -> ev.ErrorOccurred:
        proto.receive_text(
            frame(
                {
                    "type": "error",
                    "event_id": "x",
                    "error": {
                        "type": "invalid_request_error",
                        "code": code,
                        "message": "m",
                        "event_id": event_id,
                    },
                }
            ),
            1.0,
        )
        (out,) = proto.events_received()
        assert isinstance(out, ev.ErrorOccurred)
        return out

    assert error("response_cancel_not_active").benign
    e = error("invalid_value", truncate_id)
    assert e.benign and e.cause == "conversation.item.truncate"
    assert error("input_audio_buffer_commit_empty", commit_id).benign  # VAD on
    assert not error("conversation_already_has_active_response").benign
    manual = RealtimeProtocol(TELEPHONY.replace(turn_detection=None))
    ready(manual, TELEPHONY.replace(turn_detection=None).to_wire())
    manual.receive_text(
        frame(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "input_audio_buffer_commit_empty",
                    "message": "m",
                },
            }
        ),
        1.0,
    )
    (out,) = manual.events_received()
    assert isinstance(out, ev.ErrorOccurred) and not out.benign


def test_audio_accounting_and_active_response() -> None:
    proto = RealtimeProtocol(TELEPHONY)
    ready(proto)
    proto.receive_text(frame({"type": "response.created", "response": {"id": "r1"}}), 1.0)
    assert proto.active_response_id == "r1"
    for _ in range(3):
        proto.receive_text(
            frame(
                {
                    "type": "response.output_audio.delta",
                    "response_id": "r1",
                    "item_id": "i1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(b"\xff" * 800).decode(),
                }
            ),
            1.0,
        )
    assert proto.audio_ms("i1") == 300  # pcmu: 8 bytes per ms
    proto.receive_text(
        frame({"type": "response.done", "response": {"id": "r1", "status": "completed"}}), 1
    )
    assert proto.active_response_id is None


def test_reconnect_reseeds_conversation_text() -> None:
    proto = RealtimeProtocol(TELEPHONY, max_session_s=100.0)
    ready(proto)
    assert proto.get_timer() == 100.0
    proto.send_event(ev.conversation_item_create(ev.user_text_item("my name is Ann")))
    proto.receive_text(
        frame(
            {
                "type": "response.output_audio_transcript.done",
                "response_id": "r",
                "item_id": "i",
                "output_index": 0,
                "content_index": 0,
                "transcript": "Hello Ann",
            }
        ),
        1.0,
    )
    proto.handle_timer(100.0)
    assert proto.renewal_due
    proto.connection_lost(100.0)
    assert proto.state is State.CONNECTING
    proto.connection_made(100.1)
    proto.receive_text(created(), 100.1)
    frames = [json.loads(f) for f in iter(proto.next_handshake_frame, None)]
    assert [f["type"] for f in frames] == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
    ]
    assert frames[1]["item"] == ev.user_text_item("my name is Ann")
    assert frames[2]["item"] == ev.assistant_text_item("Hello Ann")
    assert proto.reseeded_items == 2


def test_unsupported_and_closed() -> None:
    yandex = make_profile("yandex", yandex_folder_id="b1g", yandex_api_key=Secret("k"))
    proto = RealtimeProtocol(TELEPHONY, unsupported=yandex.unsupported_events)
    ready(proto)
    with pytest.raises(UnsupportedEventError):
        proto.send_event(ev.input_audio_buffer_clear())
    proto.close()
    with pytest.raises(SessionClosed):
        proto.send_audio(b"\x00")


def test_profiles() -> None:
    key = Secret("sk-test-123")
    openai = make_profile("openai", openai_api_key=key)
    assert openai.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert openai.headers() == {"Authorization": "Bearer sk-test-123"}
    assert "sk-test" not in repr(openai)
    yandex = make_profile("yandex", yandex_folder_id="b1gfolder", yandex_iam_token=key)
    assert yandex.url == (
        "wss://ai.api.cloud.yandex.net/v1/realtime?model=gpt://b1gfolder/speech-realtime-250923"
    )
    assert yandex.headers()["Authorization"].startswith("Bearer ")
    api = make_profile(
        "yandex", yandex_folder_id="f", yandex_api_key=key, base_url="ws://127.0.0.1:9/v1"
    )
    assert api.headers()["Authorization"].startswith("Api-Key ")
    assert api.url.startswith("ws://127.0.0.1:9/v1/realtime?model=gpt://f/")
    assert api.default_voice == "marina" and not api.session_type
    local = make_profile("local", base_url="ws://127.0.0.1:5/v1/realtime")
    assert local.url == "ws://127.0.0.1:5/v1/realtime?model=gpt-realtime"
    assert make_profile("url", base_url="wss://h.example/v1/realtime?model=m").url.endswith("=m")
    assert choose_session_format(openai, "auto", "pcma") == AudioFormat("pcma", 8000)
    assert choose_session_format(yandex, "auto", "pcmu") == PCM16_24K
    assert choose_session_format(yandex, "pcmu") == PCM16_24K
    assert choose_session_format(local, "pcm24k") == PCM16_24K
    with pytest.raises(ValueError):
        make_profile("yandex", yandex_folder_id="f")


def test_dtmf_convention() -> None:
    assert dtmf_text("#") == "DTMF: #"
    assert parse_dtmf_text(dtmf_text("12*")) == "12*"
    assert parse_dtmf_text("DTMF: x") is None
    assert parse_dtmf_text("hello") is None
    with pytest.raises(ValueError):
        dtmf_text("E")
