"""SIP calls: turns the SIP endpoint's events into calls, and calls' actions into SIP.

    INVITE --> policy (endpoint) --> IncomingCallReceived --> admission + Realtime session
           --> RTP port --> 200 OK (SDP answer) --> SipLeg + Call on the media clock
    BYE/CANCEL/timeouts --> the leg ends --> the Call cleans up --> port released

The Realtime session is connected *before* the 200 OK, so the caller never hears dead air while
the model connects, and a provider that cannot be reached is a clean 503 instead of a call that
goes silent. A CANCEL during set-up is honoured at every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.call.call import Call
from gateway.call.service import CallService, PreparedCall
from gateway.errors import (
    AdmissionError,
    NotAcceptable,
    OutboundError,
    PortsExhausted,
    ProviderUnavailable,
    RealtimeError,
    SdpError,
    SipCallStateError,
    SipParseError,
)
from gateway.legs.sip.leg import SipLeg
from gateway.logs import bind_call, get_logger
from gateway.media.clock import MediaClock
from gateway.rtp.ports import PortPool
from gateway.rtp.session import RtpSession
from gateway.rtp.transport import RtpEndpoint
from gateway.sip import sdp as sdpmod
from gateway.sip.auth import Credentials
from gateway.sip.events import (
    CallAcked,
    CallCancelled,
    CallEndedByRemote,
    CallTerminated,
    DtmfInfoReceived,
    IncomingCallReceived,
    MediaUpdated,
    OutboundCallAnswered,
    OutboundCallFailed,
    SipEvent,
    TransferProgressed,
)
from gateway.sip.message import NameAddr, SipUri, parse_uri
from gateway.sip.transaction import Address
from gateway.sip.transport import SipTransport
from gateway.sip.trunk import Trunk
from gateway.sip.ua import SipEndpoint

log = get_logger("sip.calls")


@dataclass
class _Pending:
    """A SIP call between INVITE and its leg starting (or its outbound answer)."""

    handle: int
    cancelled: bool = False
    prepared: PreparedCall | None = None
    rtp: RtpEndpoint | None = None
    answered: asyncio.Future[Any] | None = None
    setup: asyncio.Task[Any] | None = None


class SipCallService:
    """Bridges SipEndpoint events to CallService calls; implements SipControl for the legs."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        calls: CallService,
        ports: PortPool,
        clock_for: Callable[[int], MediaClock],
        *,
        rtp_bind: str,
        public_address: str,
        ringing: bool,
        ptime_ms: int,
        trunks: Mapping[str, Trunk] | None = None,
        rtp_timeout: float = 30.0,
        rtp_strict_source: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.calls = calls
        self.ports = ports
        self.clock_for = clock_for
        self.rtp_bind = rtp_bind
        self.public_address = public_address
        self.ringing = ringing
        self.ptime_ms = ptime_ms
        self.trunks = dict(trunks or {})
        self.media_timeout = rtp_timeout or None  # 0: no RTP inactivity timeout
        self.strict_source = rtp_strict_source
        self.transport: SipTransport | None = None
        self._pending: dict[int, _Pending] = {}
        self._legs: dict[int, SipLeg] = {}
        self._calls: dict[int, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._wall_offset = time.time() - self._loop.time()

    # --- SipControl

    def hangup(self, handle: int) -> None:
        with contextlib.suppress(SipCallStateError):
            self.endpoint.hangup(handle, self._loop.time())
        self._flush()

    def refer(self, handle: int, target_uri: str) -> None:
        self.endpoint.refer(handle, target_uri, self._loop.time())
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.flush()

    # --- events from the endpoint

    def on_event(self, event: SipEvent) -> None:
        """SipTransport's callback: runs inside the transport's flush, never blocks."""
        if isinstance(event, IncomingCallReceived):
            self._spawn(self._incoming(event))
        elif isinstance(event, CallCancelled):
            self._abandon_setup(event.call, "cancelled")
        elif isinstance(event, CallEndedByRemote | CallTerminated):
            # a BYE in the early dialog, no answer in time, no ACK: the dialog is gone, so is
            # the call, whether it is running or still being set up
            reason = "remote_hangup" if isinstance(event, CallEndedByRemote) else event.reason
            leg = self._legs.get(event.call)
            if leg is not None:
                leg.remote_hangup(reason)
            self._abandon_setup(event.call, reason)
        elif isinstance(event, DtmfInfoReceived):
            leg = self._legs.get(event.call)
            if leg is not None:
                leg.dtmf_info(event.digit, event.duration_ms)
        elif isinstance(event, MediaUpdated):
            leg = self._legs.get(event.call)
            if leg is not None:
                n = event.negotiated
                leg.media_updated(
                    on_hold=n.on_hold,
                    remote=n.remote_rtp,
                    rtcp=n.remote_rtcp,
                    codec=n.codec,
                    dtmf_pt=n.dtmf_payload_type,
                    ptime=n.ptime,
                    now=self._loop.time(),
                )
        elif isinstance(event, TransferProgressed):
            call = self._calls.get(event.call)
            if call is not None:
                from gateway.media.port import TransferProgress

                call.leg_event(TransferProgress(event.status, event.final))
        elif isinstance(event, CallAcked):
            leg = self._legs.get(event.call)
            if event.answer is not None and leg is not None:
                self._apply_answer(leg, event.answer)
        elif isinstance(event, OutboundCallAnswered | OutboundCallFailed):
            pending = self._pending.get(event.call)
            if (
                pending is not None
                and pending.answered is not None
                and not (pending.answered.done())
            ):
                pending.answered.set_result(event)

    def _abandon_setup(self, handle: int, reason: str) -> None:
        """The dialog of a call still being set up has ended: stop connecting the model for a
        caller who left (its slot and session are freed by the set-up task)."""
        pending = self._pending.get(handle)
        if pending is None:
            return
        pending.cancelled = True
        if pending.setup is not None and pending.prepared is None:
            pending.setup.cancel()
        if pending.answered is not None and not pending.answered.done():
            pending.answered.set_exception(OutboundError(502, f"call ended: {reason}"))

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- inbound

    async def _incoming(self, ev: IncomingCallReceived) -> None:
        handle = ev.call
        pending = _Pending(handle)
        self._pending[handle] = pending
        try:
            await self._answer_incoming(ev, pending)
        except Exception:
            log.exception("sip_incoming_failed", handle=handle)
            await self._undo(pending, 500, "server_error")
        finally:
            self._pending.pop(handle, None)

    async def _answer_incoming(self, ev: IncomingCallReceived, pending: _Pending) -> None:
        loop = self._loop
        created = loop.time()
        now = created
        if ev.offer is not None:
            try:
                codec, _pt, dtmf_pt, _ptime, _r, _rc, _d = sdpmod.describe(
                    ev.offer, default_ptime=self.ptime_ms
                )
            except SdpError:
                self._reject(ev.call, 488, "no_codec")
                return
        else:
            codec, dtmf_pt = "pcmu", 101
        if self.ringing:
            with contextlib.suppress(SipCallStateError):
                self.endpoint.ring(ev.call, now)
                self._flush()
        caller = _user(ev.from_uri)
        called = _user(ev.request_uri) or _user(ev.to_uri)
        pending.setup = loop.create_task(
            self.calls.open_session(
                leg="sip",
                direction="inbound",
                codec=codec,
                caller=caller,
                called=called,
                headers=ev.headers,
                source=ev.source.host,
                created_at=created,
            )
        )
        try:
            pending.prepared = await pending.setup
        except asyncio.CancelledError:
            if pending.cancelled and not _current_task_cancelling():
                return  # the CANCEL already got its 487; the slot and session are freed
            raise
        except AdmissionError as exc:
            self._reject(ev.call, 503, exc.reason, retry_after=exc.retry_after)
            return
        except RealtimeError as exc:
            if not isinstance(exc, ProviderUnavailable):  # the breaker logged why it opened
                log.warning("provider_unavailable", source=ev.source.host, error=str(exc))
            retry = self.calls.retry_after
            self._reject(ev.call, 503, "provider_unavailable", retry_after=retry)
            return
        if pending.cancelled:
            await self._undo(pending, 0, "cancelled")
            return
        now = loop.time()
        session = RtpSession(
            now=now,  # the no-RTP timeout runs from here: the answer
            codec=codec,
            remote_addr=None,
            dtmf_pt=dtmf_pt,
            ptime_ms=self.ptime_ms,
            media_timeout=self.media_timeout,
            strict_source=self.strict_source,
            signalling_ip=ev.source.host,  # a phone behind NAT sends media from there
            wall_offset=self._wall_offset,
        )
        try:
            pending.rtp = await RtpEndpoint.open(self.ports, self.rtp_bind, session)
        except PortsExhausted:
            await self._undo(pending, 503, "capacity")
            return
        port = pending.rtp.port
        if ev.offer is not None:
            negotiated = sdpmod.negotiate(
                ev.offer,
                self.public_address,
                port,
                default_ptime=self.ptime_ms,
                session_id=int(now * 1000) & 0x7FFFFFFF,
            )
            session.update_remote(
                negotiated.remote_rtp,
                negotiated.codec,
                negotiated.dtmf_payload_type,
                negotiated.ptime,
                rtcp_addr=negotiated.remote_rtcp,
            )
            answer = negotiated.answer
            on_hold = negotiated.on_hold
        else:
            answer = sdpmod.make_offer(
                self.public_address,
                port,
                ptime=self.ptime_ms,
                session_id=int(now * 1000) & 0x7FFFFFFF,
            )
            on_hold = False
        if pending.cancelled:
            await self._undo(pending, 0, "cancelled")
            return
        try:
            self.endpoint.accept(ev.call, answer, loop.time())
        except SipCallStateError:
            await self._undo(pending, 0, "cancelled")
            return
        self._flush()
        prepared = pending.prepared
        with bind_call(prepared.call_id, "sip", prepared.info.provider):
            log.info(
                "sip_answered",
                setup_ms=round((loop.time() - created) * 1000, 1),  # INVITE in to 200 OK out
                session_ms=round((now - created) * 1000, 1),  # of which the provider's
            )
        leg = SipLeg(ev.call, pending.rtp, self, self.clock_for, media_timeout=self.media_timeout)
        self._start(pending, leg)
        if on_hold:
            leg.media_updated(
                on_hold=True,
                remote=session.remote_addr or ("0.0.0.0", 0),
                rtcp=session.remote_rtcp_addr or ("0.0.0.0", 0),
                codec=codec,
                dtmf_pt=dtmf_pt,
                ptime=self.ptime_ms,
                now=loop.time(),
            )

    def _start(self, pending: _Pending, leg: SipLeg) -> None:
        assert pending.prepared is not None
        prepared = pending.prepared
        prepared.inband_dtmf = leg.session.dtmf_pt is None
        handle = pending.handle
        self._legs[handle] = leg

        async def transfer(uri: str) -> None:
            self.refer(handle, uri)

        call = self.calls.start_call(prepared, leg, transfer=transfer)
        self._calls[handle] = call
        pending.prepared = None
        pending.rtp = None
        task = self.calls.manager.task(call.id)
        if task is not None:
            task.add_done_callback(lambda _t: self._forget(handle))

    def _forget(self, handle: int) -> None:
        self._legs.pop(handle, None)
        self._calls.pop(handle, None)

    def _apply_answer(self, leg: SipLeg, answer: sdpmod.SessionDescription) -> None:
        """Late offer: the ACK carried the answer to the offer in our 200. An answer we cannot
        use (e.g. SRTP, which we did not offer) ends the call with BYE."""
        try:
            codec, _pt, dtmf_pt, ptime, remote, rtcp, direction = sdpmod.describe(
                answer, default_ptime=self.ptime_ms
            )
        except SdpError as exc:
            reason = _refusal(exc)
            log.warning("sip_answer_refused", handle=leg.handle, reason=reason, error=str(exc))
            call = self._calls.get(leg.handle)
            if call is not None:  # the call's clean-up sends the BYE and frees the port
                self._spawn(call.hangup(reason))
            return
        leg.media_updated(
            on_hold=direction in ("sendonly", "inactive"),
            remote=remote,
            rtcp=rtcp,
            codec=codec,
            dtmf_pt=dtmf_pt,
            ptime=ptime,
            now=self._loop.time(),
        )

    def _reject(
        self, handle: int, status: int, reason: str, retry_after: int | None = None
    ) -> None:
        headers = [("Retry-After", str(retry_after))] if retry_after else []
        with contextlib.suppress(SipCallStateError):
            self.endpoint.reject(handle, status, self._loop.time(), reason=reason, headers=headers)
        self._flush()

    async def _undo(self, pending: _Pending, status: int, reason: str) -> None:
        """Set-up failed or was cancelled: refuse (if still possible) and free everything."""
        if status:
            self._reject(pending.handle, status, reason, retry_after=5 if status == 503 else None)
        if pending.rtp is not None:
            await pending.rtp.aclose()
            pending.rtp = None
        if pending.prepared is not None:
            await self.calls.abandon(pending.prepared)
            pending.prepared = None

    # --- outbound

    async def dial(self, to: str, trunk: str | None, session: dict[str, Any]) -> str:
        """Place an outbound call through a configured trunk; returns the call id once the
        INVITE is out (the call appears in GET /calls when answered)."""
        # the default is the first trunk calls can go out through (inbound-only ones have no uri)
        name = trunk or next((n for n, t in self.trunks.items() if t.outbound), None)
        if name is None or name not in self.trunks:
            raise OutboundError(400, f"unknown trunk {trunk!r}" if trunk else "no trunk configured")
        cfg = self.trunks[name]
        if not cfg.outbound:
            raise OutboundError(400, f"trunk {name!r} is inbound only (it has no uri)")
        trunk_uri = cfg.parsed_uri()
        target = to if to.startswith(("sip:", "sips:")) else f"sip:{to}@{trunk_uri.host}"
        try:
            SipUri.parse(target)
        except (ValueError, SipParseError):
            raise OutboundError(400, "'to' is not a valid SIP target") from None
        prepared = await self.calls.open_session(
            leg="sip",
            direction="outbound",
            codec="pcmu",
            caller=cfg.from_user,
            called=to,
        )
        loop = self._loop
        rtp_session = RtpSession(
            now=loop.time(),
            codec="pcmu",
            dtmf_pt=101,
            ptime_ms=self.ptime_ms,
            media_timeout=None,  # from the answer on (SipLeg.media_updated), not while ringing
            strict_source=self.strict_source,
            signalling_ip=trunk_uri.host if sdpmod.is_ip(trunk_uri.host) else None,
            wall_offset=self._wall_offset,
        )
        try:
            rtp = await RtpEndpoint.open(self.ports, self.rtp_bind, rtp_session)
        except PortsExhausted:
            await self.calls.abandon(prepared)
            raise OutboundError(503, "no RTP port free") from None
        offer = sdpmod.make_offer(self.public_address, rtp.port, ptime=self.ptime_ms)
        from_user = cfg.from_user
        creds = Credentials(cfg.username, cfg.password) if cfg.username else None
        transport = str(trunk_uri.params.get("transport", "udp")).lower()
        dest = Address(
            transport if transport in ("udp", "tcp") else "udp",
            trunk_uri.host,
            trunk_uri.port or 5060,
        )
        handle = self.endpoint.invite(
            target,
            offer,
            f"sip:{from_user}@{self.public_address}",
            dest,
            loop.time(),
            credentials=creds,
        )
        self._flush()
        pending = _Pending(handle, prepared=prepared, rtp=rtp, answered=loop.create_future())
        self._pending[handle] = pending
        self._spawn(self._await_answer(pending))
        return prepared.call_id

    async def _await_answer(self, pending: _Pending) -> None:
        assert pending.answered is not None
        try:
            result = await asyncio.wait_for(pending.answered, 120)
        except (TimeoutError, OutboundError) as exc:
            log.info("outbound_call_failed", error=str(exc) or "timeout")
            with contextlib.suppress(SipCallStateError):
                self.endpoint.hangup(pending.handle, self._loop.time())
            self._flush()
            await self._undo(pending, 0, "failed")
            self._pending.pop(pending.handle, None)
            return
        self._pending.pop(pending.handle, None)
        if isinstance(result, OutboundCallFailed) or result.answer is None:
            log.info("outbound_call_failed", status=getattr(result, "status", 0))
            await self._undo(pending, 0, "failed")
            return
        assert pending.rtp is not None
        try:
            sdpmod.describe(result.answer, default_ptime=self.ptime_ms)
        except SdpError as exc:  # e.g. RTP/SAVP to our RTP/AVP offer: not a call
            log.warning("outbound_call_failed", reason=_refusal(exc), error=str(exc))
            self.hangup(pending.handle)
            await self._undo(pending, 0, "failed")
            return
        leg = SipLeg(
            pending.handle, pending.rtp, self, self.clock_for, media_timeout=self.media_timeout
        )
        self._apply_answer(leg, result.answer)
        self._start(pending, leg)

    async def aclose(self) -> None:
        """Cancel set-ups in progress (their ports and sessions are freed)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for pending in list(self._pending.values()):
            await self._undo(pending, 503, "draining")
        self._pending.clear()


def _refusal(exc: SdpError) -> str:
    """The bounded reason for an SDP answer we cannot use."""
    return exc.reason if isinstance(exc, NotAcceptable) else "bad_sdp"


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _user(uri: str) -> str:
    """The user part of a SIP URI or name-addr, a tel: URI's number; '' if none."""
    with contextlib.suppress(ValueError, SipParseError):
        parsed = NameAddr.parse_any(uri).uri if "<" in uri else parse_uri(uri)
        return parsed.user or ""
    return ""
