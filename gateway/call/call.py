"""The Call: one object owns everything of one call; the asyncio shell around its bridge.

    caller --RTP/WebRTC--> leg --deliver()--> CallBridge --append--> RealtimeClient
    caller <--RTP/WebRTC-- leg <--pull()----- CallBridge <--deltas-- RealtimeClient

The bridge logic (batching and conversion, response bookkeeping, barge-in, played-ms and
truncate accounting, late deltas, hold and format changes) is `gateway.call.bridge.CallBridge`,
sans I/O. The Call moves data between it, the leg, the Realtime client and the scenario's
`EventBus`, and owns the call's lifecycle (`gateway.call.lifecycle`): the leg (a `MediaPort`),
the Realtime client, the recorder and every task of the call live in one `asyncio.TaskGroup`
inside `run()`. Every way out (BYE from either side, CANCEL, a provider failure, a handler
error, a drain) goes through `hangup()`, which is safe to call twice, and `run()`'s cleanup
frees the port, socket and tasks and counts the outcome.

The Call implements `MediaSink` for its leg. `deliver()` and `pull()` run on the media clock's
tick; they never await and never run scenario code. Provider events are applied to the bridge
inline (audio into the playout queue, deltas of an interrupted response dropped), then queued
for the scenario's handlers, which run in order in the call's dispatcher task. The scenario's
actions (`call.play()`, `call.transfer()`, `call.realtime.*`, VoxEngine names) are here too.
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
from gateway.call.bridge import BargedIn, CallBridge, FirstAudioSent, ResponseHeard
from gateway.call.bus import EventBus, Handler
from gateway.call.events import CallConnected, CallEnded, EarlyMedia, call_event_class_named
from gateway.call.history import CallTrace
from gateway.call.lifecycle import CallInput, CallLifecycle, CallState
from gateway.call.recorder import CallRecorder
from gateway.call.tools import Tool, ToolFunction, ToolRegistry
from gateway.errors import CallEndedError, CallStateError, UnknownEventName
from gateway.logs import get_logger
from gateway.media.convert import decode
from gateway.media.format import AudioFormat
from gateway.media.playout import PlayoutCleared, PlayoutQueue
from gateway.media.port import (
    DtmfReceived,
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


@dataclass(frozen=True)
class CallInfo:
    """What is known about a call when it arrives; headers are read-only. `headers` has the
    first value of each header of the INVITE; `header_list` every line in order (repeated
    ones too), without credentials and size-capped."""

    leg: str
    direction: str  # inbound / outbound
    caller: str = ""
    called: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    provider: str = ""
    header_list: tuple[tuple[str, str], ...] = ()

    def header_values(self, name: str) -> tuple[str, ...]:
        """Every value of header `name` (case-insensitive), in the order they came."""
        key = name.lower()
        return tuple(v for n, v in self.header_list if n.lower() == key)

    trunk: str = ""  # the [trunks.NAME] it came or went through; "" for none


@dataclass
class CallOptions:
    """Per-call media settings (from config, routing table and scenario)."""

    append_ms: int = 100
    greeting: bool = True
    record_dir: str = ""
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    goodbye_timeout_s: float = 10.0
    #: tools (issue 17): the names the routing gives this call (None: any registered tool),
    #: the webhook tools of the configuration, and when a long tool gets a holding line
    tool_names: frozenset[str] | None = None
    webhook_tools: tuple[Tool, ...] = ()
    tool_hold_after_s: float = 1.5
    #: issue 18: the function tools an app's `/accept` declared: the app's (answered over its
    #: sideband), declared beside the scenario's own tools
    app_tools: tuple[Mapping[str, Any], ...] = ()


def event_type_of(name: type[E] | str, *, realtime_first: bool) -> type[E]:
    """The event class for a class or a name: a wire type (`response.output_audio.delta`), a
    VoxEngine name (`ResponseAudioDelta`, `ToneReceived`) or a gateway class name. A name that
    names no event raises UnknownEventName at registration, never a handler that never runs."""
    if isinstance(name, type):
        return name
    if not isinstance(name, str):
        raise UnknownEventName(f"not an event class or name: {name!r}")
    lookups = (rt.event_class_named, call_event_class_named)
    for lookup in lookups if realtime_first else lookups[::-1]:
        cls = lookup(name)
        if cls is not None:
            return cls
    raise UnknownEventName(
        f"no event is named {name!r} (a wire type, a VoxEngine name or an event class name)"
    )


class RealtimeActions:
    """`call.realtime`: handlers for Realtime server events, and every client event."""

    def __init__(self, call: Call) -> None:
        # a proxy, not a reference: no call <-> actions cycle (a call is freed by refcount)
        self._call: Call = weakref.proxy(call)
        self._answered_calls: set[str] = set()

    @property
    def link(self) -> RealtimeClient:
        return self._call._link

    def on(self, event_type: type[E] | str, handler: Handler[E]) -> None:
        """Run `handler` for every Realtime server event of `event_type` (a class, or a name:
        `"ResponseOutputAudioDelta"`, `"response.output_audio.delta"`; UnknownEventName for a
        name that names no event)."""
        self._call._bus.on(event_type_of(event_type, realtime_first=True), handler)

    def off(self, event_type: type[E] | str, handler: Handler[E] | None = None) -> None:
        self._call._bus.off(event_type_of(event_type, realtime_first=True), handler)

    @property
    def interrupt_response(self) -> bool:
        """Whether the server cancels a response itself when the caller starts speaking."""
        session = self.link.effective
        td = session.turn_detection if session else None
        return bool(td and td.interrupt_response is not False)

    @property
    def response_active(self) -> bool:
        return self._call.bridge.active_response is not None

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
        self._call.bridge.request_response(response)
        self._call._send_client_events()

    def response_cancel(self, response_id: str | None = None) -> None:
        self.link.cancel_response(response_id)

    def conversation_item_create(self, item: Mapping[str, Any]) -> None:
        self.link.send_event(rt.conversation_item_create(item))

    def conversation_item_truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Truncate an assistant item; `audio_end_ms` is clamped to the audio it holds."""
        self._call.bridge.truncate(item_id, audio_end_ms)
        self._call._send_client_events()

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
        if call_id in self._answered_calls:  # exactly one output per call_id
            self._call.log.warning("tool_output_duplicate_dropped", tool_call_id=call_id)
            return
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
        """Close the Realtime session (VoxEngine `close()`). The call goes on: the scenario
        decides what follows (play, transfer, hang up). From here the caller's audio is
        dropped (not buffered) and the bot audio already queued for the caller plays out."""
        call = self._call
        call._realtime_closed = True
        if call._tg is not None and not self.link.closed:
            call.spawn(self.link.close())


