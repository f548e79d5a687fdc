"""The Call: one object owns everything of one call, and bridges its leg to its Realtime session.

    caller --RTP/WebRTC--> leg --deliver()--> [batch, decode/resample] --append--> Realtime
    caller <--RTP/WebRTC-- leg <--pull()----- PlayoutQueue <--[resample/encode]-- audio deltas

The leg (a `MediaPort`), the Realtime client, the playout queue, the recorder and every task of
the call live in one `asyncio.TaskGroup` inside `run()`. Every way out (BYE from either side,
CANCEL, a provider failure, a handler error, a drain) goes through `hangup()`, which is safe to
call twice, and `run()`'s cleanup frees the port, socket and tasks and counts the outcome.

The Call implements `MediaSink` for its leg. `deliver()` and `pull()` run on the media clock's
tick; they never await and never run scenario code. Provider events are applied to the media
state inline (audio into the playout queue, drop deltas of an interrupted response), then queued
for the scenario's handlers, which run in order in the call's dispatcher task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import telcodecs

from gateway import metrics
from gateway.call.bus import EventBus, Handler
from gateway.call.events import (
    BotMediaEnded,
    BotMediaStarted,
    CallConnected,
    CallEnded,
)
from gateway.call.recorder import CallRecorder
from gateway.logs import get_logger
from gateway.media.convert import AudioConverter, decode, silence_byte
from gateway.media.format import AudioFormat
from gateway.media.playout import PlayoutCleared, PlayoutQueue
from gateway.media.port import (
    DtmfReceived,
    FormatChanged,
    HoldChanged,
    LegEnded,
    LegEvent,
    MediaPort,
    TransferProgress,
)
from gateway.media.wav import read_wav
from gateway.realtime import events as rt
from gateway.realtime.client import RealtimeClient

E = TypeVar("E")

_ADDED_TO_MODEL = metrics.MEDIA_ADDED_LATENCY.labels(direction="to_model")
_ADDED_TO_CALLER = metrics.MEDIA_ADDED_LATENCY.labels(direction="to_caller")

BOT_MEDIA_END_S = 1.0  # VoxEngine: WebSocketMediaEnded after 1 s of silence


@dataclass(frozen=True)
class CallInfo:
    """What is known about a call when it arrives; headers are read-only."""

    leg: str
    direction: str  # inbound / outbound
    caller: str = ""
    called: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    provider: str = ""


@dataclass
class CallOptions:
    """Per-call media settings (from config, routing table and scenario)."""

    append_ms: int = 100
    greeting: bool = True
    record_dir: str = ""
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    goodbye_timeout_s: float = 10.0


class CallEndedError(Exception):
    """An action was asked of a call that has ended."""


class RealtimeActions:
    """`call.realtime`: handlers for Realtime server events, and every client event."""

    def __init__(self, call: Call) -> None:
        # a proxy, not a reference: no call <-> actions cycle (a call is freed by refcount)
        self._call: Call = weakref.proxy(call)
        self._answered_calls: set[str] = set()

    @property
    def link(self) -> RealtimeClient:
        return self._call._link

    def on(self, event_type: type[E], handler: Handler[E]) -> None:
        """Run `handler` for every Realtime server event of `event_type`."""
        self._call._bus.on(event_type, handler)

    def off(self, event_type: type[E], handler: Handler[E] | None = None) -> None:
        self._call._bus.off(event_type, handler)

    @property
    def interrupt_response(self) -> bool:
        """Whether the server cancels a response itself when the caller starts speaking."""
        session = self.link.effective
        td = session.turn_detection if session else None
        return bool(td and td.interrupt_response is not False)

    @property
    def response_active(self) -> bool:
        return self._call._active_response is not None

    def send(self, event: Mapping[str, Any]) -> None:
        """Send any client event as-is (e.g. `conversation.item.retrieve`)."""
        self.link.send_event(event)

    def session_update(self, session: Mapping[str, Any]) -> None:
        """`session.update` with a session patch (`type` filled in where the provider needs it)."""
        self.link.update_session(session)

    def response_create(self, **response: Any) -> None:
        """Ask for a response now (the caller must know none is active)."""
        self.link.create_response(**response)

    def response_create_when_idle(self, **response: Any) -> None:
        """Ask for a response as soon as no response is active (nor asked for already)."""
        if self._call._active_response is None and not self._call._response_requested:
            self._call._response_requested = True
            self.link.create_response(**response)
        else:
            self._call._pending_response = response

    def response_cancel(self, response_id: str | None = None) -> None:
        self.link.cancel_response(response_id)

    def conversation_item_create(self, item: Mapping[str, Any]) -> None:
        self.link.send_event(rt.conversation_item_create(item))

    def conversation_item_truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Truncate an assistant item; `audio_end_ms` is clamped to the audio it holds."""
        held = self._call.item_audio_ms(item_id)
        self.link.truncate(item_id, max(0, min(audio_end_ms, held)))

    def conversation_item_delete(self, item_id: str) -> None:
        self.link.send_event(rt.conversation_item_delete(item_id))

    def conversation_item_retrieve(self, item_id: str) -> None:
        self.link.send_event(rt.conversation_item_retrieve(item_id))

    def input_audio_buffer_commit(self) -> None:
        self.link.commit()

    def input_audio_buffer_clear(self) -> None:
        if self.link.profile.supports("input_audio_buffer.clear"):
            self.link.clear_input()

    def add_user_text(self, text: str) -> None:
        self.link.add_user_text(text)

    def function_call_output(self, call_id: str, output: str | Mapping[str, Any]) -> None:
        """Answer a function call; `output` is a string or a JSON-able mapping."""
        text = output if isinstance(output, str) else json.dumps(output)
        self._answered_calls.add(call_id)
        self.link.send_function_output(call_id, text)

    def function_call_answered(self, call_id: str) -> bool:
        """True once a function_call_output was sent for `call_id`."""
        return call_id in self._answered_calls

    # --- VoxEngine `RealtimeAPIClient` names (docs/voxengine.md) ---------------------------------

    add_event_listener = on
    remove_event_listener = off

    @property
    def id(self) -> str:
        """This call's Realtime client id (VoxEngine `id()`), stable across reconnects."""
        return f"rt-{self._call.id}"

    @property
    def web_socket_id(self) -> str | None:
        """The current provider WebSocket's id (VoxEngine `webSocketId()`); new on reconnect."""
        return self.link.websocket_id

    def clear_media_buffer(self) -> None:
        """Drop the model's audio queued for the caller (VoxEngine `clearMediaBuffer()`)."""
        self._call.clear_media_buffer()

    def send_media_to(self) -> None:
        """Play the model's audio to the caller (VoxEngine `client.sendMediaTo(call)`)."""
        self._call.send_media_to("caller")

    def stop_media_to(self) -> None:
        """Stop the model's audio to the caller (VoxEngine `client.stopMediaTo(call)`)."""
        self._call.stop_media_to("caller")

    def close(self) -> None:
        """Close the provider session (VoxEngine `close()`); the call then ends with outcome
        `provider_closed` unless the scenario ended it first."""
        if self._call._tg is not None and not self.link.closed:
            self._call.spawn(self.link.close())


