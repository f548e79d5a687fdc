"""Sans-I/O state of one Realtime client session: no sockets, no asyncio, time passed in.

Theory of operation
-------------------
The asyncio client (`client.py`) owns the WebSocket and moves text frames:

* `connection_made(now)` when the socket is open; `connection_lost(now)` when it drops (the
  protocol goes back to CONNECTING and keeps the conversation for re-seeding); `close()` at the end.
* `receive_text(frame, now)` for every received frame, then `events_received()` for the typed
  events it produced. Bad frames become `MalformedEvent`; nothing here raises for peer input
  except `ProtocolError` for an event in a state that does not allow it (see `TRANSITIONS`).
* `send_audio(bytes)` / `send_event(dict)` queue client events; `next_frame()` gives the next text
  frame to send. You must call it until it returns None after anything that queues.
  Handshake frames (session.update, re-seed items) come first; queued user frames wait until the
  session is READY. Queued audio is bounded: past `max_queued_audio` frames the oldest append is
  dropped and `dropped_audio` counts it.
* `get_timer()` is the next deadline: renewal (before the provider's session limit) or the
  stall watchdog; `handle_timer(now)` sets `renewal_due` (deferred while a response is active),
  or `stall` when the provider has sent nothing for `stall_timeout_s` while a response is awaited:
  after a committed user turn (server VAD that creates responses), a `response.create`, or a
  `response.created` not yet done. The client then re-opens the session (or gives up).
* Reconnects are budgeted per session: `connection_lost(now)` counts an unplanned loss (drops
  and stalls; renewals pass `counted=False`), and `reconnect_refusal(now)` says whether another
  re-open is allowed (`max_reconnects` in all, `max_reconnects_per_minute` in any 60 s).

Session states, driven by `Input`s through the `TRANSITIONS` table (anything absent is an error)::

    CONNECTING --connected--> AWAITING_CREATED --session.created--> CONFIGURING
    CONFIGURING --session.updated--> READY ;  any open state --dropped--> CONNECTING
    any state --closed--> CLOSED
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gateway.errors import ProtocolError, SessionClosed, UnsupportedEventError
from gateway.media.format import PCM16_24K, AudioFormat
from gateway.realtime import events as ev
from gateway.realtime.conversation import Conversation, SessionPatches

__all__ = ["BENIGN_ERROR_CODES", "TRANSITIONS", "Input", "RealtimeProtocol", "Stall", "State"]


class State(Enum):
    CONNECTING = "connecting"
    AWAITING_CREATED = "awaiting_session_created"
    CONFIGURING = "configuring"
    READY = "ready"
    CLOSED = "closed"


class Input(Enum):
    CONNECTED = "connected"
    SESSION_CREATED = "session.created"
    SESSION_UPDATED = "session.updated"
    ERROR = "error"
    EVENT = "event"  # any other server event
    DROPPED = "dropped"
    CLOSED = "closed"


S, In = State, Input
TRANSITIONS: Mapping[tuple[State, Input], State] = {
    (S.CONNECTING, In.CONNECTED): S.AWAITING_CREATED,
    (S.CONNECTING, In.DROPPED): S.CONNECTING,
    (S.AWAITING_CREATED, In.SESSION_CREATED): S.CONFIGURING,
    (S.AWAITING_CREATED, In.ERROR): S.AWAITING_CREATED,
    (S.AWAITING_CREATED, In.DROPPED): S.CONNECTING,
    (S.CONFIGURING, In.SESSION_UPDATED): S.READY,
    (S.CONFIGURING, In.ERROR): S.CONFIGURING,
    (S.CONFIGURING, In.EVENT): S.CONFIGURING,
    (S.CONFIGURING, In.DROPPED): S.CONNECTING,
    (S.READY, In.SESSION_UPDATED): S.READY,
    (S.READY, In.ERROR): S.READY,
    (S.READY, In.EVENT): S.READY,
    (S.READY, In.DROPPED): S.CONNECTING,
    **{(s, In.CLOSED): S.CLOSED for s in State},
}

#: Error codes that need no alarm whatever the context.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active"})

_MAX_TRACKED_ITEMS = 32
_RENEWAL_RETRY_S = 1.0  # a renewal due during a response looks again this much later
_RECONNECT_WINDOW_S = 60.0
_MAX_TRACKED_CLIENT_EVENTS = 128
_MAX_CONVERSATION_CHARS = 20000


@dataclass(frozen=True, slots=True)
class Stall:
    """The provider sent nothing for the stall timeout while a response was awaited.

    `awaited` is the server event that did not come (`response.created` after a committed turn
    or a `response.create`; `response.done` after `response.created`), `after` the event that
    started the wait, `silent_s` how long nothing at all came, `count` the stalls of this session
    so far. `refusal` is None when the session may be re-opened, else why not
    (`stall_retries`, `reconnect_limit`, `reconnect_rate`)."""

    awaited: str
    after: str
    silent_s: float
    count: int
    refusal: str | None


class RealtimeProtocol:
    """One client session's protocol state across reconnects. See the module docstring."""

    def __init__(
        self,
        requested: ev.SessionConfig,
        *,
        session_type: bool = True,
        unsupported: frozenset[str] = frozenset(),
        max_queued_audio: int = 100,
        max_session_s: float | None = None,
        stall_timeout_s: float | None = None,
        stall_retries: int = 2,
        max_reconnects: int | None = None,
        max_reconnects_per_minute: int | None = None,
    ) -> None:
        self.requested = requested
        self.effective: ev.SessionConfig | None = None
        self.state = State.CONNECTING
        self.session_type = session_type
        self.unsupported = unsupported
        self.max_queued_audio = max_queued_audio
        self.max_session_s = max_session_s
        self.dropped_audio = 0
        self.renewal_due = False
        self.active_response_id: str | None = None
        #: the conversation so far, and the mid-call session patches: what a re-opened
        #: session is given (gateway.realtime.conversation)
        self.conversation = Conversation(_MAX_CONVERSATION_CHARS)
        self.session_patches = SessionPatches()
        self.truncates_refused = 0
        self._events: list[ev.ServerEvent] = []
        self._handshake: deque[str] = deque()
        self._queue: deque[str | bytes] = deque()  # bytes = a pending audio append
        self._queued_audio = 0
        self._item_audio: OrderedDict[str, int] = OrderedDict()  # item id -> bytes received
        self._client_events: OrderedDict[str, str] = OrderedDict()  # event_id -> type
        self._event_ids = itertools.count(1)
        self._session_started: float | None = None
        self._connections = 0
        self._reseeded = 0
        self._renewal_deferred_to: float | None = None
        # stall watchdog: what is awaited since when, and when the provider last sent anything
        self.stall_timeout_s = stall_timeout_s
        self.stall_retries = stall_retries
        self.stall: Stall | None = None
        self.stalls = 0
        self._last_received: float | None = None
        self._turn_pending = False  # a committed turn the server will answer
        self._requested = 0  # response.create sent, not yet answered by response.created/error
        self._wait_for: str | None = None
        self._wait_after = ""
        self._wait_since = 0.0
        # reconnect budget
        self.max_reconnects = max_reconnects
        self.max_reconnects_per_minute = max_reconnects_per_minute
        self.losses = 0
        self._recent_losses: deque[float] = deque()

    # --- state ---------------------------------------------------------------------------------

    def _transition(self, inp: Input, detail: str = "") -> None:
        key = (self.state, inp)
        if key not in TRANSITIONS:
            raise ProtocolError(
                f"{inp.value}{' ' + detail if detail else ''} not allowed in state "
                f"{self.state.value}"
            )
        self.state = TRANSITIONS[key]

    def connection_made(self, now: float) -> None:
        """The WebSocket is open: wait for session.created."""
        self._transition(Input.CONNECTED)
        self._connections += 1
        self._session_started = now
        self._last_received = now

    def connection_lost(self, now: float, *, counted: bool = True) -> None:
        """The WebSocket dropped (or was closed by us for renewal or after a stall): back to
        CONNECTING; per-connection state is forgotten. `counted` losses spend the reconnect
        budget (a stall is counted when it is detected, a renewal never)."""
        if self.state is State.CLOSED:
            return
        self._transition(Input.DROPPED)
        self._handshake.clear()
        self.active_response_id = None
        self._item_audio.clear()
        self._client_events.clear()
        self._session_started = None
        self.renewal_due = False
        self._renewal_deferred_to = None
        self.stall = None
        self._turn_pending = False
        self._requested = 0
        self._wait_for = None
        self._last_received = None
        if counted:
            self._count_loss(now)

    def _count_loss(self, now: float) -> None:
        self.losses += 1
        self._recent_losses.append(now)
        while self._recent_losses and now - self._recent_losses[0] >= _RECONNECT_WINDOW_S:
            self._recent_losses.popleft()

    def reconnect_refusal(self, now: float) -> str | None:
        """None when the session may be re-opened after the losses counted so far; else why not:
        `reconnect_limit` (more than `max_reconnects` in all) or `reconnect_rate` (more than
        `max_reconnects_per_minute` within the last 60 s)."""
        if self.max_reconnects is not None and self.losses > self.max_reconnects:
            return "reconnect_limit"
        if self.max_reconnects_per_minute is not None:
            recent = sum(1 for t in self._recent_losses if now - t < _RECONNECT_WINDOW_S)
            if recent > self.max_reconnects_per_minute:
                return "reconnect_rate"
        return None

    def close(self) -> None:
        """No more frames in or out."""
        self._transition(Input.CLOSED)
        self._handshake.clear()
        self._queue.clear()
        self._queued_audio = 0

    @property
    def reconnecting(self) -> bool:
        """True once a second connection has been made (its handshake re-seeds)."""
        return self._connections > 1

    @property
    def reseeded_items(self) -> int:
        """How many text items the last handshake re-seeded."""
        return self._reseeded

    # --- formats -------------------------------------------------------------------------------

    @property
    def input_format(self) -> AudioFormat:
        """The effective input format: what session.updated said, else what was asked for."""
        fmt = self.effective.input_format if self.effective else None
        fmt = fmt or self.requested.input_format
        if fmt is None:
            return PCM16_24K
        return fmt

    @property
    def output_format(self) -> AudioFormat:
        """The effective output format (what the audio deltas are in)."""
        fmt = self.effective.output_format if self.effective else None
        fmt = fmt or self.requested.output_format
        if fmt is None:
            return PCM16_24K
        return fmt

    def audio_ms(self, item_id: str) -> int:
        """Milliseconds of audio received so far for an assistant item (0 if unknown)."""
        nbytes = self._item_audio.get(item_id, 0)
        fmt = self.output_format
        return nbytes * 1000 // (fmt.rate * fmt.bytes_per_sample)

    # --- receiving -----------------------------------------------------------------------------

    def receive_text(self, data: str | bytes, now: float) -> None:
        """Feed one received frame; typed events become available from `events_received()`."""
        self._last_received = now  # any frame at all: the provider is not stalled
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self._events.append(ev.MalformedEvent("", f"bad JSON: {exc.__class__.__name__}"))
            return
        if not isinstance(obj, dict):
            self._events.append(ev.MalformedEvent("", "frame is not a JSON object"))
            return
        try:
            event = ev.parse_server_event(obj)
        except ValueError as exc:
            kind = obj.get("type")
            self._events.append(
                ev.MalformedEvent(kind if isinstance(kind, str) else "", str(exc), raw=obj)
            )
            return
        self._handle(event, now)

    def _handle(self, event: ev.ServerEvent, now: float) -> None:
        if isinstance(event, ev.SessionCreated):
            self._transition(Input.SESSION_CREATED)
            self._start_handshake()
        elif isinstance(event, ev.SessionUpdated):
            self._transition(Input.SESSION_UPDATED)
            self.effective = event.session
        elif isinstance(event, ev.ErrorOccurred):
            self._transition(Input.ERROR)
            event = self._classify(event)
            if event.cause == "response.create":
                self._requested = max(0, self._requested - 1)  # refused: nothing will come
            elif event.cause == "session.update" and event.client_event_id:
                self.session_patches.refused(event.client_event_id)  # never replayed
            elif event.cause == "conversation.item.truncate":
                self.truncates_refused += 1
        else:
            self._transition(Input.EVENT, getattr(event, "type", type(event).__name__))
            if isinstance(event, ev.AudioDelta):
                self._item_audio[event.item_id] = self._item_audio.get(event.item_id, 0) + len(
                    event.audio
                )
                if len(self._item_audio) > _MAX_TRACKED_ITEMS:
                    self._item_audio.popitem(last=False)
            elif isinstance(event, ev.ResponseCreated):
                self.active_response_id = event.response_id
                self._turn_pending = False
                self._requested = max(0, self._requested - 1)
            elif isinstance(event, ev.ResponseDone):
                if self.active_response_id == event.response_id:
                    self.active_response_id = None
                self._turn_pending = False
                if self.active_response_id is None:
                    self._requested = 0  # whatever was asked before this is settled now
            elif isinstance(event, ev.SpeechStarted):
                self._turn_pending = False  # the caller speaks: nothing is owed until it stops
            elif isinstance(event, ev.InputCommitted):
                self._turn_pending = self._creates_responses()
                self.conversation.user_turn(event.item_id)
            elif isinstance(event, ev.SpeechStopped):
                # server VAD commits at once; semantic VAD may still wait for more speech
                self._turn_pending = self._creates_responses("server_vad")
            elif isinstance(event, ev.InputTranscriptionCompleted):
                self.conversation.user_text(event.item_id, event.transcript)
            elif isinstance(event, ev.TranscriptDone):
                self.conversation.assistant_text(
                    event.item_id, event.transcript, self.audio_ms(event.item_id)
                )
            elif isinstance(event, ev.TextDone):
                self.conversation.assistant_text(event.item_id, event.text)
            elif isinstance(event, ev.OutputItemAdded):
                item_id = event.item.get("id")
                if event.item.get("type") == "message" and isinstance(item_id, str):
                    self.conversation.assistant_item(item_id)
            elif isinstance(event, ev.FunctionCallArgumentsDone):
                self.conversation.function_call(
                    event.item_id, event.call_id, event.name, event.arguments
                )
            elif isinstance(event, ev.ItemDeleted):
                self.conversation.deleted(event.item_id)
        self._events.append(event)
        if self.stall_timeout_s is not None:
            self._update_wait(now, str(event.raw.get("type") or type(event).__name__))

    def _creates_responses(self, vad: str | None = None) -> bool:
        """Whether the server answers a committed turn by itself (turn detection on, with
        `create_response` not false; of type `vad` when given)."""
        td = self.effective.turn_detection if self.effective else self.requested.turn_detection
        if td is None or td.create_response is False:
            return False
        return vad is None or td.type == vad

    def _awaited(self) -> str | None:
        if self.active_response_id is not None:
            return "response.done"
        if self._turn_pending or self._requested:
            return "response.created"
        return None

    def _update_wait(self, now: float, after: str) -> None:
        awaited = self._awaited()
        if awaited != self._wait_for:
            self._wait_for, self._wait_after, self._wait_since = awaited, after, now

    def _classify(self, event: ev.ErrorOccurred) -> ev.ErrorOccurred:
        cause = self._client_events.get(event.client_event_id or "")
        benign = event.code in BENIGN_ERROR_CODES
        td = self.effective.turn_detection if self.effective else self.requested.turn_detection
        if event.code == "input_audio_buffer_commit_empty" and td is not None:
            benign = True  # the server's VAD committed the buffer already
        if cause == "conversation.item.truncate":
            # The server's copy can be shorter than the audio received (pipecat#2106), or
            # hold no audio yet: the caller heard all of it there is. Nothing to fix.
            benign = True
        elif cause == "conversation.item.delete":
            benign = True  # an item the server no longer has (or never made)
        return dataclasses.replace(event, cause=cause, benign=benign)

    def events_received(self) -> list[ev.ServerEvent]:
        """Typed events produced since the last call, in order."""
        out, self._events = self._events, []
        return out

    # --- conversation (for re-seeding) ---------------------------------------------------------

    def session_wire(self) -> dict[str, Any]:
        """The session a (re-)opened connection asks for: the requested config with every
        mid-call `session.update` merged in, as the provider applied them."""
        base = self.requested.to_wire(session_type=self.session_type)
        return self.session_patches.apply(base) if self.session_patches else base

    @property
    def replayed(self) -> ev.SessionConfig:
        """`session_wire()` read back as a SessionConfig (what the handshake asked for)."""
        if not self.session_patches:
            return self.requested
        return ev.SessionConfig.parse(self.session_wire())

    def _start_handshake(self) -> None:
        self._handshake.append(json.dumps(ev.session_update(self.session_wire())))
        self._reseeded = 0
        if self.reconnecting:
            for item in self.conversation.items():
                self._handshake.append(json.dumps(ev.conversation_item_create(item)))
                self._reseeded += 1

    # --- sending -------------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Queue `input_audio_buffer.append` for raw audio in the effective input format."""
        if self.state is State.CLOSED:
            raise SessionClosed("session is closed")
        if self._queued_audio >= self.max_queued_audio:
            for i, frame in enumerate(self._queue):
                if isinstance(frame, bytes):
                    del self._queue[i]
                    break
            self._queued_audio -= 1
            self.dropped_audio += 1
        self._queue.append(data)
        self._queued_audio += 1

    def send_event(self, event: Mapping[str, Any], now: float | None = None) -> str:
        """Queue any client event (a dict); returns its event_id. UnsupportedEventError if the
        provider profile does not support its type. `now` starts the stall watchdog's wait for a
        `response.create` (without it, the wait counts from the last event received)."""
        if self.state is State.CLOSED:
            raise SessionClosed("session is closed")
        kind = event.get("type")
        if not isinstance(kind, str):
            raise ValueError("client event needs a string 'type'")
        if kind in self.unsupported:
            raise UnsupportedEventError(f"{kind} is not supported by this provider")
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            event_id = f"evt_gw{next(self._event_ids)}"
            event = {**event, "event_id": event_id}
        self._client_events[event_id] = kind
        if len(self._client_events) > _MAX_TRACKED_CLIENT_EVENTS:
            self._client_events.popitem(last=False)
        if kind == "conversation.item.create":
            item = event.get("item")
            if isinstance(item, Mapping):
                self.conversation.add_item(item, " ".join(ev.texts_of(item)))
        elif kind == "conversation.item.truncate":
            item_id, end = event.get("item_id"), event.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end, int):
                self.conversation.truncated(item_id, end, self.audio_ms(item_id))
        elif kind == "conversation.item.delete":
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                self.conversation.deleted(item_id)
        elif kind == "session.update":
            session = event.get("session")
            if isinstance(session, Mapping):
                self.session_patches.add(event_id, session)
        elif kind == "response.create":
            self._requested += 1
            if self.stall_timeout_s is not None:
                self._update_wait(now if now is not None else self._last_received or 0.0, kind)
        self._queue.append(json.dumps(event))
        return event_id

    def next_frame(self) -> str | None:
        """The next text frame to send, or None. Handshake frames first; queued frames only once
        the session is READY."""
        if self._handshake:
            return self._handshake.popleft()
        if self.state is not State.READY or not self._queue:
            return None
        frame = self._queue.popleft()
        if isinstance(frame, bytes):
            self._queued_audio -= 1
            return ev.encode_append(frame)
        return frame

    def next_handshake_frame(self) -> str | None:
        """The next handshake frame (session.update, re-seed items), or None."""
        return self._handshake.popleft() if self._handshake else None

    @property
    def queued(self) -> int:
        """Frames waiting to be sent (handshake and user)."""
        return len(self._handshake) + len(self._queue)

    # --- timers --------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline (renewal or stall watchdog), or None."""
        renewal, stall = self._renewal_at(), self._stall_at()
        if renewal is None or stall is None:
            return renewal if stall is None else stall
        return min(renewal, stall)

    def _renewal_at(self) -> float | None:
        if self.max_session_s is None or self._session_started is None or self.renewal_due:
            return None
        if self.state is not State.READY:
            return None
        at = self._session_started + self.max_session_s
        if self._renewal_deferred_to is not None:
            at = max(at, self._renewal_deferred_to)
        return at

    def _stall_at(self) -> float | None:
        if self.stall_timeout_s is None or self.state is not State.READY or self.stall is not None:
            return None
        if self._wait_for is None:
            return None
        return max(self._wait_since, self._last_received or 0.0) + self.stall_timeout_s

    def handle_timer(self, now: float) -> None:
        """Fire what is due at `now`: `renewal_due` (not while a response is active: it is looked
        at again a second later), or `stall` (counted as a loss for the reconnect budget)."""
        at = self._stall_at()
        if at is not None and now >= at:
            self.stalls += 1
            silent = now - max(self._wait_since, self._last_received or 0.0)
            self._count_loss(now)
            refusal = "stall_retries" if self.stalls > self.stall_retries else None
            self.stall = Stall(
                awaited=self._wait_for or "",
                after=self._wait_after,
                silent_s=silent,
                count=self.stalls,
                refusal=refusal or self.reconnect_refusal(now),
            )
            return
        at = self._renewal_at()
        if at is not None and now >= at:
            if self.active_response_id is not None:
                self._renewal_deferred_to = now + _RENEWAL_RETRY_S  # do not cut a response short
            else:
                self.renewal_due = True
