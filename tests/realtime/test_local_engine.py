"""The local provider's sans-I/O engine, driven with a fake clock; every event it emits is
validated against the openai SDK's server event models."""

from __future__ import annotations

import audioop
import base64
import json
import re
from typing import Any

import numpy as np
import pytest

from gateway.realtime.dtmf import dtmf_text
from gateway.realtime.local.engine import FLAVORS, EngineOptions, LocalEngine

RATE = 24000


def tone(ms: int, hz: float = 440.0, dbfs: float = -12.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * 32767 * 10 ** (dbfs / 20)).astype(np.int16)


def noise(ms: int, seed: int, dbfs: float = -15.0, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(rate * ms // 1000) * 32767 * 10 ** (dbfs / 20)
    return np.clip(x, -32768, 32767).astype(np.int16)


def silence(ms: int, rate: int = RATE) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


class Peer:
    """Drives a LocalEngine like a client would, collecting (and validating) its events."""

    def __init__(self, conform: Any, flavor: str = "openai", **opts: Any) -> None:
        self.conform = conform
        self.now = 0.0
        self.engine = LocalEngine(EngineOptions(flavor=FLAVORS[flavor], **opts), self.now)
        self.events: list[dict[str, Any]] = []
        self.validate = flavor == "openai"
        self._collect()

    def _collect(self) -> list[dict[str, Any]]:
        out = []
        for frame in self.engine.events_to_send():
            if self.validate:
                self.conform.server(frame)
            out.append(json.loads(frame))
        self.events += out
        return out

    def send(self, event: dict[str, Any] | str) -> list[dict[str, Any]]:
        self.engine.receive_text(event if isinstance(event, str) else json.dumps(event), self.now)
        return self._collect()

    def append(self, pcm: np.ndarray, chunk_ms: int = 60, encoding: str = "pcm") -> list[dict]:
        out = []
        rate = RATE if encoding == "pcm" else 8000
        step = rate * chunk_ms // 1000
        for i in range(0, len(pcm), step):
            data = pcm[i : i + step].astype("<i2").tobytes()
            if encoding == "pcmu":
                data = audioop.lin2ulaw(data, 2)
            out += self.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()}
            )
        return out

    def run(self, seconds: float = 30.0) -> list[dict[str, Any]]:
        """Advance the fake clock through every timer (up to `seconds`)."""
        out = []
        end = self.now + seconds
        while (t := self.engine.get_timer()) is not None and t <= end:
            self.now = max(self.now, t)
            self.engine.handle_timer(self.now)
            out += self._collect()
        return out

    def types(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.events if events is None else events)]

    def audio_of(self, events: list[dict[str, Any]]) -> bytes:
        return b"".join(
            base64.b64decode(e["delta"])
            for e in events
            if e["type"] == "response.output_audio.delta"
        )


RESPONSE_ORDER = [
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


def squash(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


def update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def test_session_created_first_and_update_merged_as_patch(conform: Any) -> None:
    p = Peer(conform)
    assert p.types() == ["session.created"]
    created = p.events[0]["session"]
    assert created["audio"]["input"]["turn_detection"]["threshold"] == 0.5
    out = p.send(
        update(instructions="be brief", audio={"input": {"format": {"type": "audio/pcmu"}}})
    )
    assert p.types(out) == ["session.updated"]
    s = out[0]["session"]
    assert s["instructions"] == "be brief"
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    # untouched fields keep their values: a patch, not a replacement
    assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"]["voice"] == "marin"
    out = p.send(update(audio={"input": {"turn_detection": None}}))
    s = out[0]["session"]
    assert s["audio"]["input"]["turn_detection"] is None
    assert s["instructions"] == "be brief"
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"temperature": 0.8}, "session.temperature"),
        ({"turn_detection": {"type": "server_vad"}}, "session.turn_detection"),
        ({"input_audio_format": "pcm16"}, "session.input_audio_format"),
        ({"audio": {"input": {"formatt": {"type": "audio/pcmu"}}}}, "session.audio.input.formatt"),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "treshold": 0.4}}}},
            "session.audio.input.turn_detection.treshold",
        ),
    ],
)
def test_unknown_session_fields_are_rejected_and_nothing_changes(
    conform: Any, session: dict[str, Any], param: str
) -> None:
    p = Peer(conform)
    before = p.engine.session
    out = p.send(
        {
            "type": "session.update",
            "event_id": "evt_1",
            "session": {"type": "realtime", "instructions": "x", **session},
        }
    )
    assert p.types(out) == ["error"]
    err = out[0]["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "unknown_parameter",
        param,
    )
    assert err["event_id"] == "evt_1"
    assert p.engine.session == before


