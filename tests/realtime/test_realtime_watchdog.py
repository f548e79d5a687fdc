"""The stall watchdog, the reconnect budget and failed-response classification in the sans-I/O
protocol, in simulated time: `now` is passed in, no sockets, no event loop. Every server event
fed in is checked against the official openai SDK models first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.media.format import PCMU_8K
from gateway.realtime import events as ev
from gateway.realtime.protocol import RealtimeProtocol, State

SESSION = ev.SessionConfig(
    instructions="test",
    voice="marin",
    input_format=PCMU_8K,
    output_format=PCMU_8K,
    turn_detection=ev.TurnDetection(create_response=True, interrupt_response=True),
)


class Peer:
    """Feeds schema-checked server events to a protocol at given times."""

    def __init__(self, conform: Any, proto: RealtimeProtocol) -> None:
        self.conform = conform
        self.proto = proto
        self.n = 0

    def send(self, event: dict[str, Any], now: float) -> list[ev.ServerEvent]:
        self.n += 1
        event = {"event_id": f"event_{self.n}", **event}
        self.conform.server(event)
        self.proto.receive_text(json.dumps(event), now)
        return self.proto.events_received()

    def ready(self, now: float = 0.0, session: ev.SessionConfig = SESSION) -> None:
        self.proto.connection_made(now)
        wire = session.to_wire()
        self.send({"type": "session.created", "session": wire}, now)
        while self.proto.next_handshake_frame():
            pass
        self.send({"type": "session.updated", "session": wire}, now)
        assert self.proto.state is State.READY

    # --- server events -----------------------------------------------------------------------

    def committed(self, now: float, item: str = "item_u1") -> None:
        self.send(
            {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None},
            now,
        )

    def speech_started(self, now: float) -> None:
        self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "i"},
            now,
        )

    def speech_stopped(self, now: float) -> None:
        self.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "i"},
            now,
        )

    def created(self, now: float, rid: str = "resp_1") -> None:
        self.send({"type": "response.created", "response": response(rid, "in_progress")}, now)

    def delta(self, now: float, rid: str = "resp_1") -> None:
        self.send(
            {
                "type": "response.output_audio.delta",
                "response_id": rid,
                "item_id": "item_a1",
                "output_index": 0,
                "content_index": 0,
                "delta": "/////w==",
            },
            now,
        )

    def done(
        self, now: float, rid: str = "resp_1", status: str = "completed", **details: Any
    ) -> ev.ResponseDone:
        [out] = self.send(
            {"type": "response.done", "response": response(rid, status, **details)}, now
        )
        assert isinstance(out, ev.ResponseDone)
        return out


def response(rid: str, status: str, **details: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"object": "realtime.response", "id": rid, "status": status}
    if details:
        obj["status_details"] = {"type": status, **details}
    return obj


def watched(**kw: Any) -> RealtimeProtocol:
    return RealtimeProtocol(SESSION, stall_timeout_s=5.0, **kw)


# --- the watchdog ------------------------------------------------------------------------------


def test_silence_after_a_committed_turn_is_a_stall_at_the_timeout(conform: Any) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready(0.0)
    assert proto.get_timer() is None  # nothing awaited: an idle call never stalls
    peer.committed(10.0)
    assert proto.get_timer() == 15.0
    proto.handle_timer(14.99)
    assert proto.stall is None
    proto.handle_timer(15.0)
    stall = proto.stall
    assert stall is not None
    assert (stall.awaited, stall.after, stall.silent_s, stall.count, stall.refusal) == (
        "response.created",
        "input_audio_buffer.committed",
        5.0,
        1,
        None,
    )
    assert proto.get_timer() is None  # reported once; the client re-opens the session


def test_events_push_the_deadline_and_the_response_end_clears_it(conform: Any) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready()
    peer.speech_stopped(10.0)  # server VAD: the turn is as good as committed
    assert proto.get_timer() == 15.0
    peer.committed(10.01)
    peer.created(11.0)
    peer.delta(12.0)
    peer.delta(13.0)
    # the timer the client armed at 15 fires early: nothing is due, it is armed again later
    proto.handle_timer(15.0)
    assert proto.stall is None and proto.get_timer() == 18.0
    peer.done(14.0)
    assert proto.get_timer() is None
    proto.handle_timer(100.0)
    assert proto.stall is None


def test_a_response_under_way_that_goes_silent_is_a_stall(conform: Any) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready()
    peer.committed(1.0)
    peer.created(1.2)
    peer.delta(1.4)
    proto.handle_timer(6.4)
    assert proto.stall is not None
    assert (proto.stall.awaited, proto.stall.after) == ("response.done", "response.created")


def test_caller_speech_owes_nothing_and_manual_or_silent_sessions_are_not_watched(
    conform: Any,
) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready()
    peer.committed(1.0)
    peer.speech_started(2.0)  # the caller goes on talking (the server sends nothing meanwhile)
    assert proto.get_timer() is None
    # turn detection without create_response: a commit is answered only when asked
    quiet = ev.SessionConfig(
        input_format=PCMU_8K,
        output_format=PCMU_8K,
        turn_detection=ev.TurnDetection(create_response=False),
    )
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready(session=quiet)
    peer.committed(1.0)
    assert proto.get_timer() is None
    # semantic VAD may wait after speech_stopped; its commit is what counts
    semantic = ev.SessionConfig(
        input_format=PCMU_8K,
        output_format=PCMU_8K,
        turn_detection=ev.TurnDetection(type="semantic_vad", eagerness="low"),
    )
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready(session=semantic)
    peer.speech_stopped(1.0)
    assert proto.get_timer() is None
    peer.committed(3.0)
    assert proto.get_timer() == 8.0
    # the watchdog off: never a timer
    proto = RealtimeProtocol(SESSION)
    peer = Peer(conform, proto)
    peer.ready()
    peer.committed(1.0)
    assert proto.get_timer() is None


def test_a_response_create_is_watched_from_when_it_was_sent(conform: Any) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready(0.0)
    conform.client(ev.response_create())
    event_id = proto.send_event(ev.response_create(), now=100.0)  # e.g. after a DTMF digit
    assert proto.get_timer() == 105.0
    peer.send(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "Conversation already has an active response",
                "param": None,
                "event_id": event_id,
            },
        },
        100.5,
    )
    assert proto.get_timer() is None  # refused: nothing will come for it


def test_stalls_are_retried_at_most_stall_retries_times(conform: Any) -> None:
    proto = watched(stall_retries=2)
    peer = Peer(conform, proto)
    refusals = []
    now = 0.0
    for _ in range(3):
        peer.ready(now)
        peer.committed(now + 1)
        proto.handle_timer(now + 6)
        assert proto.stall is not None
        refusals.append(proto.stall.refusal)
        proto.connection_lost(now + 6, counted=False)  # counted when it was found
        now += 100.0  # far apart: only the stall limit applies
    assert refusals == [None, None, "stall_retries"]
    assert proto.stalls == 3 and proto.losses == 3


# --- the reconnect budget ----------------------------------------------------------------------


def test_a_provider_closing_every_3s_gets_the_per_minute_budget(conform: Any) -> None:
    proto = RealtimeProtocol(SESSION, max_reconnects=5, max_reconnects_per_minute=3)
    peer = Peer(conform, proto)
    refusals = []
    now = 0.0
    while True:
        peer.ready(now)
        now += 3.0
        proto.connection_lost(now)
        refusal = proto.reconnect_refusal(now)
        refusals.append(refusal)
        if refusal is not None:
            break
        now += 0.1  # the reconnect
    assert refusals == [None, None, None, "reconnect_rate"]
    assert now == pytest.approx(12.3)


def test_the_total_budget_and_renewals_that_do_not_count(conform: Any) -> None:
    proto = RealtimeProtocol(SESSION, max_reconnects=2, max_reconnects_per_minute=None)
    peer = Peer(conform, proto)
    now = 0.0
    for _ in range(10):  # planned renewals are free
        peer.ready(now)
        now += 3300.0
        proto.connection_lost(now, counted=False)
        assert proto.reconnect_refusal(now) is None
    refusals = []
    for _ in range(3):
        peer.ready(now)
        now += 600.0  # one drop every 10 minutes: never the rate, only the total
        proto.connection_lost(now)
        refusals.append(proto.reconnect_refusal(now))
    assert refusals == [None, None, "reconnect_limit"]


def test_renewal_waits_for_the_response_in_progress(conform: Any) -> None:
    proto = RealtimeProtocol(SESSION, max_session_s=100.0)
    peer = Peer(conform, proto)
    peer.ready(0.0)
    peer.created(99.0)
    proto.handle_timer(100.0)
    assert not proto.renewal_due and proto.get_timer() == 101.0  # looked at again a second later
    peer.done(100.5)
    proto.handle_timer(101.0)
    assert proto.renewal_due


# --- failed responses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "details", "failure"),
    [
        ("completed", {}, None),
        ("cancelled", {"reason": "turn_detected"}, None),  # barge-in
        ("cancelled", {"reason": "client_cancelled"}, None),
        ("incomplete", {"reason": "turn_detected"}, None),  # a cancel, whatever the status
        ("incomplete", {"reason": "max_output_tokens"}, "cut"),
        ("incomplete", {"reason": "content_filter"}, "cut"),
        ("incomplete", {}, "failed"),
        ("failed", {"error": {"type": "server_error", "code": "server_error"}}, "failed"),
        ("failed", {}, "failed"),
    ],
)
def test_response_done_failure_by_status_and_reason(
    conform: Any, status: str, details: dict[str, Any], failure: str | None
) -> None:
    proto = watched()
    peer = Peer(conform, proto)
    peer.ready()
    peer.created(1.0)
    done = peer.done(2.0, status=status, **details)
    assert done.failure == failure
    assert done.details == ({"type": status, **details} if details else None)
    assert proto.active_response_id is None and proto.get_timer() is None
