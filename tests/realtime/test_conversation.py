"""What a re-opened session is given (`gateway.realtime.conversation`), sans I/O: the GA patch
rule of session.update, the mid-call patches a refusal removes, the assistant's words cut to
what was heard, and the conversation's order, bounds and function-call pairs; then the protocol
core keeping them from the events it sees and sends."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.conversation import (
    Conversation,
    SessionPatches,
    cut_to_heard,
    merge_session,
)
from gateway.realtime.protocol import RealtimeProtocol

BASE: dict[str, Any] = {
    "type": "realtime",
    "instructions": "base",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
    "tools": [{"type": "function", "name": "end_call"}],
}


def test_a_patch_replaces_fields_whole_and_merges_the_audio_objects() -> None:
    merged = merge_session(
        BASE,
        {"audio": {"output": {"voice": "cedar"}}},
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}, "tools": []},
        {"instructions": "later"},
    )
    assert merged == {
        "type": "realtime",
        "instructions": "later",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "semantic_vad"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
        },
        "tools": [],
    }
    assert BASE["audio"]["output"]["voice"] == "marin"  # the base is not changed
    # null turns a field off, and stays off
    off = merge_session(BASE, {"audio": {"input": {"turn_detection": None}}})
    assert off["audio"]["input"] == {"format": {"type": "audio/pcmu"}, "turn_detection": None}


def test_a_refused_patch_is_forgotten_and_old_ones_fold_in_order() -> None:
    patches = SessionPatches(max_kept=2)
    patches.add("e1", {"instructions": "one"})
    patches.add("e2", {"audio": {"output": {"voice": "bad-voice"}}})
    patches.add("e3", {"instructions": "three"})
    assert not patches.refused("e1")  # folded already: too old to be refused now
    assert patches.refused("e2")
    session = patches.apply(BASE)
    assert session["instructions"] == "three" and session["audio"]["output"]["voice"] == "marin"


@given(st.text(alphabet="ab ", max_size=40), st.integers(0, 2000), st.integers(0, 2000))
def test_the_heard_text_is_a_prefix_never_longer_than_its_share(
    text: str, heard: int, audio: int
) -> None:
    cut = cut_to_heard(text, heard, audio)
    assert text.startswith(cut)
    if audio > 0 and heard < audio:
        assert len(cut) <= len(text) * heard // audio
        assert cut == "" or cut == text or text[len(cut)].isspace() or text[len(cut) - 1] == " "


def test_the_conversation_keeps_the_order_of_the_turns_not_of_their_transcripts() -> None:
    conv = Conversation()
    conv.user_turn("u1")  # committed
    conv.assistant_item("a1")  # the answer begins before the caller's transcript is done
    conv.assistant_text("a1", "one two three four", audio_ms=2000)
    conv.user_text("u1", "hello")
    conv.truncated("a1", 1000, 2000)
    conv.function_call("f1", "call_1", "order_status", '{"id": 7}')
    conv.function_output(None, "call_1", '{"status": "shipped"}')
    conv.function_output(None, "call_gone", "{}")  # its call is not kept: not replayed
    conv.assistant_item("a2")
    conv.deleted("a2")
    assert conv.items() == [
        ev.user_text_item("hello"),
        ev.assistant_text_item("one two"),
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "order_status",
            "arguments": '{"id": 7}',
        },
        ev.function_call_output_item("call_1", '{"status": "shipped"}'),
    ]


def test_the_conversation_is_bounded_by_text_and_by_entries() -> None:
    conv = Conversation(max_chars=20, max_entries=3)
    for i in range(5):
        conv.user_text(f"u{i}", f"turn {i}")  # 6 characters each
    assert [ev.texts_of(i)[0] for i in conv.items()] == ["turn 2", "turn 3", "turn 4"]
    conv.user_text("u5", "x" * 19)
    assert [ev.texts_of(i)[0] for i in conv.items()] == ["x" * 19]


def test_the_protocol_replays_mid_call_updates_and_forgets_a_refused_one() -> None:
    config = ev.SessionConfig(instructions="base", voice="marin", input_format=PCMU_8K)
    proto = RealtimeProtocol(config)
    proto.connection_made(0.0)
    proto.receive_text(json.dumps({"type": "session.created", "session": {}}), 0.0)
    proto.receive_text(json.dumps({"type": "session.updated", "session": {}}), 0.0)
    proto.next_handshake_frame()
    proto.send_event(ev.session_update({"instructions": "mid-call"}))
    bad = proto.send_event(ev.session_update({"audio": {"output": {"voice": "nope"}}}))
    error = {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value"}}
    error["error"]["event_id"] = bad
    proto.receive_text(json.dumps(error), 0.1)
    (refused,) = [e for e in proto.events_received() if isinstance(e, ev.ErrorOccurred)]
    assert refused.cause == "session.update"
    proto.connection_lost(1.0)
    proto.connection_made(1.0)
    proto.receive_text(json.dumps({"type": "session.created", "session": {}}), 1.0)
    first = json.loads(proto.next_handshake_frame() or "{}")
    assert first["session"]["instructions"] == "mid-call"
    assert first["session"]["audio"]["output"]["voice"] == "marin"
    assert proto.replayed.instructions == "mid-call"