def test_pcm_rate_other_than_24k_is_refused(conform: Any) -> None:
    p = Peer(conform)
    out = p.send(update(audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}}))
    assert out[0]["error"]["code"] == "invalid_value"


def test_server_vad_turn_is_echoed_exactly(conform: Any) -> None:
    p = Peer(conform)
    speech = noise(1200, seed=1)
    events = p.append(np.concatenate([silence(1000), speech, silence(1000)]))
    events += p.run()
    types = p.types(events)
    head = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert squash(types)[: len(head)] == head
    assert squash(types)[len(head) :] == RESPONSE_ORDER
    started = events[types.index("input_audio_buffer.speech_started")]
    stopped = events[types.index("input_audio_buffer.speech_stopped")]
    # onset at 1000 ms, minus 300 ms prefix padding; stop after 500 ms of silence
    assert abs(started["audio_start_ms"] - 700) <= 20
    assert abs(stopped["audio_end_ms"] - 2700) <= 30
    assert started["item_id"] == stopped["item_id"]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert all(len(base64.b64decode(d["delta"])) <= 4800 for d in deltas)  # 100 ms each
    echo = np.frombuffer(p.audio_of(events), dtype="<i2")
    # the echo contains the caller's speech sample for sample
    corr = np.correlate(echo.astype(np.float64), speech[:2400].astype(np.float64), "valid")
    lag = int(np.argmax(corr))
    assert np.array_equal(echo[lag : lag + len(speech)], speech)
    assert abs(len(echo) / RATE * 1000 - (2700 - 700)) <= 30
    done = events[-1]
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens"] > 0


def test_deltas_are_paced_faster_than_real_time(conform: Any) -> None:
    p = Peer(conform, speedup=4.0)
    p.send({"type": "response.create"})
    p.run()
    n = p.types().count("response.output_audio.delta")
    assert n > 3
    # paced by the engine's timer: the fake clock advanced a quarter of the audio's length
    assert p.now == pytest.approx((n - 1) * 0.1 / 4.0)


def test_pcmu_session_echo_is_byte_exact(conform: Any) -> None:
    p = Peer(conform)
    p.send(
        update(
            audio={
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcmu"}},
            }
        )
    )
    speech = noise(800, seed=2, rate=8000)
    pcm = np.concatenate([silence(600, 8000), speech, silence(900, 8000)])
    events = p.append(pcm, encoding="pcmu") + p.run()
    echo = p.audio_of(events)
    sent = audioop.lin2ulaw(speech.astype("<i2").tobytes(), 2)
    assert sent in echo


def test_greeting_when_nothing_is_pending(conform: Any) -> None:
    p = Peer(conform)
    events = p.send({"type": "response.create"}) + p.run()
    assert squash(p.types(events)) == RESPONSE_ORDER
    audio = np.frombuffer(p.audio_of(events), dtype="<i2")
    assert len(audio) > RATE // 4
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1000  # audible


def test_barge_in_cancels_with_turn_detected(conform: Any) -> None:
    p = Peer(conform)
    p.send({"type": "response.create"})
    assert p.engine.get_timer() is not None  # greeting still streaming
    events = p.append(np.concatenate([noise(400, seed=3), silence(100)]))
    types = p.types(events)
    assert "input_audio_buffer.speech_started" in types
    done = [e for e in events if e["type"] == "response.done"]
    assert done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"
    assert p.engine.stats["cancelled:turn_detected"] == 1


