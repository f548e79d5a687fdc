"""The call bridge core: a leg's audio to and from a Realtime session, sans I/O.

    caller --deliver(frame, now)--> [batch, convert] --> the append to send (returned)
    caller <--pull(now)------------ PlayoutQueue <--[convert]-- server_event(AudioDelta, now)

A plain object in the manner of aioquic's and h11's cores: no asyncio, no sockets, no clock, no
logger, no metrics, no Realtime client. Time comes in with every input that needs it; what the
bridge wants done goes out as data:

* `deliver()` returns the audio of one `input_audio_buffer.append` when a batch is full, and
  `pull()` the frame for the caller (None: silence). Both run on the media clock's tick, 50
  times a second per call: no allocation there beyond the frame itself.
* `client_events` holds the client events for the provider (`response.create`,
  `conversation.item.truncate`, `response.cancel`, `conversation.item.delete`), as dicts in the
  GA shape, in order.
* `call_events` holds what the call's shell hands on: events for the scenario
  (`BotMediaStarted`, `BotMediaEnded`) and observations for metrics and logs (`FirstAudioSent`,
  `ResponseHeard`, `BargedIn`).

You must empty both queues after each input (the shell, `gateway.call.call.Call`, does).

What the bridge keeps: the caller-audio batch and the converters both ways; the playout queue
with its per-item played-ms accounting (what `conversation.item.truncate` carries); the response
in progress and the one asked for or waiting (`request_response()`); the audio items of each
response under way; the responses interrupted by a barge-in, whose late deltas are dropped and
whose unheard items are deleted; hold and the media switches of the scenario.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import telcodecs

from gateway.call.events import BotMediaEnded, BotMediaStarted
from gateway.media.convert import AudioConverter, silence_byte
from gateway.media.format import AudioFormat
from gateway.media.playout import PlayoutCleared, PlayoutQueue
from gateway.media.port import FormatChanged, HoldChanged, LegEvent
from gateway.realtime import events as rt

BOT_MEDIA_END_S = 1.0  # VoxEngine: WebSocketMediaEnded after 1 s of silence


# --- observations: what the shell counts and logs ----------------------------------------------


@dataclass(frozen=True, slots=True)
class FirstAudioSent:
    """The call's first bot audio left for the caller, `setup_s` after the call was created."""

    setup_s: float


@dataclass(frozen=True, slots=True)
class ResponseHeard:
    """The first audio of the answer to the caller's turn left, `latency_s` after the
    provider's speech_stopped. Its parts: `vad_s`, the caller's audio sent after the point
    where speech_stopped says the caller stopped (the provider's VAD delay, by the audio
    clock; None when unknown); `model_s`, speech_stopped to the first audio delta."""

    latency_s: float
    vad_s: float | None = None
    model_s: float | None = None


@dataclass(frozen=True, slots=True)
class BargedIn:
    """Bot audio was cleared after the caller started speaking. `reaction_s`: from
    speech_started to the last bot frame sent; `at_s`: since the call was created."""

    item_id: str
    played_ms: int
    dropped_ms: int
    reaction_s: float
    at_s: float


CallEffect = BotMediaStarted | BotMediaEnded | FirstAudioSent | ResponseHeard | BargedIn


