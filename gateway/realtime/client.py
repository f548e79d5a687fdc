"""The asyncio Realtime client: one WebSocket session to a provider, per call.

It moves frames between a `websockets` connection and the sans-I/O `RealtimeProtocol`:

* `connect()` opens the socket (timeout), waits for session.created, sends the configured
  session, waits for session.updated and logs every difference between what was asked for and
  what the provider says it got. `input_format` / `output_format` are the EFFECTIVE formats:
  the bridge follows them (OpenAI has been seen to turn pcmu into pcm).
* One send task drains the protocol's bounded queue; one receive task parses frames into typed
  events, counted in metrics and delivered through `events()` (an async iterator) or the
  `on_event` callback. A full event queue stops reading (TCP backpressure), never grows memory.
* A dropped socket is re-opened under `ReconnectPolicy`; the new session gets the session
  configuration with every mid-call `session.update` merged in, and is re-seeded with the
  conversation (the caller's words, the assistant's cut to what was heard, function calls and
  their outputs: `gateway.realtime.conversation`). Input transcription is turned on for that
  where the profile names a transcription model and the config asks for none. Before
  `max_session_s` (providers cap sessions: OpenAI at 60 min) the session is renewed the same way.
  The consumer sees `SessionReconnected`, or `SessionLost` and the end of the stream. Re-opens
  are budgeted per session (`ReconnectPolicy.max_per_call`, `max_per_minute`): past the budget
  the session is lost.
* Stall watchdog: when a response is awaited (a committed turn, a `response.create`, a response
  under way) and the provider sends nothing for `stall_timeout_s`, the protocol's timer says so;
  the client logs and counts it, emits `SessionStalled` (the scenario plays a holding prompt),
  closes the socket and re-opens it the same way (`SessionReconnected(reason="stalled")`), at
  most `stall_retries` times per session.
* `response.done` that failed or was incomplete is counted by status and reason and logged with
  its `status_details`; what to do about it is the scenario's business.
* A 4xx answer to the upgrade is never retried (`ConnectError.retryable` is False).

Credentials only ever go into the upgrade request headers; nothing here logs headers or the
query string of the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway import metrics
from gateway.errors import (
    ConnectError,
    ProtocolError,
    SessionClosed,
    SessionSetupError,
    UnsupportedEventError,
)
from gateway.logs import get_logger
from gateway.media.format import AudioFormat
from gateway.realtime import events as ev
from gateway.realtime.profiles import ProviderProfile
from gateway.realtime.protocol import RealtimeProtocol, Stall, State

__all__ = ["KNOWN_ERROR_CODES", "RealtimeClient", "ReconnectPolicy"]

#: Error codes counted under their own label; anything else is `other`.
KNOWN_ERROR_CODES = frozenset(
    {
        "input_audio_buffer_commit_empty",
        "unknown_parameter",
        "invalid_value",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "session_expired",
        "beta_api_shape_disabled",
        "item_truncate_invalid",
        "item_not_found",
        "unsupported_content_type",
        "rate_limit_exceeded",
        "server_error",
        "unsupported_event",
        "malformed_event",
        "protocol_error",
        "connect_4xx",
        "connect_5xx",
        "connect_failed",
        "setup_failed",
        "receive_failed",
    }
)
#: `gateway_realtime_sessions_lost{reason}` labels.
LOST_REASONS = frozenset(
    {
        "connect_failed",
        "setup_failed",
        "dropped",
        "receive_failed",
        "no_reconnect",
        "stall_retries",
        "reconnect_limit",
        "reconnect_rate",
    }
)
_AWAITED = frozenset({"response.created", "response.done"})
_FAILURE_REASONS = KNOWN_ERROR_CODES | ev.CUT_REASONS
_KNOWN_TYPES = ev.KNOWN_SERVER_TYPES
_MAX_FRAME = 16 * 1024 * 1024
# labelled children by bounded type (unknown types all count as "other")
_EVENT_COUNTERS: dict[str, Any] = {}


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a dropped socket is re-opened: up to `attempts` tries within `within_s` seconds,
    waiting `backoff_s` doubled after each failure (capped at `backoff_max_s`).

    Per session, at most `max_per_call` losses (drops and stalls; renewals do not count) are
    re-opened in all, and at most `max_per_minute` within any 60 s; the next one loses the
    session (None: no limit)."""

    attempts: int = 2
    within_s: float = 2.0
    backoff_s: float = 0.1
    backoff_max_s: float = 1.0
    max_per_call: int | None = 5
    max_per_minute: int | None = 3