def test_no_interrupt_when_interrupt_response_false(conform: Any) -> None:
    p = Peer(conform)
    p.send(
        update(
            audio={"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}}
        )
    )
    p.send({"type": "response.create"})
    events = p.append(np.concatenate([noise(400, seed=3), silence(100)]))
    assert "input_audio_buffer.speech_started" in p.types(events)
    assert "response.done" not in p.types(events)


def test_manual_turns_and_empty_commit(conform: Any) -> None:
    p = Peer(conform)
    p.send(update(audio={"input": {"turn_detection": None}}))
    out = p.send({"type": "input_audio_buffer.commit"})
    assert out[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    speech = noise(500, seed=4)
    assert p.append(speech) == []  # no VAD events with turn detection off
    out = p.send({"type": "input_audio_buffer.commit"})
    assert p.types(out) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    events = p.send({"type": "response.create"}) + p.run()
    assert np.array_equal(np.frombuffer(p.audio_of(events), dtype="<i2"), speech)


def test_clear_drops_buffered_audio(conform: Any) -> None:
    p = Peer(conform)
    p.send(update(audio={"input": {"turn_detection": None}}))
    p.append(noise(500, seed=5))
    assert p.types(p.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]
    assert p.send({"type": "input_audio_buffer.commit"})[0]["error"]["code"] == (
        "input_audio_buffer_commit_empty"
    )


def test_truncate_and_truncate_past_end(conform: Any) -> None:
    p = Peer(conform)
    events = p.send({"type": "response.create"}) + p.run()
    item_id = events[1]["item"]["id"]
    total_ms = len(p.audio_of(events)) // 48
    out = p.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": total_ms + 50,
        }
    )
    assert out[0]["type"] == "error" and out[0]["error"]["code"] == "invalid_value"
    out = p.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 200,
        }
    )
    assert out == [
        {
            **out[0],
            "type": "conversation.item.truncated",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 200,
        }
    ]
    out = p.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 300,
        }
    )
    assert out[0]["type"] == "error"  # now only 200 ms long
    assert p.engine.stats["truncated"] == 1


def test_cancel_and_cancel_not_active(conform: Any) -> None:
    p = Peer(conform)
    p.send({"type": "response.create"})
    out = p.send({"type": "response.create"})
    assert out[0]["error"]["code"] == "conversation_already_has_active_response"
    out = p.send({"type": "response.cancel"})
    assert out[-1]["type"] == "response.done"
    assert out[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    assert p.engine.get_timer() is None
    out = p.send({"type": "response.cancel"})
    assert out[0]["error"]["code"] == "response_cancel_not_active"


TOOLS = [
    {
        "type": "function",
        "name": "end_call",
        "description": "hang up",
        "parameters": {"type": "object", "properties": {}},
    },
    {
        "type": "function",
        "name": "transfer_call",
        "description": "transfer",
        "parameters": {"type": "object", "properties": {"target": {"type": "string"}}},
    },
]


@pytest.mark.parametrize(
    ("digits", "name", "arguments"),
    [("#", "end_call", {}), ("0", "transfer_call", {"target": "operator"})],
)
def test_dtmf_becomes_function_call(conform: Any, digits: str, name: str, arguments: Any) -> None:
    p = Peer(conform)
    p.send(update(tools=TOOLS, tool_choice="auto"))
    out = p.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": dtmf_text(digits)}],
            },
        }
    )
    assert p.types(out) == ["conversation.item.added", "conversation.item.done"]
    events = p.send({"type": "response.create"})
    assert p.types(events) == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    done = events[3]
    assert done["name"] == name and json.loads(done["arguments"]) == arguments
    assert events[1]["item"]["call_id"] == done["call_id"]
    # the function result, then a short spoken reply
    out = p.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": done["call_id"],
                "output": '{"ok":true}',
            },
        }
    )
    assert out[0]["item"]["type"] == "function_call_output"
    events = p.send({"type": "response.create"}) + p.run()
    assert squash(p.types(events)) == RESPONSE_ORDER
    assert len(p.audio_of(events)) > 0


