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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.call.call import Call
from gateway.call.progress import failure_outcome
from gateway.call.service import CallService, PreparedCall
from gateway.errors import (
    AdmissionError,
    CallDeclined,
    NotAcceptable,
    OutboundError,
    PortsExhausted,
    ProviderUnavailable,
    RealtimeError,
    SdpError,
    SipCallStateError,
    SipParseError,
)
from gateway.legs.sip.leg import SipLeg, apply_remote
from gateway.legs.sip.registrations import SipRegistrations
from gateway.legs.sip.ringback import Ringback
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
    OutboundCallProgressed,
    RegistrationUpdated,
    SipEvent,
    TransferProgressed,
)
from gateway.sip.keepalive import KeepAliveTarget
from gateway.sip.locate import Target
from gateway.sip.message import NameAddr, SipUri, parse_uri
from gateway.sip.resolver import SipResolver
from gateway.sip.routing import uri_address
from gateway.sip.tls import TlsClient
from gateway.sip.transaction import Address
from gateway.sip.transport import SipTransport
from gateway.sip.trunk import Trunk
from gateway.sip.ua import SipEndpoint

log = get_logger("sip.calls")
#: how long a transfer waits for its call's dialog to be confirmed: Timer H, 64*T1 (RFC 3261
#: §17.2.1), after which a 2xx never ACKed ends the call
ACK_WAIT_S = 32.0