class CallBridge:
    """The media and response state of one call between its leg and its Realtime session."""

    def __init__(
        self,
        native: AudioFormat,
        frame_ms: int,
        session_in: AudioFormat,
        session_out: AudioFormat,
        *,
        append_ms: int = 100,
        created_at: float = 0.0,
    ) -> None:
        self.created_at = created_at
        self.append_ms = append_ms
        self.session_in = session_in
        self.session_out = session_out
        #: client events for the provider, in order (GA-shaped dicts)
        self.client_events: deque[dict[str, Any]] = deque()
        #: events for the scenario and observations for the shell, in order
        self.call_events: deque[CallEffect] = deque()
        # media switches
        self.to_model = True
        self.to_caller = True
        self.on_hold = False
        self.closed = False
        # response/item bookkeeping
        self.active_response: str | None = None
        self._pending_response: dict[str, Any] | None = None
        self._response_requested = False
        self._ignored_responses: set[str] = set()
        self._item_bytes: dict[str, int] = {}
        # audio message items of each response under way (response.output_item.added), and the
        # responses a barge-in cut, with the items already truncated or deleted for them
        self._response_items: dict[str, list[str]] = {}
        self._barged: dict[str, set[str]] = {}
        # timing of the conversation (for barge-in reaction and response latency)
        self.speech_started_at: float | None = None
        self._last_speech_stopped: float | None = None
        self._waiting_first_response_audio = False
        self._first_delta_at: float | None = None
        self._vad_s: float | None = None
        #: milliseconds of caller audio given to the model (the audio_end_ms clock)
        self.input_ms = 0
        self._last_audio_pull: float | None = None
        self._bot_playing = False
        self._bot_item: str | None = None
        self._first_audio_sent = False
        self._setup_media(native, frame_ms)
        self._in_buf = bytearray()
        # The model's audio is converted a whole delta at a time as it arrives and queued in the
        # leg's format; the leg pulls ready frames.
        self.playout = PlayoutQueue(
            frame_bytes=native.frame_bytes(frame_ms),
            bytes_per_ms=native.bytes_per_ms,
            silence_byte=silence_byte(native),
        )

    def _setup_media(self, native: AudioFormat, frame_ms: int) -> None:
        self.native = native
        self.frame_ms = frame_ms
        self._to_model_conv = AudioConverter(native, self.session_in)
        self._to_caller_conv = AudioConverter(self.session_out, native)
        # Caller audio is collected in the leg's format and converted one append at a time:
        # one decode/resample/encode per 100 ms costs a fifth of five per-frame ones.
        self._append_bytes = native.frame_bytes(self.append_ms)
        self._out_bytes_per_ms = self.session_out.bytes_per_ms

    def _reformat(self, native: AudioFormat, frame_ms: int) -> None:
        """A re-INVITE changed the leg's codec or ptime: the caller's batch and the queued bot
        audio are converted to the new format (nothing heard twice or lost), the items keep
        their played milliseconds, and the converters are made anew for the new format."""
        old = self.native
        if native != old:
            to_new = AudioConverter(old, native)
            self._in_buf = bytearray(to_new.convert(bytes(self._in_buf)))
            queued = AudioConverter(old, native).convert
            self._setup_media(native, frame_ms)
        else:
            queued = None
            self.frame_ms = frame_ms
        self.playout.reformat(
            native.frame_bytes(frame_ms),
            native.bytes_per_ms,
            silence_byte(native),
            queued,
        )

    # --- media (the media clock's tick) -------------------------------------------------------

    def deliver(self, frame: bytes, now: float) -> bytes | None:
        """One frame of caller audio (native format); returns the audio of one
        `input_audio_buffer.append` (session format) when a batch is full, else None."""
        if not self.to_model or self.on_hold or self.closed:
            return None
        self.input_ms += self.frame_ms
        buf = self._in_buf
        buf += frame
        if len(buf) >= self._append_bytes:
            data = self._to_model_conv.convert(bytes(buf))
            buf.clear()
            return data
        return None

    def pull(self, now: float) -> bytes | None:
        """One frame for the caller (native format), or None for silence."""
        frame = self.playout.pull(now) if self.to_caller else None
        if frame is None:
            if (
                self._bot_playing
                and self._last_audio_pull is not None
                and (now - self._last_audio_pull >= BOT_MEDIA_END_S)
            ):
                self._bot_playing = False
                self.call_events.append(BotMediaEnded(self._bot_item))
            return None
        self._last_audio_pull = now
        if not self._bot_playing:
            self._bot_playing = True
            self._bot_item = self.playout.playing_item
            self.call_events.append(BotMediaStarted(self._bot_item))
        if not self._first_audio_sent:
            self._first_audio_sent = True
            self.call_events.append(FirstAudioSent(now - self.created_at))
        if self._waiting_first_response_audio and self._last_speech_stopped is not None:
            self._waiting_first_response_audio = False
            stopped = self._last_speech_stopped
            first = self._first_delta_at
            self.call_events.append(
                ResponseHeard(
                    now - stopped, self._vad_s, None if first is None else first - stopped
                )
            )
        return frame

    # --- inputs from the provider and the leg -----------------------------------------------

    def server_event(self, ev: rt.ServerEvent, now: float) -> bool:
        """The media and response effects of a server event; True when it queued audio for
        the caller."""
        if isinstance(ev, rt.AudioDelta):
            if ev.response_id in self._ignored_responses or not self.to_caller:
                return False
            self._item_bytes[ev.item_id] = self._item_bytes.get(ev.item_id, 0) + len(ev.audio)
            if self._waiting_first_response_audio and self._first_delta_at is None:
                self._first_delta_at = now
            conv = self._to_caller_conv
            audio = ev.audio if conv.identity else conv.convert(ev.audio)
            self.playout.push(ev.item_id, ev.response_id, audio)
            return True
        if isinstance(ev, rt.SpeechStarted):
            self.speech_started_at = now
        elif isinstance(ev, rt.SpeechStopped):
            self._last_speech_stopped = now
            self._waiting_first_response_audio = True
            self._first_delta_at = None
            # audio_end_ms counts the session's input audio (a reconnect restarts it: None)
            behind = self.input_ms - ev.audio_end_ms
            self._vad_s = behind / 1000 if 0 <= behind < 10_000 else None
        elif isinstance(ev, rt.ResponseCreated):
            self.active_response = ev.response_id
            self._response_requested = False
        elif isinstance(ev, rt.ErrorOccurred) and ev.cause == "response.create":
            self._response_requested = False
            busy = ev.code == "conversation_already_has_active_response"
            if busy and self._pending_response is None:
                # a server-created response (VAD) got there first: ask again after it
                self._pending_response = {}
        elif isinstance(ev, rt.OutputItemAdded):
            item_id = ev.item.get("id")
            if ev.item.get("type") == "message" and isinstance(item_id, str):
                settled = self._barged.get(ev.response_id)
                if settled is None:
                    self._response_items.setdefault(ev.response_id, []).append(item_id)
                elif item_id not in settled:  # begun after the barge-in: never heard
                    settled.add(item_id)
                    self.client_events.append(rt.conversation_item_delete(item_id))
        elif isinstance(ev, rt.ResponseDone):
            if self.active_response == ev.response_id:
                self.active_response = None
            self._response_items.pop(ev.response_id, None)
            settled = self._barged.pop(ev.response_id, None)
            if settled is not None:
                self._delete_unheard(ev.output, settled)
            self._create_pending()
        elif isinstance(ev, rt.SessionReconnected):
            # A new session: the response under way (and any asked for) died with the old one;
            # its response.done never comes. Ask again for what was waiting behind it.
            if self.active_response is not None:
                self._ignored_responses.add(self.active_response)
            self.active_response = None
            self._response_requested = False
            self._response_items.clear()  # the old session's items are not in the new one
            self._barged.clear()
            self._create_pending()
        return False

    def leg_event(self, ev: LegEvent, now: float) -> None:
        """The media effects of a leg event (hold, a re-INVITE's new codec or ptime)."""
        if isinstance(ev, HoldChanged):
            self.on_hold = ev.on_hold
            if ev.on_hold:
                self._in_buf.clear()
        elif isinstance(ev, FormatChanged):
            self._reformat(ev.native, ev.frame_ms)

    def session_formats(self, session_in: AudioFormat, session_out: AudioFormat) -> None:
        """The session's effective formats (session.updated); used from the next re-setup on."""
        self.session_in = session_in
        self.session_out = session_out

    # --- actions ------------------------------------------------------------------------------

    def clear(self, now: float, *, ignore_rest_of_response: bool = True) -> PlayoutCleared:
        """Drop the bot audio queued for the caller; by default also the rest of the response
        that was playing (its late deltas are dropped). Returns what was playing and how much of
        it the caller heard."""
        cleared = self.playout.clear()
        if not self._to_caller_conv.identity:  # no tail of the dropped audio in the next frame
            self._to_caller_conv = AudioConverter(self.session_out, self.native)
        if cleared.response_id and ignore_rest_of_response:
            self._ignored_responses.add(cleared.response_id)
        if self.active_response and ignore_rest_of_response:
            self._ignored_responses.add(self.active_response)
        if self.speech_started_at is not None and cleared.item_id is not None:
            last = self._last_audio_pull or self.speech_started_at
            self.call_events.append(
                BargedIn(
                    cleared.item_id,
                    cleared.played_ms,
                    cleared.dropped_ms,
                    reaction_s=max(0.0, last - self.speech_started_at),
                    at_s=now - self.created_at,
                )
            )
        return cleared

    def barge_in(self, now: float, *, cancel_response: bool) -> PlayoutCleared:
        """The caller spoke over the bot: clear; truncate each item the caller heard part of at
        what was heard; with `cancel_response` (the server does not cancel it itself) cancel
        the response in progress; then delete each item of which nothing was heard (the
        playing one, those queued behind it, those of the response in progress, and those it
        begins later). Deleted, not truncated at 0: OpenAI refuses a truncate of an item with
        no audio yet (`unsupported_content_type`, livekit/agents#6157), and a delete leaves no
        empty assistant turn in the conversation."""
        cleared = self.clear(now)
        response = self.active_response
        candidates: list[str] = []
        if cleared.item_id is not None:
            candidates += (cleared.item_id, *cleared.queued_items)
        settled: set[str] = set()
        cancel = cancel_response and response is not None
        if response is not None:
            candidates += self._response_items.pop(response, ())
            cancel = cancel and response not in self._barged  # one cancel per response
            settled = self._barged.setdefault(response, set())
        unheard: list[str] = []
        for item_id in dict.fromkeys(candidates):
            info = self.playout.items.get(item_id)
            if item_id in settled or (info is not None and info.response_id == "play"):
                continue
            settled.add(item_id)
            played = self.playout.played_ms(item_id)
            if played <= 0:
                unheard.append(item_id)
            elif item_id == cleared.item_id or played < self.item_audio_ms(item_id):
                self.truncate(item_id, played)
        if cancel:
            self.client_events.append(rt.response_cancel())
        for item_id in unheard:
            self.client_events.append(rt.conversation_item_delete(item_id))
        return cleared

    def _delete_unheard(self, output: tuple[Mapping[str, Any], ...], settled: set[str]) -> None:
        """The items a barged-in response reports at its end that nothing was heard of and no
        truncate or delete has named yet."""
        for item in output:
            item_id = item.get("id")
            if (
                item.get("type") == "message"
                and isinstance(item_id, str)
                and item_id not in settled
                and self.playout.played_ms(item_id) <= 0
            ):
                settled.add(item_id)
                self.client_events.append(rt.conversation_item_delete(item_id))

    def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """`conversation.item.truncate`, clamped to the audio the item holds."""
        held = self.item_audio_ms(item_id)
        self.client_events.append(
            rt.conversation_item_truncate(item_id, max(0, min(audio_end_ms, held)))
        )

    def request_response(self, response: Mapping[str, Any]) -> None:
        """`response.create` as soon as no response is active (nor asked for already)."""
        if self.active_response is None and not self._response_requested:
            self._response_requested = True
            self.client_events.append(rt.response_create(**response))
        else:
            self._pending_response = dict(response)

    def _create_pending(self) -> None:
        if self._pending_response is not None:
            pending, self._pending_response = self._pending_response, None
            self._response_requested = True
            self.client_events.append(rt.response_create(**pending))

    def set_media(self, target: str, on: bool) -> None:
        """Start or stop audio toward `model` or `caller` (stopping drops what is queued)."""
        if target == "model":
            self.to_model = on
            if not on:
                self._in_buf.clear()
        elif target == "caller":
            self.to_caller = on
            if not on:
                self.playout.clear()
        else:
            raise ValueError(f"media target must be 'model' or 'caller', not {target!r}")

    def play(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        """Queue int16 PCM at `rate` for the caller (not sent to the model)."""
        native = self.native
        if rate not in telcodecs.SUPPORTED_RATES:
            pcm, rate = telcodecs.resample_any(pcm, rate, native.rate), native.rate
        conv = AudioConverter(AudioFormat("pcm16", rate), native)
        self.playout.push(f"play-{id(pcm)}", "play", conv.convert_pcm(pcm) + conv.flush())

    def close(self) -> None:
        """The call is over: nothing more goes to the model."""
        self.closed = True

    # --- what the bridge knows ----------------------------------------------------------------

    def item_audio_ms(self, item_id: str) -> int:
        """Milliseconds of audio the model has sent for `item_id` (what the item holds)."""
        return int(self._item_bytes.get(item_id, 0) / self._out_bytes_per_ms)

    def item_played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` actually sent to the caller."""
        return self.playout.played_ms(item_id)
