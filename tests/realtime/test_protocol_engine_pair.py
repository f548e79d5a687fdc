"""The Realtime client core paired with the local provider's core, in memory.

As aioquic's tests pair a client and a server connection: `RealtimeProtocol` (the sans-I/O
client state that `RealtimeClient` drives) and `LocalEngine` (the sans-I/O server behind
`gateway provider`) exchange text frames in a loop, on simulated time, with no socket and no
event loop. Every frame is validated against the openai SDK's models in its direction (client
events one way, server events the other) and the protocol's typed events are checked against
what the engine did. The timers of both sides (the engine's paced audio deltas, the protocol's
stall watchdog) fire at their times; a healthy conversation never trips the watchdog.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from telcodecs import ulaw_encode

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.dtmf import dtmf_text
from gateway.realtime.local.engine import EngineOptions, LocalEngine
from gateway.realtime.protocol import RealtimeProtocol, State
from tests.support.realtime_schema import Conformance

RATE = 8000
CHUNK_MS = 100  # the bridge's append batch (--append-ms)

TELEPHONY = ev.SessionConfig(
    instructions="You answer the phone.",
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
    tools=(ev.function_tool("end_call", "hang up"), ev.function_tool("transfer_call", "transfer")),
    tool_choice="auto",
    transcription={"model": "gpt-4o-mini-transcribe"},
    noise_reduction="near_field",
)


def speech(ms: int, seed: int) -> bytes:
    """Speech-like noise at about -15 dBFS, µ-law 8 kHz (what the server VAD hears as voice)."""
    x = np.random.default_rng(seed).standard_normal(RATE * ms // 1000) * 32767 * 10 ** (-15 / 20)
    return ulaw_encode(np.clip(x, -32768, 32767).astype(np.int16))


def silence(ms: int) -> bytes:
    return b"\xff" * (RATE * ms // 1000)  # µ-law zero


class Pair:
    """A client protocol and a local engine wired back to back on one simulated clock."""

    def __init__(self, conform: Conformance, config: ev.SessionConfig = TELEPHONY) -> None:
        self.conform = conform
        self.now = 0.0
        self.proto = RealtimeProtocol(config, stall_timeout_s=3.0, max_session_s=3600.0)
        self.options = EngineOptions(delta_ms=100, speedup=4.0)
        self.engine: LocalEngine | None = None
        self.events: list[ev.ServerEvent] = []  # typed, as the protocol produced them
        self.timeline: list[tuple[float, ev.ServerEvent]] = []  # the same, with their time
        self.sent: list[dict[str, Any]] = []  # client events, as the engine received them
        self.received: list[dict[str, Any]] = []  # server events, as the protocol received them
        self.caller = bytearray()  # every byte of caller audio sent
        self._audio: Iterator[bytes] = iter(())
        self._next_chunk: float | None = None

    # --- wiring

    def connect(self) -> list[ev.ServerEvent]:
        """Open a connection: the engine starts a session, the handshake runs to READY."""
        self.proto.connection_made(self.now)
        self.engine = LocalEngine(self.options, self.now)
        return self.pump()

    def drop(self) -> None:
        """The connection is lost (the engine's session with it)."""
        assert self.engine is not None
        self.engine.close()
        self.engine = None
        self.proto.connection_lost(self.now)

    def pump(self) -> list[ev.ServerEvent]:
        """Move frames both ways until neither side has anything to send; the new events."""
        engine = self.engine
        assert engine is not None
        new: list[ev.ServerEvent] = []
        while True:
            moved = False
            while (frame := self.proto.next_frame()) is not None:
                self.conform.client(frame)
                self.sent.append(json.loads(frame))
                engine.receive_text(frame, self.now)
                moved = True
            for frame in engine.events_to_send():
                self.conform.server(frame)
                self.received.append(json.loads(frame))
                self.proto.receive_text(frame, self.now)
                moved = True
            new += self.proto.events_received()
            if not moved:
                break
        assert not [e for e in new if isinstance(e, ev.MalformedEvent)], new
        self.events += new
        self.timeline += [(self.now, e) for e in new]
        return new

    # --- time

    def speak(self, audio: bytes) -> None:
        """Caller audio from now on, one `CHUNK_MS` append per `CHUNK_MS` of simulated time."""
        step = RATE * CHUNK_MS // 1000
        self._audio = iter([audio[i : i + step] for i in range(0, len(audio), step)])
        self._next_chunk = self.now

    def run(self, seconds: float) -> list[ev.ServerEvent]:
        """Advance the clock by `seconds`, firing both sides' timers and sending caller audio
        when due; returns the events produced on the way."""
        end = self.now + seconds
        new: list[ev.ServerEvent] = []
        while True:
            assert self.engine is not None
            times = [
                t
                for t in (self.engine.get_timer(), self.proto.get_timer(), self._next_chunk)
                if t is not None and t <= end
            ]
            if not times:
                break
            self.now = max(self.now, min(times))
            if self._next_chunk is not None and self._next_chunk <= self.now:
                chunk = next(self._audio, None)
                if chunk is None:
                    self._next_chunk = None
                else:
                    self.caller += chunk
                    self.proto.send_audio(chunk)
                    self._next_chunk += CHUNK_MS / 1000
            timer = self.engine.get_timer()
            if timer is not None and timer <= self.now:
                self.engine.handle_timer(self.now)
            timer = self.proto.get_timer()
            if timer is not None and timer <= self.now:
                self.proto.handle_timer(self.now)
                assert self.proto.stall is None, self.proto.stall  # a healthy provider
            new += self.pump()
        self.now = end
        return new

    def run_until(self, condition: Callable[[], bool], within: float) -> None:
        """Run 20 ms at a time until `condition()` holds; fail after `within` seconds."""
        end = self.now + within
        while not condition():
            assert self.now < end, f"not within {within} s"
            self.run(0.02)

    # --- views

    def of(self, kind: type[Any], events: list[ev.ServerEvent] | None = None) -> list[Any]:
        return [e for e in (self.events if events is None else events) if isinstance(e, kind)]

    def types_sent(self) -> list[str]:
        return [e["type"] for e in self.sent]


def spoken(pair: Pair) -> set[str]:
    """The user items committed so far (a turn's speech_started carries its item id)."""
    return {e.item_id for e in pair.of(ev.InputCommitted)}


def test_handshake_reaches_ready_with_the_session_asked_for(conform: Conformance) -> None:
    pair = Pair(conform)
    events = pair.connect()
    assert [type(e) for e in events] == [ev.SessionCreated, ev.SessionUpdated]
    assert pair.proto.state is State.READY
    assert pair.types_sent() == ["session.update"]
    effective = pair.proto.effective
    assert effective is not None
    assert ev.diff(TELEPHONY, effective) == []  # every field asked for was granted
    assert pair.proto.input_format == PCMU_8K and pair.proto.output_format == PCMU_8K
    assert pair.engine is not None and pair.engine.input_format == PCMU_8K
    assert pair.proto.get_timer() == 3600.0  # renewal only: nothing is awaited
    assert conform.checked == 3


def test_a_whole_conversation(conform: Conformance) -> None:
    """A caller turn, its answer, a barge-in with truncate, a DTMF-driven function call and its
    output, each with the events of both sides in order."""
    pair = Pair(conform)
    pair.connect()

    # 1. the caller speaks, pauses: server VAD, commit, transcript, an answer with audio
    turn = silence(600) + speech(1200, seed=1) + silence(900)
    pair.speak(turn)
    pair.run(len(turn) / RATE + 1.0)
    assert [type(e) for e in pair.events[2:7]] == [
        ev.SpeechStarted,
        ev.SpeechStopped,
        ev.InputCommitted,
        ev.ItemAdded,
        ev.ItemDone,
    ]
    started, stopped = pair.of(ev.SpeechStarted)[0], pair.of(ev.SpeechStopped)[0]
    # speech from 600 to 1800 ms: it starts 300 ms (prefix padding) before, stops 500 ms after
    assert abs(started.audio_start_ms - 300) <= 60 and abs(stopped.audio_end_ms - 2300) <= 60
    (transcribed,) = pair.of(ev.InputTranscriptionCompleted)
    assert transcribed.item_id == started.item_id == stopped.item_id
    (created,) = pair.of(ev.ResponseCreated)
    (done,) = pair.of(ev.ResponseDone)
    assert done.response_id == created.response_id and done.status == "completed"
    deltas = pair.of(ev.AudioDelta)
    echo = b"".join(d.audio for d in deltas)
    # the local engine echoes the committed turn: the answer is the caller's own audio
    assert len(echo) >= RATE * 1.2 and echo in bytes(pair.caller)
    item = deltas[0].item_id
    assert {d.item_id for d in deltas} == {item} and pair.proto.audio_ms(item) == len(echo) // 8
    (transcript,) = pair.of(ev.TranscriptDone)
    assert transcript.item_id == item and transcript.transcript.startswith("[echo of ")
    assert pair.proto.active_response_id is None
    assert [e.kind for e in pair.proto.conversation.entries()] == ["user", "assistant"]
    answer_at = pair.now

    # 2. barge-in: the caller speaks over a long answer; the engine cancels it, the client
    #    truncates the item to what the caller heard (played in real time from its first delta)
    pair.options.speedup = 1.0  # an answer that lasts, so there is one to interrupt
    turn = speech(2500, seed=2) + silence(700)
    pair.speak(turn)
    answers = len(pair.of(ev.ResponseCreated))
    pair.run_until(lambda: len(pair.of(ev.ResponseCreated)) > answers, within=5.0)
    long_answer = pair.of(ev.ResponseCreated)[-1]
    pair.run(0.6)  # the caller hears the answer for a while, then speaks over it
    pair.speak(speech(800, seed=3) + silence(900))
    pair.run_until(lambda: pair.of(ev.SpeechStarted)[-1].item_id not in spoken(pair), within=2.0)
    barge = pair.of(ev.SpeechStarted)[-1]
    (cancelled,) = [e for e in pair.of(ev.ResponseDone) if e.response_id == long_answer.response_id]
    assert cancelled.status == "cancelled" and cancelled.reason == "turn_detected"
    assert pair.proto.active_response_id is None
    deltas = [(t, e) for t, e in pair.timeline if isinstance(e, ev.AudioDelta)]
    deltas = [(t, e) for t, e in deltas if e.response_id == long_answer.response_id]
    item = deltas[0][1].item_id
    received_ms = pair.proto.audio_ms(item)
    played_ms = min(received_ms, int((pair.now - deltas[0][0]) * 1000))
    assert 600 <= played_ms <= received_ms < 2500  # cut short: not the whole echo
    pair.proto.send_event(ev.conversation_item_truncate(item, played_ms))
    (truncated,) = pair.of(ev.ItemTruncated, pair.pump())
    assert (truncated.item_id, truncated.audio_end_ms) == (item, played_ms)
    assert barge.audio_start_ms > 0
    # past what the engine sent, truncate is refused; the client knows that error is harmless
    pair.proto.send_event(ev.conversation_item_truncate(item, received_ms + 5000))
    (refused,) = pair.of(ev.ErrorOccurred, pair.pump())
    assert refused.cause == "conversation.item.truncate" and refused.benign
    pair.run(4.0)  # the barge-in turn is answered in turn
    third = pair.of(ev.ResponseCreated)[-1]
    assert third.response_id != long_answer.response_id
    assert pair.of(ev.ResponseDone)[-1].response_id == third.response_id
    assert pair.of(ev.ResponseDone)[-1].status == "completed"
    assert pair.now > answer_at

    # 3. a DTMF "#" as a user message, then response.create: the engine calls end_call; the
    #    client answers with the function's output and asks for the reply
    pair.options.speedup = 4.0
    pair.proto.send_event(ev.conversation_item_create(ev.user_text_item(dtmf_text("#"))))
    pair.proto.send_event(ev.response_create(), pair.now)
    events = pair.pump()
    (call,) = pair.of(ev.FunctionCallArgumentsDone, events)
    assert call.name == "end_call" and call.arguments == "{}"
    assert pair.of(ev.ResponseDone, events)[-1].status == "completed"
    pair.proto.send_event(
        ev.conversation_item_create(ev.function_call_output_item(call.call_id, '{"ok":true}'))
    )
    pair.proto.send_event(ev.response_create(), pair.now)
    events = pair.pump() + pair.run(5.0)
    reply = pair.of(ev.ResponseDone, events)
    assert len(reply) == 1 and reply[0].status == "completed" and pair.of(ev.AudioDelta, events)

    # both directions were schema-checked, and nothing the client sent was refused
    assert conform.checked == len(pair.sent) + len(pair.received)
    errors = pair.of(ev.ErrorOccurred)
    assert errors == [refused]
    assert pair.proto.stalls == 0 and pair.proto.dropped_audio == 0
    assert set(pair.types_sent()) == {
        "session.update",
        "input_audio_buffer.append",
        "conversation.item.truncate",
        "conversation.item.create",
        "response.create",
    }


def test_a_reconnect_reseeds_the_conversation_into_the_new_session(conform: Conformance) -> None:
    """After a dropped connection the protocol's handshake re-creates the conversation's text
    items; a new engine session accepts every one of them."""
    pair = Pair(conform)
    pair.connect()
    turn = silence(200) + speech(1000, seed=4) + silence(900)
    pair.speak(turn)
    pair.run(len(turn) / RATE + 1.0)
    remembered = pair.proto.conversation.items()
    assert [item["role"] for item in remembered] == ["user", "assistant"]
    pair.drop()
    assert pair.proto.state is State.CONNECTING and pair.proto.reconnect_refusal(pair.now) is None
    sent_before = len(pair.sent)
    events = pair.connect()
    assert pair.proto.state is State.READY and pair.proto.reseeded_items == 2
    handshake = pair.sent[sent_before:]
    assert [e["type"] for e in handshake] == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
    ]
    texts = [ev.texts_of(e["item"])[0] for e in handshake[1:]]
    assert texts == [ev.texts_of(item)[0] for item in remembered]
    assert not pair.of(ev.ErrorOccurred, events)
    assert [e.item["role"] for e in pair.of(ev.ItemAdded, events)] == ["user", "assistant"]
    # and the new session carries on: a turn, an answer
    pair.speak(speech(800, seed=5) + silence(900))
    assert pair.of(ev.ResponseDone, pair.run(3.5))[-1].status == "completed"


def test_audio_sent_before_ready_waits_for_the_handshake(conform: Conformance) -> None:
    """The client queues appends while the session is configured; the engine never sees audio
    in a format it was not told about."""
    pair = Pair(conform)
    pair.proto.connection_made(pair.now)
    pair.proto.send_audio(silence(CHUNK_MS))
    assert pair.proto.next_frame() is None  # not READY: nothing leaves yet
    pair.engine = LocalEngine(pair.options, pair.now)
    pair.pump()
    assert pair.types_sent() == ["session.update", "input_audio_buffer.append"]
    appended = base64.b64decode(pair.sent[1]["audio"])
    assert appended == silence(CHUNK_MS)
    assert pair.engine.stats["appended_bytes"] == len(appended)
    assert pair.engine.stats["errors"] == 0