class Call:
    """One call: its leg, its Realtime session, its bridge, recorder and tasks."""

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
        early: int = 0,
    ) -> None:
        self.id = call_id
        self.info = info
        self.leg = leg
        self.options = options
        self.created_at = created_at
        self.answered_at: float | None = None
        self.outcome: str | None = None
        #: where progress events go (`CallManager.start` sets it: `GET /calls/{id}/events`)
        self.progress: Callable[..., None] | None = None
        self.log = get_logger("call", call_id=call_id, leg=info.leg, provider=info.provider)
        self._lifecycle = CallLifecycle()
        #: the 18x status while the far end's early media plays (an outbound call not yet
        #: answered: its audio is recorded, not sent to the model, nothing is sent to it); 0 after
        self.early = early
        self._announced = False  # run() emitted EarlyMedia or CallConnected
        self._link = link
        self._realtime_closed = False  # the scenario closed the Realtime session: not a failure
        self._transfer_fn = transfer
        self._bus = EventBus(call_id)
        self.realtime = RealtimeActions(self)
        #: the scenario's tools and the runner of function calls (`gateway.call.tools`)
        self.tools = ToolRegistry(weakref.proxy(self), hold_after_s=options.tool_hold_after_s)
        self.tools.allowed = options.tool_names
        for webhook in options.webhook_tools:
            self.tools.add(webhook)
        if options.app_tools:
            self.tools.set_external([dict(t) for t in options.app_tools])
        self._ended = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: the sans-I/O bridge core: media, responses, barge-in and truncate accounting
        self.bridge = CallBridge(
            leg.native,
            leg.frame_ms,
            link.input_format,
            link.output_format,
            append_ms=options.append_ms,
            created_at=created_at,
        )
        self._client_events = self.bridge.client_events
        self._call_events = self.bridge.call_events
        # bound once: the media clock calls them 50 times a second
        self._bridge_deliver = self.bridge.deliver
        self._bridge_pull = self.bridge.pull
        self._inband: telcodecs.DtmfDetector | None = None
        self.recorder: CallRecorder | None = None
        # story for the end-of-call log line
        self.stats: dict[str, Any] = {
            "barge_ins": 0,
            "tool_calls": [],
            "response_latency_ms": [],
            "dtmf_digits": 0,
        }
        #: what the call history keeps (gateway.call.history): transcript, tools, latency
        self.trace = CallTrace()
        # the last frame each way and when (levels for the console, computed on request)
        self._last_in: bytes = b""
        self._last_in_at = 0.0
        self._last_out: bytes = b""
        self._last_out_at = 0.0

    @property
    def state(self) -> CallState:
        """connecting, connected, ending or ended (`gateway.call.lifecycle`)."""
        return self._lifecycle.state

    @property
    def playout(self) -> PlayoutQueue:
        """The bot audio queued for the caller, with per-item played-ms accounting."""
        return self.bridge.playout

    # --- moving the bridge's output -----------------------------------------------------------

    def _send_client_events(self) -> None:
        """Send the client events the bridge queued; what an error leaves unsent is dropped
        (the session is closed)."""
        events = self._client_events
        try:
            while events:
                self._link.send_event(events.popleft())
        finally:
            events.clear()

    def _handle_call_events(self) -> None:
        """Count and log the bridge's observations; its events go to the scenario."""
        events = self._call_events
        while events:
            ev = events.popleft()
            if isinstance(ev, BargedIn):
                metrics.BARGE_IN.inc()
                metrics.BARGE_IN_REACTION.observe(ev.reaction_s)
                self.stats["barge_ins"] += 1
                self.trace.add(self.trace.barge_in_ms, round(ev.reaction_s * 1000, 1))
                # debug, not info: a log line costs 40-80 us of loop time, and callers in phase
                # barge in together (300 calls: a 15 ms stall of every media tick, issue 20);
                # the count is in metrics, the call summary and the history
                self.log.debug(
                    "barge_in",
                    item_id=ev.item_id,
                    played_ms=ev.played_ms,
                    dropped_ms=ev.dropped_ms,
                    reaction_ms=round(ev.reaction_s * 1000, 1),
                    at=round(ev.at_s, 3),
                )
            elif isinstance(ev, FirstAudioSent):
                metrics.CALL_SETUP.observe(ev.setup_s)
            elif isinstance(ev, ResponseHeard):
                metrics.RESPONSE_LATENCY.observe(ev.latency_s)
                self.stats["response_latency_ms"].append(round(ev.latency_s * 1000))
                self.trace.add(self.trace.responses, _turn_latency(ev))
            else:
                self._bus.emit(ev)

    def _advance(self, event: CallInput) -> CallState:
        """Feed the lifecycle table; an input it has no entry for is logged, counted and
        raised."""
        try:
            return self._lifecycle.handle(event)
        except CallStateError as exc:
            metrics.STATE_ERRORS.labels(
                machine="call", state=exc.state.value, input=exc.input.value
            ).inc()
            self.log.error("call_state_invalid", state=exc.state.value, input=exc.input.value)
            raise

    # --- MediaSink ----------------------------------------------------------------------------

    def enable_inband_dtmf(self) -> None:
        """Detect DTMF tones in the caller's audio (trunks that negotiated no RFC 4733)."""
        if self.leg.native.rate == 8000:
            self._inband = telcodecs.DtmfDetector(8000)

    def deliver(self, frame: bytes, now: float) -> None:
        """MediaSink: one frame of caller audio (native format) from the leg."""
        t_in = time.perf_counter()
        self._last_in = frame
        self._last_in_at = now
        if self.recorder is not None or self._inband is not None:
            pcm = decode(frame, self.leg.native)
            if self.recorder is not None:
                self.recorder.caller(pcm, now)
            if self._inband is not None:
                for digit in self._inband.process(pcm):
                    self.leg_event(DtmfReceived(digit, "inband"))
        if self._link.closed or self.early:
            return
        data = self._bridge_deliver(frame, now)
        if data is not None:
            self._link.send_audio(data)
            added = time.perf_counter() - t_in
            _ADDED_TO_MODEL.observe(added)
            trace = self.trace
            trace.added_to_model_s += added
            trace.added_to_model_n += 1

    def pull(self, now: float) -> bytes | None:
        """MediaSink: one frame for the caller, or None for silence."""
        if self.early:
            return None
        frame = self._bridge_pull(now)
        if self._call_events:
            self._handle_call_events()
        if frame is not None:
            self._last_out = frame
            self._last_out_at = now
            if self.recorder is not None:
                self.recorder.bot(decode(frame, self.leg.native), now)
        return frame

    def leg_event(self, event: LegEvent) -> None:
        """MediaSink: a leg event; media-relevant state changes at once, handlers later."""
        now = asyncio.get_running_loop().time()
        self.bridge.leg_event(event, now)
        if isinstance(event, DtmfReceived):
            metrics.DTMF_DIGITS.labels(source=event.source).inc()
            self.stats["dtmf_digits"] += 1  # never the digits: they may be PINs
            if self.recorder:
                self.recorder.event("dtmf", now, digit=event.digit, source=event.source)
        elif isinstance(event, LegEnded):
            self._bus.emit(event)
            self._request_end(event.reason)
            return
        self._bus.emit(event)

    # --- Realtime events --------------------------------------------------------------------

    def _on_server_event(self, ev: rt.ServerEvent, now: float) -> None:
        """A server event's effects on the bridge, applied inline (before its handlers run)."""
        t_in = time.perf_counter()
        if self.bridge.server_event(ev, now):
            added = time.perf_counter() - t_in
            _ADDED_TO_CALLER.observe(added)
            trace = self.trace
            trace.added_to_caller_s += added
            trace.added_to_caller_n += 1
            return
        if self._client_events:
            self._send_client_events()
        self.tools.server_event(ev)
        if isinstance(ev, rt.SessionUpdated):
            self.bridge.session_formats(self._link.input_format, self._link.output_format)
        elif isinstance(ev, rt.TranscriptDone | rt.InputTranscriptionCompleted):
            role = "assistant" if isinstance(ev, rt.TranscriptDone) else "user"
            self.trace.add(
                self.trace.transcript,
                {"role": role, "text": ev.transcript, "at_s": round(now - self.created_at, 3)},
            )
            if self.recorder is not None:
                self.recorder.event(
                    "transcript", now, role=role, item_id=ev.item_id, text=ev.transcript
                )
        elif isinstance(ev, rt.ErrorOccurred) and not ev.benign:
            self.trace.add(
                self.trace.errors,
                {
                    "source": "provider",
                    "code": ev.code,
                    "message": ev.message,
                    "at_s": round(now - self.created_at, 3),
                },
            )

    def item_audio_ms(self, item_id: str) -> int:
        """Milliseconds of audio the model has sent for `item_id` (what the item holds)."""
        return self.bridge.item_audio_ms(item_id)

    def item_played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` actually sent to the caller."""
        return self.bridge.item_played_ms(item_id)

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        lost = False
        async for ev in self._link.events():
            self._on_server_event(ev, loop.time())
            self._bus.emit(ev)
            lost = lost or isinstance(ev, rt.SessionLost)
        if self._realtime_closed and not lost:
            return  # the scenario's close(): the call goes on without its Realtime session
        if lost and self._bus.wants(rt.SessionLost):
            # The scenario says goodbye (apology prompt) and hangs up; make sure it does.
            await asyncio.sleep(20.0)
        self._request_end("provider_failed" if lost else "provider_closed")

    # --- scenario API: call actions ---------------------------------------------------------

    def on(self, event_type: type[E] | str, handler: Handler[E]) -> None:
        """Run `handler` for every call event of `event_type` (e.g. DtmfReceived, or a name:
        `"ToneReceived"`, `"DtmfReceived"`; UnknownEventName for a name that names no event)."""
        self._bus.on(event_type_of(event_type, realtime_first=False), handler)

    def off(self, event_type: type[E] | str, handler: Handler[E] | None = None) -> None:
        self._bus.off(event_type_of(event_type, realtime_first=False), handler)

    def tool(
        self,
        name: str,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
        timeout_s: float = 5.0,
        holding: bool = True,
    ) -> Callable[[ToolFunction], ToolFunction]:
        """Decorator: `async def f(args, ctx)` becomes tool `name`, declared to the model and
        run in its own task when the model calls it (`gateway.call.tools`)."""
        return self.tools.tool(
            name,
            description=description,
            parameters=parameters,
            timeout_s=timeout_s,
            holding=holding,
        )

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
        if self.state is CallState.ENDED:
            raise CallEndedError(self.id)

    def connected(self) -> None:
        """The far end answered a call that was in early media: the model hears it from now
        on, and the scenario gets `CallConnected`."""
        if not self.early:
            return
        self.early = 0
        if self._announced:  # else run() has yet to announce the call: CallConnected then
            self.answered_at = asyncio.get_running_loop().time()
            self._bus.emit(CallConnected())

    async def hangup(self, outcome: str = "completed") -> None:
        """End the call (BYE on SIP). Safe to call twice; the first outcome counts."""
        self._request_end(outcome)

    async def hangup_after_playout(
        self, outcome: str, timeout: float, *, wait_response: bool = True
    ) -> None:
        """End the call once the response in progress (with `wait_response`) and the queued
        audio have been played, or after `timeout` seconds."""
        # Give the model a moment to start its goodbye response.
        if wait_response:
            await asyncio.sleep(0.2)
            timeout -= 0.2
        await self.wait_playout_idle(timeout, wait_response=wait_response)
        # The last frame pulled is still on the wire: one more packet time.
        await asyncio.sleep(self.leg.frame_ms / 1000 * 2)
        await self.hangup(outcome)

    def _request_end(self, outcome: str) -> None:
        self._advance(CallInput.END_REQUESTED)
        if self.outcome is None:
            self.outcome = outcome
        self._ended.set()

    def send_media_to(self, target: str) -> None:
        """Start audio toward `model` or `caller`."""
        self.bridge.set_media(target, True)

    def stop_media_to(self, target: str) -> None:
        """Stop audio toward `model` or `caller` (audio queued for the caller is dropped)."""
        self.bridge.set_media(target, False)

    def clear_media_buffer(self, *, ignore_rest_of_response: bool = True) -> PlayoutCleared:
        """Drop bot audio queued for the caller at once; by default also ignore the rest of the
        response that was playing. Returns what was playing and how much of it the caller
        actually heard."""
        now = asyncio.get_running_loop().time()
        cleared = self.bridge.clear(now, ignore_rest_of_response=ignore_rest_of_response)
        self._handle_call_events()
        return cleared

    def barge_in(self) -> PlayoutCleared:
        """The caller spoke over the bot: drop the bot audio queued for the caller (and the rest
        of its response), truncate the playing item at what the caller heard, and cancel the
        response when the server does not (`realtime.interrupt_response` false)."""
        now = asyncio.get_running_loop().time()
        cancel = not self.realtime.interrupt_response
        cleared = self.bridge.barge_in(now, cancel_response=cancel)
        self._handle_call_events()
        self._send_client_events()
        return cleared

    async def play(self, audio: str | Path | np.ndarray[Any, Any], rate: int = 8000) -> None:
        """Queue a WAV file or int16 PCM at `rate` for the caller (not sent to the model)."""
        if isinstance(audio, str | Path):
            pcm, rate = read_wav(audio)
        else:
            pcm = np.asarray(audio)
            if pcm.dtype != np.int16:
                raise ValueError("play() needs int16 PCM")
        self.bridge.play(pcm, rate)

    async def wait_playout_idle(self, timeout: float, *, wait_response: bool = True) -> bool:
        """Wait until the audio queued for the caller has been played (and, with
        `wait_response`, the response in progress has ended); False on timeout or hang-up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        bridge = self.bridge
        while bridge.playout.queued_ms > 0 or (
            wait_response and bridge.active_response is not None
        ):
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

    async def refer(self, uri: str) -> None:
        """Blind transfer to a URI (SIP REFER, RFC 3515), not waiting for its outcome (the
        `/v1/realtime/calls/{id}/refer` route; its progress is the call's TransferProgress)."""
        if self._transfer_fn is None:
            raise ValueError(f"{self.info.leg} calls cannot be transferred")
        await self._transfer_fn(uri)

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
        self._advance(CallInput.RUN)
        self.answered_at = loop.time()
        metrics.CALLS_ACTIVE.labels(leg=self.info.leg).inc()
        if self.options.record_dir:
            self.start_recording()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                result = setup(self)
                if asyncio.iscoroutine(result):
                    await result
                self.tools.flush()  # the tools the scenario registered, declared at once
                self._tasks.add(tg.create_task(self._bus.dispatch_forever()))
                self._tasks.add(tg.create_task(self._receive_loop()))
                self._bus.emit(EarlyMedia(self.early) if self.early else CallConnected())
                self._announced = True
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
            self._advance(CallInput.TASK_FAILED)
            self.outcome = self.outcome or "error"
            for exc in group.exceptions:
                self.log.error("call_failed", error=repr(exc))
                self.trace.add(self.trace.errors, {"source": "gateway", "message": repr(exc)})
            del group
        finally:
            self._tg = None
            self._tasks.clear()
            await self._cleanup(loop.time())

    async def _cleanup(self, now: float) -> None:
        self._advance(CallInput.CLEANUP)
        self.bridge.close()
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
            # Drop the scenario's handlers and tools (closures over this call): the call and its
            # leg, client and queues are then freed by reference counting, without a GC pass.
            self._bus.clear()
            self.tools.clear()

    def report(self, event: str, **fields: Any) -> None:
        """Publish a progress event of this call (a tool call, ...), if anyone listens."""
        if self.progress is not None:
            self.progress(self.id, event, **fields)

    def leg_stats(self) -> dict[str, Any]:
        stats = getattr(self.leg, "stats_summary", None)
        return stats() if callable(stats) else {}

    def history_record(self, now: float) -> dict[str, Any]:
        """The call as the history keeps it (`gateway.call.history`), once it has ended; `now`
        on the loop clock. Times are Unix seconds."""
        wall = time.time() - now  # loop clock → Unix time
        answered = self.answered_at
        return {
            "id": self.id,
            "leg": self.info.leg,
            "direction": self.info.direction,
            "caller": self.info.caller,
            "called": self.info.called,
            "provider": self.info.provider,
            "model": getattr(self._link.profile, "model", "") or "",
            "started_at": round(wall + self.created_at, 3),
            "answered_at": None if answered is None else round(wall + answered, 3),
            "ended_at": round(wall + now, 3),
            "outcome": self.outcome or "completed",
            "duration_s": round(now - (answered or now), 3),
            "recording": str(self.recorder.wav_path) if self.recorder is not None else None,
            "detail": {
                "transcript": self.trace.transcript,
                "tool_calls": self.trace.tool_calls,
                "errors": self.trace.errors,
                "latency": self.trace.latency(),
                "media": self.leg_stats(),
            },
        }

    def live(self) -> dict[str, Any]:
        """`describe()` with the media figures of the console's live view: the level of the
        last frame each way (dBFS; None when nothing flowed in the last 200 ms) and the leg's
        RTP figures (packet loss, jitter) where it has them."""
        now = asyncio.get_running_loop().time()
        native = self.leg.native
        out = self.describe()
        out["level_in_dbfs"] = (
            _level(self._last_in, native) if now - self._last_in_at < 0.2 else None
        )
        out["level_out_dbfs"] = (
            _level(self._last_out, native) if now - self._last_out_at < 0.2 else None
        )
        out["media"] = self.leg_stats()
        return out

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


def _turn_latency(ev: ResponseHeard) -> dict[str, float]:
    """One answered turn's latency breakdown in milliseconds (docs/console.md)."""
    turn = {"total_ms": round(ev.latency_s * 1000, 1)}
    if ev.vad_s is not None:
        turn["vad_ms"] = round(ev.vad_s * 1000, 1)
    if ev.model_s is not None:
        turn["model_ms"] = round(ev.model_s * 1000, 1)
        turn["gateway_ms"] = round((ev.latency_s - ev.model_s) * 1000, 1)
    return turn


def _level(frame: bytes, native: AudioFormat) -> float | None:
    """The RMS level of one frame in dBFS (None for no frame or digital silence)."""
    if not frame:
        return None
    level = telcodecs.rms_dbfs(decode(frame, native))
    return round(level, 1) if level > telcodecs.DBFS_FLOOR else None