class Call:
    """One call: its leg, its Realtime session, playout, recorder and tasks."""

    def __init__(
        self,
        call_id: str,
        info: CallInfo,
        leg: MediaPort,
        link: RealtimeClient,
        options: CallOptions,
        *,
        created_at: float,
        transfer: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.id = call_id
        self.info = info
        self.leg = leg
        self.options = options
        self.created_at = created_at
        self.answered_at: float | None = None
        self.state = "connecting"
        self.outcome: str | None = None
        self.log = get_logger("call", call_id=call_id, leg=info.leg, provider=info.provider)
        self._link = link
        self._transfer_fn = transfer
        self._bus = EventBus(call_id)
        self.realtime = RealtimeActions(self)
        self._ended = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # media state
        self._to_model = True
        self._to_caller = True
        self._on_hold = False
        self._setup_media()
        # response/item bookkeeping
        self._active_response: str | None = None
        self._pending_response: dict[str, Any] | None = None
        self._response_requested = False
        self._ignored_responses: set[str] = set()
        self._item_bytes: dict[str, int] = {}
        self._last_speech_stopped: float | None = None
        self._speech_started_at: float | None = None
        self._last_audio_pull: float | None = None
        self._bot_playing = False
        self._bot_item: str | None = None
        self._first_audio_sent = False
        self._waiting_first_response_audio = False
        self.recorder: CallRecorder | None = None
        # story for the end-of-call log line
        self.stats: dict[str, Any] = {
            "barge_ins": 0,
            "tool_calls": [],
            "response_latency_ms": [],
            "dtmf_digits": 0,
        }

    # --- media plumbing ---------------------------------------------------------------------

    def _setup_media(self) -> None:
        native = self.leg.native
        link = self._link
        self._to_model_conv = AudioConverter(native, link.input_format)
        self._to_caller_conv = AudioConverter(link.output_format, native)
        # Caller audio is collected in the leg's format and converted one append at a time:
        # one decode/resample/encode per 100 ms costs a fifth of five per-frame ones.
        self._append_bytes = native.frame_bytes(self.options.append_ms)
        self._in_buf = bytearray()
        # The model's audio is converted a whole delta at a time as it arrives (the receive
        # loop lets due media ticks run first, so a burst of deltas waits, not the packets) and
        # queued in the leg's format; the leg pulls ready frames.
        silence = silence_byte(native)
        self.playout = PlayoutQueue(
            frame_bytes=native.frame_bytes(self.leg.frame_ms),
            bytes_per_ms=native.frame_bytes(1000) / 1000.0,
            silence_byte=silence,
        )
        self._out_bytes_per_ms = link.output_format.frame_bytes(1000) / 1000.0
        self._inband: telcodecs.DtmfDetector | None = getattr(self, "_inband", None)

    def enable_inband_dtmf(self) -> None:
        """Detect DTMF tones in the caller's audio (trunks that negotiated no RFC 4733)."""
        if self.leg.native.rate == 8000:
            self._inband = telcodecs.DtmfDetector(8000)

    def deliver(self, frame: bytes, now: float) -> None:
        """MediaSink: one frame of caller audio (native format) from the leg."""
        t_in = time.perf_counter()
        pcm = None
        if self.recorder is not None or self._inband is not None:
            pcm = decode(frame, self.leg.native)
            if self.recorder is not None:
                self.recorder.caller(pcm, now)
            if self._inband is not None:
                for digit in self._inband.process(pcm):
                    self.leg_event(DtmfReceived(digit, "inband"))
        if not self._to_model or self._on_hold or self._closed or self._link.closed:
            return
        buf = self._in_buf
        buf += frame
        if len(buf) >= self._append_bytes:
            self._link.send_audio(self._to_model_conv.convert(bytes(buf)))
            buf.clear()
            _ADDED_TO_MODEL.observe(time.perf_counter() - t_in)

    def pull(self, now: float) -> bytes | None:
        """MediaSink: one frame for the caller, or None for silence."""
        frame = self.playout.pull(now) if self._to_caller else None
        if frame is None:
            if (
                self._bot_playing
                and self._last_audio_pull is not None
                and (now - self._last_audio_pull >= BOT_MEDIA_END_S)
            ):
                self._bot_playing = False
                self._bus.emit(BotMediaEnded(self._bot_item))
            return None
        self._last_audio_pull = now
        if not self._bot_playing:
            self._bot_playing = True
            self._bot_item = self.playout.playing_item
            self._bus.emit(BotMediaStarted(self._bot_item))
        if not self._first_audio_sent:
            self._first_audio_sent = True
            metrics.CALL_SETUP.observe(now - self.created_at)
        if self._waiting_first_response_audio and self._last_speech_stopped is not None:
            self._waiting_first_response_audio = False
            latency = now - self._last_speech_stopped
            metrics.RESPONSE_LATENCY.observe(latency)
            self.stats["response_latency_ms"].append(round(latency * 1000))
        if self.recorder is not None:
            self.recorder.bot(decode(frame, self.leg.native), now)
        return frame

    def leg_event(self, event: LegEvent) -> None:
        """MediaSink: a leg event; media-relevant state changes at once, handlers later."""
        if isinstance(event, HoldChanged):
            self._on_hold = event.on_hold
            if event.on_hold:
                self._in_buf.clear()
        elif isinstance(event, DtmfReceived):
            metrics.DTMF_DIGITS.labels(source=event.source).inc()
            self.stats["dtmf_digits"] += 1  # never the digits: they may be PINs
            if self.recorder:
                self.recorder.event(
                    "dtmf",
                    asyncio.get_running_loop().time(),
                    digit=event.digit,
                    source=event.source,
                )
        elif isinstance(event, FormatChanged):
            # re-INVITE with another codec or ptime: new converters, drop queued audio
            self.playout.clear()
            self._setup_media()
        elif isinstance(event, LegEnded):
            self._bus.emit(event)
            self._request_end(event.reason)
            return
        self._bus.emit(event)

    # --- Realtime events --------------------------------------------------------------------

    def _on_server_event(self, ev: rt.ServerEvent, now: float) -> None:
        """Media-relevant effects of a server event, applied inline."""
        if isinstance(ev, rt.AudioDelta):
            t_in = time.perf_counter()
            if ev.response_id in self._ignored_responses or not self._to_caller:
                return
            self._item_bytes[ev.item_id] = self._item_bytes.get(ev.item_id, 0) + len(ev.audio)
            conv = self._to_caller_conv
            audio = ev.audio if conv.identity else conv.convert(ev.audio)
            self.playout.push(ev.item_id, ev.response_id, audio)
            _ADDED_TO_CALLER.observe(time.perf_counter() - t_in)
        elif isinstance(ev, rt.SpeechStarted):
            self._speech_started_at = now
        elif isinstance(ev, rt.SpeechStopped):
            self._last_speech_stopped = now
            self._waiting_first_response_audio = True
        elif isinstance(ev, rt.ResponseCreated):
            self._active_response = ev.response_id
            self._response_requested = False
        elif isinstance(ev, rt.ErrorOccurred) and ev.cause == "response.create":
            self._response_requested = False
            busy = ev.code == "conversation_already_has_active_response"
            if busy and self._pending_response is None:
                # a server-created response (VAD) got there first: ask again after it
                self._pending_response = {}
        elif isinstance(ev, rt.ResponseDone):
            if self._active_response == ev.response_id:
                self._active_response = None
            if self._pending_response is not None:
                pending, self._pending_response = self._pending_response, None
                self._response_requested = True
                self._link.create_response(**pending)
        elif isinstance(ev, rt.SessionReconnected):
            # A new session: the response under way (and any asked for) died with the old one;
            # its response.done never comes. Ask again for what was waiting behind it.
            if self._active_response is not None:
                self._ignored_responses.add(self._active_response)
            self._active_response = None
            self._response_requested = False
            if self._pending_response is not None:
                pending, self._pending_response = self._pending_response, None
                self._response_requested = True
                self._link.create_response(**pending)
        elif (
            isinstance(ev, rt.TranscriptDone | rt.InputTranscriptionCompleted)
            and self.recorder is not None
        ):
            role = "assistant" if isinstance(ev, rt.TranscriptDone) else "user"
            self.recorder.event(
                "transcript", now, role=role, item_id=ev.item_id, text=ev.transcript
            )

    def item_audio_ms(self, item_id: str) -> int:
        """Milliseconds of audio the model has sent for `item_id` (what the item holds)."""
        return int(self._item_bytes.get(item_id, 0) / self._out_bytes_per_ms)

    def item_played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` actually sent to the caller."""
        return self.playout.played_ms(item_id)

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        lost = False
        async for ev in self._link.events():
            self._on_server_event(ev, loop.time())
            self._bus.emit(ev)
            lost = lost or isinstance(ev, rt.SessionLost)
        if lost and self._bus.wants(rt.SessionLost):
            # The scenario says goodbye (apology prompt) and hangs up; make sure it does.
            await asyncio.sleep(20.0)
        self._request_end("provider_failed" if lost else "provider_closed")

    # --- scenario API: call actions ---------------------------------------------------------

    def on(self, event_type: type[E], handler: Handler[E]) -> None:
        """Run `handler` for every call event of `event_type` (e.g. DtmfReceived)."""
        self._bus.on(event_type, handler)

    def off(self, event_type: type[E], handler: Handler[E] | None = None) -> None:
        self._bus.off(event_type, handler)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task of this call; it is cancelled when the call ends."""
        if self._tg is None:
            raise CallEndedError("call is not running")

        async def _guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("call_task_failed")

        task = self._tg.create_task(_guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def answer(self) -> None:
        """Answer the call. Legs are answered by the gateway before the scenario runs, so this
        only confirms the call is up; it raises CallEndedError if the call has ended."""
        if self._closed:
            raise CallEndedError(self.id)

    async def hangup(self, outcome: str = "completed") -> None:
        """End the call (BYE on SIP). Safe to call twice; the first outcome counts."""
        self._request_end(outcome)

    def _request_end(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._ended.set()

    def send_media_to(self, target: str) -> None:
        """Start audio toward `model` or `caller`."""
        self._set_media(target, True)

    def stop_media_to(self, target: str) -> None:
        """Stop audio toward `model` or `caller` (audio queued for the caller is dropped)."""
        self._set_media(target, False)

    def _set_media(self, target: str, on: bool) -> None:
        if target == "model":
            self._to_model = on
            if not on:
                self._in_buf.clear()
        elif target == "caller":
            self._to_caller = on
            if not on:
                self.playout.clear()
        else:
            raise ValueError(f"media target must be 'model' or 'caller', not {target!r}")

    def clear_media_buffer(self, *, ignore_rest_of_response: bool = True) -> PlayoutCleared:
        """Drop bot audio queued for the caller at once (barge-in); by default also ignore the
        rest of the response that was playing. Returns what was playing and how much of it
        the caller actually heard."""
        now = asyncio.get_running_loop().time()
        cleared = self.playout.clear()
        if not self._to_caller_conv.identity:  # no tail of the dropped audio in the next frame
            self._to_caller_conv = AudioConverter(self._link.output_format, self.leg.native)
        if cleared.response_id and ignore_rest_of_response:
            self._ignored_responses.add(cleared.response_id)
        if self._active_response and ignore_rest_of_response:
            self._ignored_responses.add(self._active_response)
        if self._speech_started_at is not None and cleared.item_id is not None:
            last = self._last_audio_pull or self._speech_started_at
            reaction = max(0.0, last - self._speech_started_at)
            metrics.BARGE_IN.inc()
            metrics.BARGE_IN_REACTION.observe(reaction)
            self.stats["barge_ins"] += 1
            self.log.info(
                "barge_in",
                item_id=cleared.item_id,
                played_ms=cleared.played_ms,
                dropped_ms=cleared.dropped_ms,
                reaction_ms=round(reaction * 1000, 1),
                at=round(now - self.created_at, 3),
            )
        return cleared

    async def play(self, audio: str | Path | np.ndarray[Any, Any], rate: int = 8000) -> None:
        """Queue a WAV file or int16 PCM at `rate` for the caller (not sent to the model)."""
        if isinstance(audio, str | Path):
            pcm, rate = read_wav(audio)
        else:
            pcm = np.asarray(audio)
            if pcm.dtype != np.int16:
                raise ValueError("play() needs int16 PCM")
        native = self.leg.native
        if rate not in telcodecs.SUPPORTED_RATES:
            pcm, rate = telcodecs.resample_any(pcm, rate, native.rate), native.rate
        conv = AudioConverter(AudioFormat("pcm16", rate), native)
        # the queue holds audio in the leg's format
        self.playout.push(f"play-{id(pcm)}", "play", conv.convert_pcm(pcm) + conv.flush())

    async def wait_playout_idle(self, timeout: float, *, wait_response: bool = True) -> bool:
        """Wait until the audio queued for the caller has been played (and, with
        `wait_response`, the response in progress has ended); False on timeout or hang-up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.playout.queued_ms > 0 or (wait_response and self._active_response is not None):
            if loop.time() > deadline or self._ended.is_set():
                return False
            await asyncio.sleep(self.leg.frame_ms / 1000)
        return True

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF toward the caller (RFC 4733 on SIP)."""
        self.leg.send_dtmf(digits)

    async def transfer(self, target: str) -> bool:
        """Blind transfer to a target *name* from the config table; True when it succeeded."""
        uri = self.options.transfer_targets.get(target)
        if uri is None:
            raise ValueError(f"unknown transfer target {target!r}")
        if self._transfer_fn is None:
            raise ValueError(f"{self.info.leg} calls cannot be transferred")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_progress(ev: TransferProgress) -> None:
            if ev.final and not waiter.done():
                waiter.set_result(ev.status)

        self._bus.on(TransferProgress, on_progress)
        try:
            await self._transfer_fn(uri)
            status = await asyncio.wait_for(waiter, 32.0)
        except (TimeoutError, OSError):
            return False
        finally:
            self._bus.off(TransferProgress, on_progress)
        return 200 <= status < 300

    def start_recording(self) -> None:
        """Record a stereo WAV and a JSONL transcript into the record directory."""
        if self.recorder is None:
            if not self.options.record_dir:
                raise ValueError("no record_dir configured")
            now = asyncio.get_running_loop().time()
            try:
                self.recorder = CallRecorder(
                    self.options.record_dir, self.id, self.leg.native.rate, now
                )
            except OSError as exc:  # an unwritable record directory never stops the call
                self.log.error("recording_failed", error=exc.strerror or str(exc))
                return
            self.recorder.event(
                "call_started",
                now,
                leg=self.info.leg,
                direction=self.info.direction,
                caller=self.info.caller,
                called=self.info.called,
                codec=str(self.leg.native),
            )
        self.recorder.recording = True

    def stop_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.recording = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, setup: Callable[[Call], Awaitable[None] | None]) -> None:
        """Run the call until it ends; every task of the call lives in this TaskGroup."""
        loop = asyncio.get_running_loop()
        self.answered_at = loop.time()
        self.state = "connected"
        metrics.CALLS_ACTIVE.labels(leg=self.info.leg).inc()
        if self.options.record_dir:
            self.start_recording()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                result = setup(self)
                if asyncio.iscoroutine(result):
                    await result
                self._tasks.add(tg.create_task(self._bus.dispatch_forever()))
                self._tasks.add(tg.create_task(self._receive_loop()))
                self._bus.emit(CallConnected())
                # after CallConnected: leg events held since the answer (a BYE right after
                # the ACK) reach the handlers in order, then end the call as usual
                self.leg.attach(self)
                await self._ended.wait()
                # Let handlers of the final events (e.g. LegEnded) run before tearing down.
                await asyncio.sleep(0)
                # End every task of the call; cancelled tasks are not errors of the group.
                # (No exception is used to leave the group: its traceback would hold this
                # frame, and with it the whole call, in a reference cycle.)
                for task in list(self._tasks):
                    task.cancel()
                del tg
        except* Exception as group:
            self.outcome = self.outcome or "error"
            for exc in group.exceptions:
                self.log.error("call_failed", error=repr(exc))
            del group
        finally:
            self._tg = None
            self._tasks.clear()
            await self._cleanup(loop.time())

    async def _cleanup(self, now: float) -> None:
        if self._closed:
            return
        self._closed = True
        self.state = "ended"
        self._bus.close()
        outcome = self.outcome or "completed"
        duration = now - (self.answered_at or now)
        try:
            await self._bus.dispatch(CallEnded(outcome, duration))
        finally:
            with contextlib.suppress(Exception):
                await self.leg.aclose()
            with contextlib.suppress(Exception):
                await self._link.close()
            if self.recorder is not None:
                self.recorder.event("call_ended", now, outcome=outcome)
                with contextlib.suppress(OSError):
                    self.recorder.close()
            metrics.CALLS_ACTIVE.labels(leg=self.info.leg).dec()
            metrics.CALLS_TOTAL.labels(
                leg=self.info.leg, direction=self.info.direction, outcome=outcome
            ).inc()
            metrics.CALL_DURATION.observe(duration)
            self.log.info(
                "call_summary",
                outcome=outcome,
                duration_s=round(duration, 3),
                codec=str(self.leg.native),
                session_in=str(self._link.input_format),
                session_out=str(self._link.output_format),
                **self.stats,
                **self.leg_stats(),
            )
            # Drop the scenario's handlers (closures over this call): the call and its leg,
            # client and queues are then freed by reference counting, without a GC pass.
            self._bus.clear()

    def leg_stats(self) -> dict[str, Any]:
        stats = getattr(self.leg, "stats_summary", None)
        return stats() if callable(stats) else {}

    def describe(self) -> dict[str, Any]:
        """The call as `GET /calls` lists it."""
        loop = asyncio.get_running_loop()
        return {
            "id": self.id,
            "leg": self.info.leg,
            "direction": self.info.direction,
            "state": self.state,
            "duration_s": round(loop.time() - (self.answered_at or self.created_at), 3),
            "codec": str(self.leg.native),
            "provider": self.info.provider,
            "caller": self.info.caller,
            "called": self.info.called,
        }