@dataclass
class _Pending:
    """A SIP call between INVITE and its leg starting (or its outbound answer)."""

    handle: int
    cancelled: bool = False
    prepared: PreparedCall | None = None
    rtp: RtpEndpoint | None = None
    answered: asyncio.Future[Any] | None = None
    setup: asyncio.Task[Any] | None = None
    #: outbound: the trunk's targets (RFC 3263), each with the URI's host name (TLS: SNI)
    targets: tuple[Target, ...] = ()
    negotiated: sdpmod.Negotiated | None = None  # our answer, sent early (183) or in the 200
    ringback: Ringback | None = None  # early media while the provider connects


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
        early_media: bool = False,
        trunks: Mapping[str, Trunk] | None = None,
        tls_clients: Mapping[str, TlsClient] | None = None,
        rtp_timeout: float = 30.0,
        rtp_strict_source: bool = True,
        resolver: SipResolver | None = None,
        registrations: SipRegistrations | None = None,
        allow_direct_dial: bool = False,
    ) -> None:
        self.endpoint = endpoint
        #: a sip: URI with no trunk is dialled to its host (the `allow_direct_dial` setting)
        self.allow_direct_dial = allow_direct_dial
        self.calls = calls
        self.ports = ports
        self.clock_for = clock_for
        self.rtp_bind = rtp_bind
        self.public_address = public_address
        self.ringing = ringing
        self.early_media = early_media  # 183 + ringback while the provider connects
        self.trunks = dict(trunks or {})
        #: the TLS client of each trunk whose uri is sips: or ;transport=tls (built at start)
        self.tls_clients = dict(tls_clients or {})
        self.media_timeout = rtp_timeout or None  # 0: no RTP inactivity timeout
        self.strict_source = rtp_strict_source
        #: RFC 3263 for trunk URIs named by host (`sip_dns_servers`, else the system's DNS)
        self.resolver = resolver or SipResolver()
        self.registrations = registrations
        self.transport: SipTransport | None = None
        self._pending: dict[int, _Pending] = {}
        self._legs: dict[int, SipLeg] = {}
        self._calls: dict[int, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: per call whose transfers wait for its dialog to be confirmed (the ACK): True once
        #: it is, False if the call ended first
        self._confirm_waiters: dict[int, asyncio.Future[bool]] = {}
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

    def start_keepalives(self) -> None:
        """Keep-alives towards every outbound trunk that asks for them (`keepalive`)."""
        targets: list[KeepAliveTarget] = []
        for name, trunk in self.trunks.items():
            if trunk.keepalive == "none" or not trunk.outbound:
                continue
            dest = trunk_address(trunk)
            if trunk.keepalive == "crlf" and not dest.reliable:
                log.warning("sip_keepalive_skipped", trunk=name, reason="crlf needs TCP or TLS")
                continue
            targets.append(
                KeepAliveTarget(name, trunk.keepalive, trunk.keepalive_interval, dest, trunk.uri)
            )
        if targets:
            self.endpoint.set_keepalives(targets, self._loop.time())
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
                leg.media_updated(event.negotiated.media, self._loop.time())
        elif isinstance(event, TransferProgressed):
            call = self._calls.get(event.call)
            if call is not None:
                from gateway.media.port import TransferProgress

                call.leg_event(TransferProgress(event.status, event.final))
        elif isinstance(event, CallAcked):
            self._settle_confirm_waiters(event.call, True)
            leg = self._legs.get(event.call)
            if event.answer is not None and leg is not None:
                self._apply_answer(leg, event.answer)
        elif isinstance(event, OutboundCallProgressed):
            self._report(self._pending.get(event.call), "ringing", status=event.status)
            if event.early is not None:
                self._outbound_early_media(event.call, event.status, event.early)
        elif isinstance(event, RegistrationUpdated):
            if self.registrations is not None:
                self.registrations.on_event(event)
        elif isinstance(event, OutboundCallAnswered | OutboundCallFailed):
            if isinstance(event, OutboundCallAnswered):  # our ACK went: the dialog is confirmed
                self._settle_confirm_waiters(event.call, True)
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
            if pending.rtp is not None:  # a set-up that ended during early media: its port
                await self._undo(pending, 0, "ended")

    async def _answer_incoming(self, ev: IncomingCallReceived, pending: _Pending) -> None:
        loop = self._loop
        created = loop.time()
        now = created
        trunk = self._trunk_of(ev)
        media = self.endpoint.media_for(trunk)
        if ev.offer is not None:
            try:
                offered = sdpmod.describe(ev.offer, media)
            except SdpError:
                self._reject(ev.call, 488, "no_codec")
                return
            codec, dtmf_pt = offered.codec, offered.dtmf_payload_type
        else:
            codec, dtmf_pt = media.codecs[0], 101
        if self.early_media and ev.offer is not None:
            # 183 with our answer and ringback while the provider connects (reliably when the
            # caller supports 100rel); the 200 repeats the same answer
            if not await self._open_media(ev, pending, media, codec, dtmf_pt):
                return
            assert pending.rtp is not None and pending.negotiated is not None
            try:
                self.endpoint.progress(ev.call, pending.negotiated.answer, loop.time())
            except SipCallStateError:
                await self._undo(pending, 0, "cancelled")
                return
            self._flush()
            pending.ringback = Ringback(pending.rtp, self.clock_for)
            log.info("sip_early_media", handle=ev.call, direction="inbound", codec=codec)
        elif self.ringing:
            with contextlib.suppress(SipCallStateError):
                self.endpoint.ring(ev.call, now)
                self._flush()
        caller = _user(ev.from_uri)
        called = _user(ev.request_uri) or _user(ev.to_uri)
        trunk_cfg = self.trunks.get(trunk) if trunk else None
        if trunk_cfg is not None and trunk_cfg.username:
            # our BYE, re-INVITE or UPDATE may be challenged by the trunk too (§22.2)
            creds = Credentials(trunk_cfg.username, trunk_cfg.password)
            self.endpoint.use_credentials(ev.call, creds)
        if trunk and self.endpoint.registered_trunk(called) == trunk:
            # an INVITE to our registered Contact: the number dialled is in To (§10.2.4)
            called = _user(ev.to_uri) or called
        pending.setup = loop.create_task(
            self.calls.open_session(
                leg="sip",
                direction="inbound",
                codec=codec,
                caller=caller,
                called=called,
                headers=ev.headers,
                header_list=ev.header_list,
                source=ev.source.host,
                trunk=trunk,
                created_at=created,
                ring=None if self.ringing or pending.ringback else lambda: self._ring(ev.call),
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
        except CallDeclined as exc:  # its app's reject, or the webhook fallback's
            await self._undo(pending, exc.status, exc.reason)
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
        if pending.rtp is None and not await self._open_media(ev, pending, media, codec, dtmf_pt):
            return
        assert pending.rtp is not None
        negotiated = pending.negotiated
        if negotiated is not None:
            answer = negotiated.answer
            on_hold = negotiated.on_hold
        else:
            answer = sdpmod.make_offer(
                self.public_address,
                pending.rtp.port,
                media,
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
        if pending.ringback is not None:
            pending.ringback.stop()
            pending.ringback = None
        leg = SipLeg(
            ev.call,
            pending.rtp,
            self,
            self.clock_for,
            media_timeout=self.media_timeout,
            remote=negotiated.media if negotiated is not None else None,
        )
        self._start(pending, leg)
        if on_hold and negotiated is not None:
            leg.media_updated(negotiated.media, loop.time())

    async def _open_media(
        self,
        ev: IncomingCallReceived,
        pending: _Pending,
        media: sdpmod.MediaPolicy,
        codec: str,
        dtmf_pt: int | None,
    ) -> bool:
        """An RTP port for an incoming call, and our answer to its offer (if any) applied to
        the session; False when no port is free (the call got its 503)."""
        now = self._loop.time()
        session = RtpSession(
            now=now,  # the no-RTP timeout runs from here: the answer (or the 183)
            codec=codec,
            remote_addr=None,
            dtmf_pt=dtmf_pt,
            ptime_ms=media.ptime,
            media_timeout=self.media_timeout,
            strict_source=self.strict_source,
            signalling_ip=ev.source.host,  # a phone behind NAT sends media from there
            wall_offset=self._wall_offset,
            send_cn=media.comfort_noise,
        )
        # an offer with a=rtcp-mux gets it in our answer: no RTCP port (RFC 5761)
        rtcp_mux = ev.offer is not None and sdpmod.offers_rtcp_mux(ev.offer)
        try:
            pending.rtp = await RtpEndpoint.open(
                self.ports, self.rtp_bind, session, rtcp_mux=rtcp_mux
            )
        except PortsExhausted:
            await self._undo(pending, 503, "capacity")
            return False
        if ev.offer is not None:
            negotiated = sdpmod.negotiate(
                ev.offer,
                self.public_address,
                pending.rtp.port,
                media,
                session_id=int(now * 1000) & 0x7FFFFFFF,
            )
            apply_remote(session, negotiated.media)
            pending.negotiated = negotiated
        return True

    def _media_of(self, handle: int) -> sdpmod.MediaPolicy:
        """The media policy of a call (its trunk's or ours)."""
        return self.endpoint.call_media(handle)

    def _describe_answer(
        self, handle: int, answer: sdpmod.SessionDescription
    ) -> sdpmod.RemoteMedia:
        """An answer to our offer, read against that offer (our SRTP key by its tag)."""
        return sdpmod.describe(
            answer, self._media_of(handle), local=self.endpoint.local_sdp(handle)
        )

    def _trunk_of(self, ev: IncomingCallReceived) -> str:
        """The trunk an INVITE came through: the one whose registered Contact its Request-URI
        names, else the one whose `inbound_sources` (or registrar) hold its source; "" if none."""
        registered = self.endpoint.registered_trunk(_user(ev.request_uri))
        if registered is not None:
            return registered
        policy = self.endpoint.policy
        return (policy.trunk_of(ev.source.host) if policy is not None else None) or ""

    def _start(self, pending: _Pending, leg: SipLeg, early: int = 0) -> None:
        assert pending.prepared is not None
        prepared = pending.prepared
        prepared.inband_dtmf = leg.session.dtmf_pt is None
        handle = pending.handle
        self._legs[handle] = leg

        async def transfer(uri: str) -> None:
            await self._until_confirmed(handle)
            try:
                self.refer(handle, uri)
            except SipCallStateError as exc:
                raise ValueError(f"the call cannot be transferred now ({exc})") from None

        call = self.calls.start_call(prepared, leg, transfer=transfer, early=early)
        self._calls[handle] = call
        pending.prepared = None
        pending.rtp = None
        task = self.calls.manager.task(call.id)
        if task is not None:
            task.add_done_callback(lambda _t: self._forget(handle))

    def _forget(self, handle: int) -> None:
        self._legs.pop(handle, None)
        self._calls.pop(handle, None)
        self._settle_confirm_waiters(handle, False)

    async def _until_confirmed(self, handle: int) -> None:
        """Wait until the call's dialog is confirmed: a call runs from our 2xx on, and an app
        or the model may transfer it before the caller's ACK is in (RFC 3261 §13.3.1.4). No ACK
        within Timer H ends the call; ValueError then."""
        if self.endpoint.dialog_confirmed(handle):
            return
        confirmed = self._confirm_waiters.get(handle)
        if confirmed is None:  # one future per call, shared by its waiting transfers
            confirmed = self._confirm_waiters[handle] = self._loop.create_future()
        try:
            async with asyncio.timeout(ACK_WAIT_S):
                acked = await asyncio.shield(confirmed)
        except TimeoutError:
            acked = False
        if not acked:
            raise ValueError("the call's dialog was never confirmed (no ACK)")

    def _settle_confirm_waiters(self, handle: int, acked: bool) -> None:
        confirmed = self._confirm_waiters.pop(handle, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(acked)

    def _apply_answer(self, leg: SipLeg, answer: sdpmod.SessionDescription) -> None:
        """Late offer: the ACK carried the answer to the offer in our 200. An answer we cannot
        use (e.g. SRTP, which we did not offer) ends the call with BYE."""
        try:
            media = self._describe_answer(leg.handle, answer)
        except SdpError as exc:
            reason = _refusal(exc)
            log.warning("sip_answer_refused", handle=leg.handle, reason=reason, error=str(exc))
            call = self._calls.get(leg.handle)
            if call is not None:  # the call's clean-up sends the BYE and frees the port
                self._spawn(call.hangup(reason))
            return
        leg.media_updated(media, self._loop.time())

    def _ring(self, handle: int) -> None:
        """180 Ringing (a call waiting for its app's decision)."""
        with contextlib.suppress(SipCallStateError):
            self.endpoint.ring(handle, self._loop.time())
            self._flush()

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
        if pending.ringback is not None:
            pending.ringback.stop()
            pending.ringback = None
        if pending.rtp is not None:
            await pending.rtp.aclose()
            pending.rtp = None
        if pending.prepared is not None:
            await self.calls.abandon(pending.prepared)
            pending.prepared = None

    # --- outbound

    async def dial(
        self,
        to: str,
        trunk: str | None,
        session: dict[str, Any],
        *,
        from_user: str = "",
        from_display: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Place an outbound call through a configured trunk; returns the call id once the
        INVITE is out (the call appears in GET /calls when answered). `from_user` and
        `from_display` override the trunk's caller identity; `headers` (allow-listed by the
        caller) are added to, or replace, the trunk's identity headers."""
        # the default is the first trunk calls can go out through (inbound-only ones have no uri)
        name = trunk or next((n for n, t in self.trunks.items() if t.outbound), None)
        if name is None and to.startswith("sip:"):
            cfg = self._direct_trunk(to)
            name = cfg.name
        elif name is None or name not in self.trunks:
            raise OutboundError(400, f"unknown trunk {trunk!r}" if trunk else "no trunk configured")
        else:
            cfg = self.trunks[name]
        if not cfg.outbound:
            raise OutboundError(400, f"trunk {name!r} is inbound only (it has no uri)")
        trunk_uri = cfg.parsed_uri()
        phone = ";user=phone" if cfg.user_phone else ""  # RFC 3261 §19.1.1
        # a number through a sips: trunk is a sips: target (§26.2.2: TLS on every hop)
        if to.startswith(("sip:", "sips:")):
            target = to
        else:
            target = f"{trunk_uri.scheme}:{to}@{trunk_uri.host}{phone}"
        try:
            target_uri = SipUri.parse(target)
        except (ValueError, SipParseError):
            raise OutboundError(400, "'to' is not a valid SIP target") from None
        # RFC 3263: NAPTR/SRV/A for a name, before anything is spent on the call; the INVITE
        # goes to the first target and fails over to the others (§4.3, in the UAC)
        targets = await self.resolver.locate(trunk_uri)
        if not targets:
            log.warning("outbound_trunk_unresolved", trunk=name, host=trunk_uri.host)
            raise OutboundError(502, f"trunk {name!r}: {trunk_uri.host} does not resolve")
        caller = from_user or cfg.from_user
        from_uri = f"sip:{caller}@{cfg.from_host or self.public_address}{phone}"
        try:
            SipUri.parse(from_uri)
        except (ValueError, SipParseError):
            raise OutboundError(400, "'from' makes no valid SIP From") from None
        tls_targets = [t.address for t in targets if t.address.transport == "tls"]
        if target_uri.scheme == "sips" and len(tls_targets) != len(targets):
            raise OutboundError(400, f"a sips: target needs a TLS trunk; {name!r} is not")
        tls_client = self.tls_clients.get(name)
        if tls_targets and (tls_client is None or self.transport is None):
            raise OutboundError(503, f"trunk {name!r}: TLS is not set up")
        # the answer's codec is not known yet: the session is set up for our first choice (a
        # wideband one gets PCM16 24 kHz, which any answer's codec converts to without loss)
        media = self.endpoint.media_for(name)
        prepared = await self.calls.open_session(
            leg="sip",
            direction="outbound",
            codec=media.codecs[0],
            caller=caller,
            called=to,
            trunk=name,
            session=session,
        )
        loop = self._loop
        rtp_session = RtpSession(
            now=loop.time(),
            codec=media.codecs[0],
            dtmf_pt=101,
            ptime_ms=media.ptime,
            media_timeout=None,  # from the answer on (SipLeg.media_updated), not while ringing
            strict_source=self.strict_source,
            signalling_ip=targets[0].host if len(targets) == 1 else None,
            wall_offset=self._wall_offset,
            send_cn=media.comfort_noise,
        )
        try:
            rtp = await RtpEndpoint.open(self.ports, self.rtp_bind, rtp_session)
        except PortsExhausted:
            await self.calls.abandon(prepared)
            raise OutboundError(503, "no RTP port free") from None
        offer = sdpmod.make_offer(self.public_address, rtp.port, media)
        creds = Credentials(cfg.username, cfg.password) if cfg.username else None
        if tls_client is not None and self.transport is not None:
            # every target of the trunk's name: one context, the trunk's name verified (RFC 5922)
            for addr in tls_targets:
                self.transport.use_tls_client(addr.host, addr.port, tls_client)
        handle = self.endpoint.invite(
            target,
            offer,
            from_uri,
            targets[0].address,
            loop.time(),
            credentials=creds,
            headers=cfg.identity_headers(headers),
            from_display=from_display or cfg.from_display,
            alternates=[t.address for t in targets[1:]],
            session_expires=cfg.session_expires,
            min_se=cfg.min_se,
            media=media,
        )
        self._flush()
        pending = _Pending(
            handle,
            prepared=prepared,
            rtp=rtp,
            answered=loop.create_future(),
            targets=tuple(targets),
        )
        self._pending[handle] = pending
        self._report(pending, "dialing", to=to, trunk=name)
        self._spawn(self._await_answer(pending))
        return prepared.call_id

    def _direct_trunk(self, to: str) -> Trunk:
        """A sip: URI dialled with no trunk: straight to its host, when `allow_direct_dial`."""
        if not self.allow_direct_dial:
            raise OutboundError(
                403,
                "direct dialling is off: no outbound trunk is configured; set "
                "allow_direct_dial = true (--allow-direct-dial) to call a sip: URI directly",
            )
        try:
            uri = SipUri.parse(to)
        except (ValueError, SipParseError):
            raise OutboundError(400, "'to' is not a valid SIP target") from None
        port = f":{uri.port}" if uri.port else ""
        host = f"[{uri.host}]" if ":" in uri.host else uri.host
        return Trunk(name="", uri=f"sip:{host}{port}")

    def _report(self, pending: _Pending | None, event: str, **fields: Any) -> None:
        """A progress event of an outbound call being set up (`GET /calls/{id}/events`)."""
        if pending is not None and pending.prepared is not None:
            self.calls.manager.progress.publish(pending.prepared.call_id, event, **fields)

    def _outbound_early_media(
        self, handle: int, status: int, early: sdpmod.SessionDescription
    ) -> None:
        """A 18x with SDP to our INVITE (RFC 3960): RTP goes to it and the call starts in early
        media, so a carrier's ringback or announcement is recorded and seen by the scenario
        (`EarlyMedia`); the 2xx connects it (`_await_answer`)."""
        pending = self._pending.get(handle)
        leg = self._legs.get(handle)
        try:
            media = self._describe_answer(handle, early)
        except SdpError as exc:  # not media we can play: wait for the answer
            log.warning("sip_early_media_refused", reason=_refusal(exc), error=str(exc))
            return
        codec = media.codec
        if leg is not None:  # a later 18x moved the early media
            if media.codec != leg.session.codec:  # the leg's coder and format follow
                leg.media_updated(media, self._loop.time())
            else:
                apply_remote(leg.session, media)
            if media.rtcp_mux:
                leg.rtp.release_rtcp()
            return
        if pending is None or pending.rtp is None or pending.prepared is None:
            return
        apply_remote(pending.rtp.session, media)
        if media.rtcp_mux:  # RFC 5761: the answer (here early) agreed to our a=rtcp-mux
            pending.rtp.release_rtcp()
        leg = SipLeg(
            handle,
            pending.rtp,
            self,
            self.clock_for,
            media_timeout=self.media_timeout,
            remote=media,
        )
        log.info("sip_early_media", handle=handle, direction="outbound", status=status, codec=codec)
        self._start(pending, leg, early=status)

    async def _await_answer(self, pending: _Pending) -> None:
        assert pending.answered is not None
        try:
            result = await asyncio.wait_for(pending.answered, 120)
        except (TimeoutError, OutboundError) as exc:
            log.info("outbound_call_failed", error=str(exc) or "timeout")
            self._report(
                pending,
                "failed",
                outcome=failure_outcome(0),
                status=0,
                reason=str(exc) or "timeout",
            )
            with contextlib.suppress(SipCallStateError):
                self.endpoint.hangup(pending.handle, self._loop.time())
            self._flush()
            self._end_early(pending.handle, "no_answer")
            await self._undo(pending, 0, "failed")
            self._pending.pop(pending.handle, None)
            return
        self._pending.pop(pending.handle, None)
        if isinstance(result, OutboundCallFailed) or result.answer is None:
            status, why = getattr(result, "status", 0), getattr(result, "reason", "")
            log.info("outbound_call_failed", status=status, reason=why)
            self._report(
                pending, "failed", outcome=failure_outcome(status), status=status, reason=why
            )
            self._end_early(pending.handle, "rejected")
            await self._undo(pending, 0, "failed")
            return
        early = self._legs.get(pending.handle)
        try:
            self._describe_answer(pending.handle, result.answer)
        except SdpError as exc:  # e.g. RTP/SAVP to our RTP/AVP offer: not a call
            log.warning("outbound_call_failed", reason=_refusal(exc), error=str(exc))
            self._report(pending, "failed", outcome="failed", status=0, reason=str(exc))
            self.hangup(pending.handle)
            self._end_early(pending.handle, "failed")
            await self._undo(pending, 0, "failed")
            return
        self._report(pending, "answered")
        if early is not None:  # in early media: the answer's SDP (the same, or new) connects it
            self._apply_answer(early, result.answer)
            call = self._calls.get(pending.handle)
            if call is not None:
                call.connected()
            return
        assert pending.rtp is not None
        leg = SipLeg(
            pending.handle, pending.rtp, self, self.clock_for, media_timeout=self.media_timeout
        )
        self._apply_answer(leg, result.answer)
        self._start(pending, leg)

    def _end_early(self, handle: int, reason: str) -> None:
        """An outbound call in early media was not answered: it ends (its port is freed)."""
        leg = self._legs.get(handle)
        if leg is not None:
            leg.remote_hangup(reason)

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


def trunk_address(trunk: Trunk) -> Address:
    """Where a trunk's keep-alives go: the uri's transport (`sips:` is TLS), host and port
    (5061 over TLS). A host name is left to the transport to resolve (its first address:
    keep-alives hold a NAT binding, they do not fail over)."""
    return uri_address(trunk.parsed_uri())


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