_END = object()


async def _sleep0() -> None:
    await asyncio.sleep(0)


class RealtimeClient:
    """A Realtime session for one call. Use `async with RealtimeClient(...) as rt:` or
    `await connect()` / `await close()`."""

    def __init__(
        self,
        profile: ProviderProfile,
        config: ev.SessionConfig,
        *,
        connect_timeout: float = 10.0,
        setup_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        max_queued_audio: int = 100,
        max_session_s: float | None = 55 * 60,
        stall_timeout_s: float | None = 5.0,
        stall_retries: int = 2,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),
        on_event: Callable[[ev.ServerEvent], None] | None = None,
        yield_hook: Callable[[], Awaitable[None]] | None = None,
        event_queue_size: int = 1000,
        log: Any = None,
    ) -> None:
        self.profile = profile
        if (
            config.transcription is None
            and profile.transcription_model
            and (reconnect is not None or max_session_s is not None)
        ):
            # a re-opened session is re-seeded with the caller's words too: they must be known
            config = config.replace(transcription={"model": profile.transcription_model})
        self.protocol = RealtimeProtocol(
            config,
            session_type=profile.session_type,
            unsupported=profile.unsupported_events,
            max_queued_audio=max_queued_audio,
            max_session_s=max_session_s,
            stall_timeout_s=stall_timeout_s or None,
            stall_retries=stall_retries,
            max_reconnects=reconnect.max_per_call if reconnect else None,
            max_reconnects_per_minute=reconnect.max_per_minute if reconnect else None,
        )
        self.connect_timeout = connect_timeout
        self.setup_timeout = setup_timeout
        self.ping_interval = ping_interval
        self.reconnect_policy = reconnect
        self.differences: list[tuple[str, Any, Any]] = []
        self.reconnects = 0
        self._on_event = on_event
        self._yield = yield_hook or _sleep0
        self._media_first = yield_hook
        self._events: asyncio.Queue[object] = asyncio.Queue(event_queue_size)
        self._log = (log or get_logger("realtime")).bind(provider=profile.name)
        self._ws: ClientConnection | None = None
        self._wakeup = asyncio.Event()
        self._send_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._renewing = False
        self._stalling = False
        self._stall_task: asyncio.Task[None] | None = None
        self._closing = False
        self._counted = False
        self._dropped_reported = 0
        self._ended = False
        self._close_task: asyncio.Task[None] | None = None

    # --- effective session ---------------------------------------------------------------------

    @property
    def input_format(self) -> AudioFormat:
        """The effective input format: `send_audio()` takes raw bytes in this format."""
        return self.protocol.input_format

    @property
    def output_format(self) -> AudioFormat:
        """The effective output format of `AudioDelta.audio`."""
        return self.protocol.output_format

    @property
    def effective(self) -> ev.SessionConfig | None:
        """The session as last reported by session.updated."""
        return self.protocol.effective

    @property
    def active_response_id(self) -> str | None:
        return self.protocol.active_response_id

    def audio_ms(self, item_id: str) -> int:
        """Milliseconds of audio received so far for an assistant item."""
        return self.protocol.audio_ms(item_id)

    @property
    def closed(self) -> bool:
        return self.protocol.state is State.CLOSED

    @property
    def websocket_id(self) -> str | None:
        """The id of the current WebSocket connection (new after a reconnect); None when none
        is open."""
        ws = self._ws
        return str(ws.id) if ws is not None else None

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the session: ConnectError or SessionSetupError if it cannot be set up."""
        try:
            await self._open()
        except BaseException:
            self._closing = True
            if self.protocol.state is not State.CLOSED:
                self.protocol.close()
            raise
        self._send_task = asyncio.create_task(self._send_loop(), name="realtime-send")
        self._run_task = asyncio.create_task(self._run(), name="realtime-recv")

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        url = self.profile.url
        loopback = url.startswith(("ws://127.", "ws://localhost", "ws://[::1]"))
        try:
            ws = await asyncio.wait_for(
                ws_connect(
                    url,
                    additional_headers=self.profile.headers(),
                    open_timeout=None,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_interval,
                    close_timeout=2.0,
                    max_size=_MAX_FRAME,
                    compression=None,
                    proxy=None if loopback else True,
                    user_agent_header="realtime-gateway",
                ),
                self.connect_timeout,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            metrics.REALTIME_ERRORS.labels(
                code="connect_4xx" if 400 <= status < 500 else "connect_5xx"
            ).inc()
            raise ConnectError(self.profile.name, status) from None
        except TimeoutError:
            metrics.REALTIME_ERRORS.labels(code="connect_failed").inc()
            raise ConnectError(self.profile.name, None, "timed out") from None
        except (OSError, InvalidHandshake) as exc:
            metrics.REALTIME_ERRORS.labels(code="connect_failed").inc()
            raise ConnectError(self.profile.name, None, type(exc).__name__) from None
        self.protocol.connection_made(loop.time())
        try:
            await asyncio.wait_for(self._handshake(ws), self.setup_timeout)
        except BaseException as exc:
            await ws.close()
            if self.protocol.state is not State.CLOSED:
                self.protocol.connection_lost(loop.time())
            if isinstance(exc, TimeoutError):
                metrics.REALTIME_ERRORS.labels(code="setup_failed").inc()
                raise SessionSetupError("timed out waiting for the session to be set up") from None
            if isinstance(exc, ConnectionClosed):
                metrics.REALTIME_ERRORS.labels(code="setup_failed").inc()
                raise ConnectError(self.profile.name, None, "closed during setup") from None
            raise
        self._ws = ws
        if not self._counted:
            metrics.REALTIME_SESSIONS.inc()
            self._counted = True
        metrics.REALTIME_CONNECT.observe(loop.time() - started)
        self._arm_timer()
        self._wakeup.set()
        self._log.info(
            "realtime_session_ready",
            url=self.profile.display_url,
            input_format=str(self.input_format),
            output_format=str(self.output_format),
            setup_ms=round((loop.time() - started) * 1000),
        )

    async def _handshake(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        proto = self.protocol
        while proto.state is not State.READY:
            frame = await ws.recv()
            proto.receive_text(frame, loop.time())
            for event in proto.events_received():
                if isinstance(event, ev.ErrorOccurred) and not event.benign:
                    metrics.REALTIME_ERRORS.labels(
                        code=metrics.bounded(event.code or "", KNOWN_ERROR_CODES)
                    ).inc()
                    raise SessionSetupError(
                        f"provider refused the session: {event.code}: {event.message}",
                        event.code,
                    )
                await self._deliver(event)
            while proto.state is State.CONFIGURING and (out := proto.next_handshake_frame()):
                await ws.send(out)
        asked = proto.replayed
        self.differences = ev.diff(asked, proto.effective or asked)
        for name, asked, got in self.differences:
            self._log.warning(
                "realtime_session_differs", field=name, asked=str(asked), got=str(got)
            )

    async def close(self) -> None:
        """Close the session and free the socket and tasks; safe to call twice."""
        if self._closing and self._run_task is None and self._send_task is None:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self.protocol.state is not State.CLOSED:
            self.protocol.close()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._send_task, self._run_task, self._stall_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._send_task = self._run_task = self._stall_task = None
        self._uncount()
        self._end()

    def _uncount(self) -> None:
        if self._counted:
            metrics.REALTIME_SESSIONS.dec()
            self._counted = False

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(_END)
        if self._events.full():
            # make room for the end marker: the consumer must see the stream end
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
            self._events.put_nowait(_END)

    # --- tasks ---------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        proto = self.protocol
        while not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            ws = self._ws
            if ws is None:
                continue
            try:
                while (frame := proto.next_frame()) is not None:
                    await ws.send(frame)
            except ConnectionClosed:
                continue  # the receive side notices and reconnects
            except Exception as exc:  # pragma: no cover - logged, never lost
                self._log.error("realtime_send_failed", error=type(exc).__name__)
            if proto.dropped_audio != self._dropped_reported:
                n = proto.dropped_audio - self._dropped_reported
                self._dropped_reported = proto.dropped_audio
                metrics.REALTIME_SEND_OVERFLOW.inc(n)
                self._log.warning("realtime_send_overflow", dropped=n, total=proto.dropped_audio)

    async def _run(self) -> None:
        try:
            while not self._closing:
                ws = self._ws
                if ws is None:
                    return
                reason = await self._receive(ws)
                if self._stall_task is not None:
                    await self._stall_task  # SessionStalled (or SessionLost) comes first
                    self._stall_task = None
                if self._closing:
                    return
                self._ws = None
                loop = asyncio.get_running_loop()
                # a stall was counted against the budget when it was found, a renewal never is
                self.protocol.connection_lost(loop.time(), counted=reason == "dropped")
                if not await self._reopen(reason):
                    return
        except Exception as exc:  # pragma: no cover - logged, never lost
            self._log.error("realtime_receive_failed", error=type(exc).__name__, exc_info=True)
            metrics.REALTIME_ERRORS.labels(code="receive_failed").inc()
            await self._lose("receive_failed", "receive_failed")

    async def _receive(self, ws: ClientConnection) -> str:
        """Read frames until the socket ends; return why (dropped / renewed / stalled / closed)."""
        loop = asyncio.get_running_loop()
        proto = self.protocol
        try:
            async for frame in ws:
                # Media first, before each message: when a provider bursts (every call's answer
                # at once, faster than real time), buffered frames would otherwise be handled in
                # one go and the media clock's packets would wait behind them.
                await self._yield()
                if self._closing or self._stalling:
                    break  # frames still in flight after our close are not errors
                try:
                    proto.receive_text(frame, loop.time())
                except ProtocolError as exc:
                    metrics.REALTIME_ERRORS.labels(code="protocol_error").inc()
                    self._log.warning("realtime_protocol_error", error=str(exc))
                for event in proto.events_received():
                    await self._deliver(event)
                if proto.queued:
                    self._wakeup.set()
                self._rearm_if_sooner()
        except ConnectionClosed:
            pass
        if self._closing:
            return "closed"
        if self._stalling:
            return "stalled"
        if self._renewing:
            return "renewed"
        code = ws.close_code
        reason = (ws.close_reason or "")[:80]
        self._log.warning("realtime_socket_closed", code=code, reason=reason)
        await self._deliver(ev.WebSocketError(code, reason))
        return "dropped"

    async def _reopen(self, reason: str) -> bool:
        """Re-open after a drop, a stall or for renewal; False (and SessionLost) if that is
        refused (no policy, reconnect budget spent) or fails."""
        loop = asyncio.get_running_loop()
        policy = self.reconnect_policy
        self._renewing = self._stalling = False
        if policy is None and reason == "dropped":
            await self._lose(reason, "dropped")
            return False
        refusal = self.protocol.reconnect_refusal(loop.time()) if reason == "dropped" else None
        if refusal is not None:
            await self._lose(f"{reason}; {refusal}", refusal)
            return False
        attempts = policy.attempts if policy else 1
        within = policy.within_s if policy else self.connect_timeout + self.setup_timeout
        delay = policy.backoff_s if policy else 0.0
        deadline = loop.time() + max(within, 0.001)
        last, label = reason, "dropped"
        for attempt in range(attempts):
            if self._closing:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._open(), remaining)
            except ConnectError as exc:
                last, label = f"connect: {exc}", "connect_failed"
                if exc.status is not None:
                    await self._deliver(ev.HttpResponse(exc.status))
                if not exc.retryable:
                    break
            except (SessionSetupError, TimeoutError) as exc:
                last, label = f"setup: {type(exc).__name__}", "setup_failed"
            else:
                self.reconnects += 1
                metrics.REALTIME_RECONNECTS.inc()
                self._log.info(
                    "realtime_session_reopened",
                    reason=reason,
                    attempt=attempt + 1,
                    reseeded=self.protocol.reseeded_items,
                    reconnects=self.reconnects,
                )
                await self._deliver(ev.SessionReconnected(reason, self.protocol.reseeded_items))
                return True
            if policy is not None:
                await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
                delay = min(delay * 2, policy.backoff_max_s)
        await self._lose(last, label)
        return False

    async def _lose(self, reason: str, label: str) -> None:
        """Give the session up: SessionLost(reason), then the end of the stream. `label` is
        the bounded reason counted in `gateway_realtime_sessions_lost`."""
        self._log.warning(
            "realtime_session_lost",
            reason=reason,
            reconnects=self.reconnects,
            stalls=self.protocol.stalls,
        )
        metrics.REALTIME_SESSIONS_LOST.labels(reason=metrics.bounded(label, LOST_REASONS)).inc()
        if self.protocol.state is not State.CLOSED:
            self.protocol.close()
        self._closing = True
        self._uncount()
        await self._deliver(ev.SessionLost(reason))
        self._end()
        self._wakeup.set()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        when = self.protocol.get_timer()
        if when is not None and not self._closing:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)
            self._timer_at = when

    def _rearm_if_sooner(self) -> None:
        """Arm the timer if the protocol's deadline moved earlier (a wait began). Deadlines that
        move later (every event received) are not re-armed: the timer fires early, finds
        nothing due and is armed again then (one wake-up per timeout, not per event)."""
        when = self.protocol.get_timer()
        if when is not None and (self._timer_at is None or when < self._timer_at):
            self._arm_timer()

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        proto = self.protocol
        proto.handle_timer(loop.time())
        stall = proto.stall
        if stall is not None:
            self._stalling = True
            self._stall_task = loop.create_task(self._stalled(stall), name="realtime-stall")
            return
        if proto.renewal_due:
            ws = self._ws
            if ws is not None:
                self._renewing = True
                self._log.info("realtime_session_renewing")
                self._close_task = loop.create_task(ws.close(1000, "session renewal"))
            return
        self._arm_timer()

    async def _stalled(self, stall: Stall) -> None:
        """The provider stalled: log, count, tell the consumer (holding prompt), close the
        socket; `_run` then re-opens it. When no re-open is allowed, lose the session."""
        refusal = stall.refusal
        if refusal is None and self.reconnect_policy is None:
            refusal = "no_reconnect"
        metrics.REALTIME_STALLS.labels(awaited=metrics.bounded(stall.awaited, _AWAITED)).inc()
        self._log.warning(
            "realtime_provider_stalled",
            awaited=stall.awaited,
            after=stall.after,
            silent_s=round(stall.silent_s, 2),
            stalls=stall.count,
            reconnect=refusal is None,
        )
        ws = self._ws
        if refusal is None:
            await self._deliver(ev.SessionStalled(stall.awaited, stall.silent_s, stall.count))
        else:
            await self._lose(f"stalled; {refusal}", refusal)
        if ws is not None:
            await ws.close(1000, "provider stalled")

    async def _deliver(self, event: ev.ServerEvent) -> None:
        self._count(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # pragma: no cover - a consumer bug must not kill the session
                self._log.error("realtime_event_callback_failed", exc_info=True)
            return
        await self._events.put(event)

    def _count(self, event: ev.ServerEvent) -> None:
        raw_type = event.raw.get("type") if event.raw else None
        if isinstance(raw_type, str):
            label = raw_type if raw_type in _KNOWN_TYPES else "other"
            counter = _EVENT_COUNTERS.get(label)
            if counter is None:
                counter = _EVENT_COUNTERS[label] = metrics.REALTIME_EVENTS.labels(type=label)
            counter.inc()
        if isinstance(event, ev.ErrorOccurred):
            code = event.code or ""
            metrics.REALTIME_ERRORS.labels(code=metrics.bounded(code, KNOWN_ERROR_CODES)).inc()
            log = self._log.debug if event.benign else self._log.warning
            log(
                "realtime_error_event",
                code=code,
                error_type=event.error_type,
                message=event.message[:200],
                cause=event.cause,
                benign=event.benign,
            )
        elif isinstance(event, ev.ResponseDone) and event.status != "completed":
            self._count_response(event)
        elif isinstance(event, ev.UnknownEvent):
            self._log.debug("realtime_unknown_event", type=event.type[:64])
        elif isinstance(event, ev.MalformedEvent):
            metrics.REALTIME_ERRORS.labels(code="malformed_event").inc()
            self._log.warning("realtime_malformed_event", type=event.type[:64], reason=event.reason)

    def _count_response(self, event: ev.ResponseDone) -> None:
        """Count and log a response that failed or was cut short (cancels are not failures)."""
        if event.failure is None:
            self._log.debug("realtime_response_cancelled", status=event.status, reason=event.reason)
            return
        details = event.details or {}
        error = details.get("error")
        error = error if isinstance(error, Mapping) else {}
        code = error.get("code") if isinstance(error.get("code"), str) else None
        reason = event.reason or code or ""
        metrics.REALTIME_RESPONSES_FAILED.labels(
            status=metrics.bounded(event.status, {"failed", "incomplete"}),
            reason=metrics.bounded(reason, _FAILURE_REASONS),
        ).inc()
        # status_details only: type, reason and the error's type, code and message (never audio)
        self._log.warning(
            "realtime_response_failed",
            status=event.status,
            reason=event.reason,
            error_type=str(error.get("type") or "")[:64] or None,
            error_code=(code or "")[:64] or None,
            error_message=str(error.get("message") or "")[:200] or None,
            failure=event.failure,
        )

    async def events(self) -> AsyncIterator[ev.ServerEvent]:
        """Typed server events (plus SessionReconnected/SessionLost) until the session ends."""
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # later iterators end too
                return
            assert isinstance(item, ev.ServerEvent)
            if self._media_first is not None:
                await self._media_first()  # the consumer's handling is bulk work too
            yield item

    # --- API for the call bridge ---------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Stream caller audio: raw bytes in `input_format` (base64/JSON is done here)."""
        self.protocol.send_audio(data)
        self._wakeup.set()

    def send_event(self, event: Mapping[str, Any]) -> str:
        """Send any client event (a dict in the GA shape); returns its event_id.

        SessionClosed after close; UnsupportedEventError if the provider does not support it.
        """
        if self._ws is None:  # not open (yet): the timer is armed when it is
            event_id = self.protocol.send_event(event)
        else:
            event_id = self.protocol.send_event(event, asyncio.get_running_loop().time())
            self._rearm_if_sooner()  # a response.create starts the stall watchdog's wait
        self._wakeup.set()
        return event_id

    def _send_if_supported(self, event: Mapping[str, Any]) -> bool:
        try:
            self.send_event(event)
        except UnsupportedEventError:
            self._log.debug("realtime_event_unsupported", type=event.get("type"))
            return False
        return True

    def commit(self) -> None:
        """`input_audio_buffer.commit` (manual turns, turn detection off)."""
        self.send_event(ev.input_audio_buffer_commit())

    def clear_input(self) -> bool:
        """`input_audio_buffer.clear`; False (nothing sent) where the provider lacks it."""
        return self._send_if_supported(ev.input_audio_buffer_clear())

    def clear_output(self) -> bool:
        """`output_audio_buffer.clear` (WebRTC/SIP transports); False where unsupported."""
        return self._send_if_supported(ev.output_audio_buffer_clear())

    def create_response(self, **overrides: Any) -> str:
        """`response.create`, with optional response overrides (instructions, tool_choice...)."""
        return self.send_event(ev.response_create(**overrides))

    def cancel_response(self, response_id: str | None = None) -> str:
        """`response.cancel` (of `response_id`, else of the active response)."""
        return self.send_event(ev.response_cancel(response_id))

    def truncate(self, item_id: str, audio_end_ms: int) -> str:
        """`conversation.item.truncate`: the caller heard `audio_end_ms` of that item. Clamped
        to the audio received; the server's copy can still be shorter (pipecat#2106), and its
        refusal is benign (counted, logged at debug)."""
        received = self.protocol.audio_ms(item_id)
        if received and audio_end_ms > received:
            audio_end_ms = received
        return self.send_event(ev.conversation_item_truncate(item_id, max(0, audio_end_ms)))

    def add_item(self, item: Mapping[str, Any], previous_item_id: str | None = None) -> str:
        """`conversation.item.create` with any item."""
        return self.send_event(ev.conversation_item_create(item, previous_item_id))

    def add_user_text(self, text: str) -> str:
        """A user text message (e.g. `dtmf_text("#")`)."""
        return self.add_item(ev.user_text_item(text))

    def send_function_output(self, call_id: str, output: str) -> str:
        """The result of a function call (a JSON string); follow with `create_response()`."""
        return self.add_item(ev.function_call_output_item(call_id, output))

    def update_session(self, patch: Mapping[str, Any]) -> str:
        """`session.update` with a GA session patch (`type` is filled in where needed)."""
        session = dict(patch)
        if self.profile.session_type:
            session.setdefault("type", "realtime")
        return self.send_event(ev.session_update(session))

    def retrieve_item(self, item_id: str) -> str:
        return self.send_event(ev.conversation_item_retrieve(item_id))

    def delete_item(self, item_id: str) -> str:
        return self.send_event(ev.conversation_item_delete(item_id))

    def reconnect_with(self, profile: ProviderProfile, config: ev.SessionConfig) -> None:
        """Re-open the session with another `profile` (model, key) and `config`, the way a
        renewal does: the socket is closed, a new one opened and the conversation re-seeded;
        `SessionReconnected(reason="renewed")` follows, or `HttpResponse` and `SessionLost`
        when the provider refuses the new model or key."""
        self.profile = profile
        self.protocol.requested = config
        ws = self._ws
        if ws is not None and not self._closing:
            self._renewing = True
            self._log.info("realtime_session_reconnecting", model=profile.model)
            loop = asyncio.get_running_loop()
            self._close_task = loop.create_task(ws.close(1000, "new session parameters"))

    def ensure_open(self) -> None:
        """SessionClosed if the session is closed."""
        if self.closed:
            raise SessionClosed("session is closed")