def test_dtmf_without_tools_gets_a_spoken_answer(conform: Any) -> None:
    p = Peer(conform)
    p.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": dtmf_text("#")}],
            },
        }
    )
    events = p.send({"type": "response.create"}) + p.run()
    assert "response.function_call_arguments.done" not in p.types(events)
    assert squash(p.types(events)) == RESPONSE_ORDER


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "no.such.event"}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "AA=="}', "invalid_value"),  # one byte
        ('{"type": "input_audio_buffer.commit", "extra": 1}', "unknown_parameter"),
        ('{"type": "output_audio_buffer.clear"}', "unsupported_event"),
        ('{"type": "conversation.item.retrieve", "item_id": "nope"}', "item_not_found"),
        (
            '{"type": "input_audio_buffer.append", "audio": "' + "A" * 2000 + '"}',
            "message_too_large",
        ),
    ],
)
def test_bad_input_gets_one_error_and_the_session_goes_on(
    conform: Any, frame: str, code: str
) -> None:
    p = Peer(conform, max_event_bytes=1000)
    out = p.send(frame)
    assert p.types(out) == ["error"]
    assert out[0]["error"]["code"] == code
    # still serving
    assert p.types(p.send({"type": "response.create"}))[0] == "response.created"


def test_binary_frame_is_an_error(conform: Any) -> None:
    p = Peer(conform)
    p.engine.receive_text(b"\x00\x01", 0.0)
    out = p._collect()
    assert p.types(out) == ["error"]


def test_idle_timeout_prompts_the_caller(conform: Any) -> None:
    p = Peer(conform)
    p.send(
        update(audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 2000}}})
    )
    p.send({"type": "response.create"})
    p.run(seconds=1.0)  # the greeting finishes streaming
    assert p.engine.get_timer() is not None  # idle deadline armed
    events = p.run(seconds=30.0)
    types = p.types(events)
    assert types[0] == "input_audio_buffer.timeout_triggered"
    first = types.index("response.done") + 1
    assert squash(types[1:first]) == RESPONSE_ORDER
    # each idle prompt re-arms the timeout, as long as nobody speaks
    assert types.count("input_audio_buffer.timeout_triggered") > 1


def test_transcription_reports_a_placeholder(conform: Any) -> None:
    p = Peer(conform)
    p.send(update(audio={"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}}))
    events = p.append(np.concatenate([noise(600, seed=6), silence(800)]))
    (done,) = [e for e in events if e["type"].endswith("input_audio_transcription.completed")]
    # the committed turn: 600 ms of noise, the VAD's prefix and its silence
    assert re.fullmatch(r"\[caller: \d+\.\d s\]", done["transcript"]), done
    assert 0.6 <= float(done["transcript"][9:-3]) <= 1.5, done


def test_format_substitution_hook(conform: Any) -> None:
    p = Peer(conform, substitute_formats={"audio/pcmu": {"type": "audio/pcm", "rate": 24000}})
    out = p.send(update(audio={"input": {"format": {"type": "audio/pcmu"}}}))
    assert out[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_yandex_flavor(conform: Any) -> None:
    p = Peer(conform, flavor="yandex")
    created = p.events[0]["session"]
    assert "type" not in created
    assert created["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 44100}
    out = p.send(
        {
            "type": "session.update",
            "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        }
    )
    assert out[0]["error"]["code"] == "invalid_value"
    out = p.send(
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "languages": ["ru-RU"],
                    },
                    "output": {"voice": "marina", "role": "neutral"},
                }
            },
        }
    )
    assert out[0]["type"] == "session.updated"
    assert out[0]["session"]["audio"]["input"]["languages"] == ["ru-RU"]
    out = p.send({"type": "input_audio_buffer.clear"})
    assert out[0]["error"]["code"] == "unsupported_event"
    speech = noise(600, seed=7)
    events = p.append(np.concatenate([speech, silence(700)])) + p.run()
    echo = np.frombuffer(p.audio_of(events), dtype="<i2")
    assert abs(len(echo) - (600 + 500 + 300 - 300) * 44.1) < 44.1 * 60  # resampled to 44.1 kHz
