"""The sans-I/O SIP user agent: `SipEndpoint` answers and places calls (RFC 3261 §8, §12-§17).

Theory of operation: the adapter feeds every datagram or framed stream message to
`receive(data, addr, now)`, then sends `messages_to_send()`, drains `next_event()` and re-arms one
timer at `get_timer()` that calls `handle_timer(now)`. The application answers events with
commands (`accept`, `reject`, `ring`, `hangup`, `refer`, `reinvite`, `invite`), each taking `now`;
commands only queue messages, so the adapter flushes after them too.

This module is the facade and the router: it parses, matches transactions, and hands each
message to the role that owns it, split as sipgo splits its user agent:

    admission.py      policy before a call exists (allow-list, budgets, scanners, digest,
                      draining), and the OPTIONS answer
    uas.py            incoming INVITE, its CANCEL and ACK, our answers and 2xx retransmission
    uac.py            our INVITE, its responses, the digest retry, our CANCEL, the ACK of a 2xx
    in_dialog.py      re-INVITE, UPDATE, INFO, NOTIFY, REFER, OPTIONS and BYE, both ways
    session_timer.py  RFC 4028 refresh and expiry
    registration.py   outbound REGISTER (RFC 3261 §10.2), its own table and timers
    call_state.py     the call state table every input of a call goes through
    ua_core.py        what they share: registries, the table dispatcher, message helpers
    routing.py        where messages go (Via, rport, next hop) and how we name ourselves
    events.py         the events

A command not allowed in the call's state raises `SipCallStateError`; any other input the table
has no entry for (and any transaction table gap) is an `UnexpectedInput` event.

A new role (as registration is) is one more module built on the `UaCore` and wired here: its
steps registered, the responses and timeouts of its client transactions routed by purpose
(`_on_response`, `handle_timer`), its deadlines added to `get_timer()`. Where a request goes
is `routing.py`'s; the targets of a name and the fail-over rule (RFC 3263) are `locate.py`'s.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from gateway.errors import SipCallStateError, SipParseError, TransactionStateError
from gateway.sip import routing
from gateway.sip.admission import Admission
from gateway.sip.auth import Credentials, DigestServer
from gateway.sip.call_state import DIALOG_STATES, STEPS, CallInput
from gateway.sip.events import RequestRejected, SipEvent
from gateway.sip.in_dialog import InDialog
from gateway.sip.keepalive import KeepAlives, KeepAliveTarget
from gateway.sip.message import SipRequest, SipResponse, make_response, parse
from gateway.sip.policy import SourcePolicy
from gateway.sip.prack import Prack
from gateway.sip.registration import RegistrationConfig, Registrations
from gateway.sip.sdp import MediaPolicy, SessionDescription
from gateway.sip.session_timer import SessionTimers
from gateway.sip.transaction import Address, State, server_key
from gateway.sip.ua_core import ALLOW, EndpointConfig, SipCall, Trigger, UaCore
from gateway.sip.uac import Uac
from gateway.sip.uas import Uas

_KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER"}
)  # understood but not accepted here: 405
#: our client transaction of this purpose timed out (timer B or F): the call's input
_TIMEOUTS = {
    "invite": CallInput.TIMEOUT_INVITE,
    "reinvite": CallInput.TIMEOUT_REINVITE,
    "refer": CallInput.TIMEOUT_REFER,
    "bye": CallInput.TIMEOUT_BYE,
    "update": CallInput.TIMEOUT_UPDATE,
}


class SipEndpoint:
    """A SIP UA core for many calls: feed bytes and time in, take bytes, events and timers out."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        policy: SourcePolicy | None = None,
        auth: DigestServer | None = None,
        registration_jitter: Callable[[], float] = random.random,
    ) -> None:
        self._core = core = UaCore(config)
        self._registrations = Registrations(core, jitter=registration_jitter)
        self._admission = Admission(core, policy, auth)
        self._timers = SessionTimers(core)
        self._uas = Uas(core, self._admission, self._timers)
        self._uac = Uac(core)
        self._in_dialog = InDialog(core, self._uas, self._timers)
        self._prack = Prack(core, self._uas.answer)
        self._keepalives = KeepAlives(core)
        core.trunk_of = self.trunk_of
        for role in (self._uas, self._uac, self._in_dialog, self._timers, self._prack):
            core.register(role.steps())
        missing = STEPS - core.step_names
        if missing:
            raise RuntimeError(f"call table steps without a role: {sorted(missing)}")

    # --- configuration

    @property
    def config(self) -> EndpointConfig:
        return self._core.config

    @config.setter
    def config(self, config: EndpointConfig) -> None:
        self._core.config = config

    @property
    def policy(self) -> SourcePolicy | None:
        return self._admission.policy

    @property
    def auth(self) -> DigestServer | None:
        return self._admission.auth

    @auth.setter
    def auth(self, auth: DigestServer | None) -> None:
        self._admission.auth = auth

    @property
    def draining(self) -> bool:
        return self._admission.draining

    @property
    def unavailable(self) -> str | None:
        return self._admission.unavailable

    def set_keepalives(self, targets: Sequence[KeepAliveTarget], now: float) -> None:
        """Keep-alives towards trunks (OPTIONS, or CRLF on TCP/TLS): the first now, then each
        at its interval; results come as `KeepAliveResult` events."""
        self._keepalives.configure(targets, now)

    def set_draining(self, draining: bool) -> None:
        """While draining, new INVITEs get 503 and OPTIONS 503 (so balancers move away)."""
        self._admission.draining = draining

    def set_unavailable(self, reason: str | None, retry_after: int = 10) -> None:
        """While `reason` is set (a REJECT_REASONS token), OPTIONS get 503 with Retry-After, so
        a balancer probing with OPTIONS (Kamailio's dispatcher) sends new calls elsewhere.
        INVITEs are still handed to the application, which decides."""
        self._admission.unavailable = reason
        self._admission.unavailable_retry = retry_after

    @property
    def active_calls(self) -> int:
        return len(self._core.calls)

    @property
    def transaction_count(self) -> int:
        return len(self._core.server_tx) + len(self._core.client_tx)

    # --- adapter API

    def receive(self, data: bytes, addr: Address, now: float) -> str | None:
        """One datagram, or one framed message from a stream connection.

        Returns the method of a request that parsed (for the adapter to count), else None:
        a response, a malformed message, or one dropped before parsing."""
        if not self._admission.screen_datagram(data, addr, now):
            return None
        self._core.timer_dirty = True
        try:
            message = parse(data, max_size=self._core.config.max_size, stream=addr.reliable)
        except SipParseError as exc:
            self._malformed(exc, addr)
            return None
        if isinstance(message, SipResponse):
            self._on_response(message, addr, now)
            return None
        self._on_request(message, addr, now)
        return message.method

    def receive_message(self, message: SipRequest | SipResponse, addr: Address, now: float) -> None:
        """A message already framed and parsed by `SipStreamParser` (stream transports)."""
        if not self._admission.screen_message(message, addr, now):
            return
        self._core.timer_dirty = True
        if isinstance(message, SipResponse):
            self._on_response(message, addr, now)
        else:
            self._on_request(message, addr, now)

    def messages_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._core.out[:]
        self._core.out.clear()  # transactions hold this very list
        return out

    def next_event(self) -> SipEvent | None:
        events = self._core.events
        return events.popleft() if events else None

    def get_timer(self) -> float | None:
        core = self._core
        if not core.timer_dirty:
            return core.timer_cache
        times = [t for tx in core.server_tx.values() if (t := tx.get_timer()) is not None]
        times += [t for tx, _, _ in core.client_tx.values() if (t := tx.get_timer()) is not None]
        if (calls := core.calls_timer()) is not None:
            times.append(calls)
        if (keepalive := self._keepalives.timer()) is not None:
            times.append(keepalive)
        if (registrations := self._registrations.timer()) is not None:
            times.append(registrations)
        core.timer_cache = min(times) if times else None
        core.timer_dirty = False
        return core.timer_cache

    def handle_timer(self, now: float) -> None:
        core = self._core
        core.timer_dirty = True
        for key, stx in list(core.server_tx.items()):
            try:
                stx.handle_timer(now)
            except TransactionStateError as exc:
                core.transaction_error(exc)
                stx.state = State.TERMINATED  # reported; a table gap must not spin the timer
            if stx.terminated:
                del core.server_tx[key]
                core.invite_calls.pop(key, None)
        for ckey, (ctx, handle, purpose) in list(core.client_tx.items()):
            try:
                ctx.handle_timer(now)
            except TransactionStateError as exc:
                core.transaction_error(exc)
                ctx.state = State.TERMINATED
            if ctx.terminated:
                del core.client_tx[ckey]
                if purpose == "keepalive" and ctx.timed_out:
                    self._keepalives.on_timeout(ctx.branch)
                if purpose == "register":
                    if ctx.timed_out:
                        self._registrations.on_timeout(handle, ctx.branch, now)
                    continue
                if ctx.timed_out:
                    self._client_failed(handle, purpose, now, transport_error=False)
        for call in list(core.calls.values()):
            core.fire_timers(call, now)
        self._keepalives.handle_timer(now)
        self._registrations.handle_timer(now)

    def transport_error(self, addr: Address, now: float, reason: str = "") -> None:
        """The adapter could not send to `addr` (a refused connection, a TLS handshake or
        certificate check that failed, a name that does not resolve, a send error): §17.1.4,
        every client transaction still sending a request there ends now, as if timed out, and
        an INVITE moves to its next target (RFC 3263 §4.3), or fails as a 503 whose reason
        phrase is `reason` (§8.1.3.1) when none is left."""
        core = self._core
        core.timer_dirty = True
        where = (addr.transport, addr.host, addr.port)
        for ckey, (ctx, handle, purpose) in list(core.client_tx.items()):
            if (ctx.addr.transport, ctx.addr.host, ctx.addr.port) != where:
                continue
            if ctx.transport_error(now):
                del core.client_tx[ckey]
                if purpose == "keepalive":  # a ping that could not be sent is one unanswered
                    self._keepalives.on_timeout(ctx.branch)
                if purpose == "register":  # as unanswered: the registration backs off
                    self._registrations.on_timeout(handle, ctx.branch, now)
                    continue
                self._client_failed(handle, purpose, now, transport_error=True, reason=reason)

    def _client_failed(
        self,
        handle: int | None,
        purpose: str,
        now: float,
        *,
        transport_error: bool,
        reason: str = "",
    ) -> None:
        """A client transaction of a call ended without a final response."""
        core = self._core
        call = core.calls.get(handle) if handle is not None else None
        if call is None:
            return
        if purpose == "invite":
            core.fire(call, self._uac.timeout_trigger(call, now, transport_error, reason))
            return
        timeout = _TIMEOUTS.get(purpose)
        if timeout is not None:
            core.fire(call, Trigger(timeout, now))

    # --- commands

    def ring(self, call: int, now: float) -> None:
        """Send 180 Ringing (reliably when the INVITE required 100rel, RFC 3262)."""
        self._core.command(call, Trigger(Prack.ring_input(self._known(call)), now, status=180))

    def progress(self, call: int, sdp: SessionDescription | bytes, now: float) -> None:
        """Send 183 Session Progress with `sdp` (early media); reliably (RFC 3262) when the
        caller supports 100rel. The 2xx must then carry the same SDP (`accept`)."""
        inp = Prack.progress_input(self._known(call))
        self._core.command(call, Trigger(inp, now, status=183, sdp=sdp))

    def _known(self, call: int) -> SipCall:
        found = self._core.calls.get(call)
        if found is None:
            raise SipCallStateError(f"no call {call}")
        return found

    def use_credentials(self, call: int, credentials: Credentials) -> None:
        """Answer challenges to our in-dialog requests of an incoming call with `credentials`
        (its trunk's: a PBX that challenges our BYE or re-INVITE, §22.2)."""
        self._known(call).credentials = credentials

    def accept(self, call: int, sdp: SessionDescription | bytes, now: float) -> None:
        """Answer with 200 OK carrying `sdp` (the answer, or our offer for a late offer)."""
        self._core.command(call, Trigger(CallInput.ACCEPT, now, sdp=sdp))

    def reject(
        self,
        call: int,
        status: int,
        now: float,
        reason: str = "rejected",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Refuse an incoming call (e.g. 503 + Retry-After for capacity, 486, 488, 603)."""
        trigger = Trigger(CallInput.REJECT, now, status=status, reason=reason, headers=headers)
        self._core.command(call, trigger)

    def hangup(self, call: int, now: float) -> None:
        """End the call whatever its state: BYE, CANCEL, or 480 to an unanswered INVITE."""
        self._core.command(call, Trigger(CallInput.HANGUP, now))

    def dialog_confirmed(self, call: int) -> bool:
        """The call's dialog is confirmed (our 2xx ACKed, or the ACK of theirs sent): requests
        of ours in it, such as REFER, may go."""
        state = self._core.calls.get(call)
        return state is not None and state.state in DIALOG_STATES

    def refer(self, call: int, target_uri: str, now: float) -> None:
        """Blind transfer: REFER the peer to `target_uri` (RFC 3515); NOTIFYs follow."""
        self._core.command(call, Trigger(CallInput.REFER, now, target=target_uri))

    def reinvite(self, call: int, sdp: SessionDescription, now: float) -> None:
        """Send a re-INVITE with a new offer (hold with a=sendonly, resume, codec change)."""
        self._core.command(call, Trigger(CallInput.REINVITE, now, sdp=sdp))

    def invite(
        self,
        target_uri: str,
        offer: SessionDescription | None,
        from_uri: str,
        destination: Address,
        now: float,
        *,
        credentials: Credentials | None = None,
        headers: Sequence[tuple[str, str]] = (),
        alternates: Sequence[Address] = (),
        session_expires: int | None = None,
        min_se: int | None = None,
        from_display: str = "",
        media: MediaPolicy | None = None,
    ) -> int:
        """Place an outbound call to `target_uri` via `destination` (a trunk); returns the call.
        `credentials` answer its challenges (the INVITE's and those of in-dialog requests);
        `alternates` are the trunk's next targets (RFC 3263 §4.3: tried on a 503, a timeout or
        a transport error; `gateway.sip.locate` finds them); `session_expires`/`min_se` ask for
        an RFC 4028 session timer (the trunk's); `from_display` is the From's display name;
        `headers` go on the INVITE as given; `media` is the call's media policy (the trunk's)."""
        self._core.timer_dirty = True  # timers A and B start now
        return self._uac.invite(
            target_uri,
            offer,
            from_uri,
            destination,
            now,
            credentials=credentials,
            headers=headers,
            alternates=alternates,
            session_expires=session_expires,
            min_se=min_se,
            from_display=from_display,
            media=media,
        )

    # --- registrations (RFC 3261 §10.2, registration.py)

    def register(self, config: RegistrationConfig, now: float) -> None:
        """Register `config.trunk` and keep the binding fresh until `unregister`."""
        self._registrations.start(config, now)

    def unregister(self, trunk: str, now: float) -> None:
        """Remove the trunk's binding (REGISTER with Expires: 0) and stop refreshing it."""
        self._registrations.stop(trunk, now)

    @property
    def registrations(self) -> dict[str, str]:
        """Each registering trunk's state (registration.REPORTED_STATES)."""
        return self._registrations.states()

    def registered_trunk(self, request_uri_user: str) -> str | None:
        """The trunk whose registered Contact has this user part, None if none."""
        return self._registrations.trunk_of_contact(request_uri_user)

    def media_for(self, trunk: str) -> MediaPolicy:
        """The media policy of a call through `trunk` ("": none): the trunk's, else ours."""
        return self._core.media_for(trunk)

    def call_media(self, handle: int) -> MediaPolicy:
        """The media policy a call was set up with (ours if the call is gone)."""
        call = self._core.calls.get(handle)
        return call.media if call is not None else self._core.config.media

    def local_sdp(self, handle: int) -> SessionDescription | None:
        """Our last offer or answer in a call (None if the call is gone): an answer to it is
        read against it (its SRTP keys, by tag)."""
        call = self._core.calls.get(handle)
        return call.local_sdp if call is not None else None

    def trunk_of(self, request: SipRequest, addr: Address) -> str:
        """The trunk a request comes through: the one whose registered Contact its
        Request-URI names, else the one whose `inbound_sources` (or registrar) hold its
        source; "" if none."""
        user = _request_user(request.uri)
        registered = self.registered_trunk(user) if user else None
        if registered is not None:
            return registered
        policy = self._admission.policy
        return (policy.trunk_of(addr.host) if policy is not None else None) or ""

    # --- routing

    def _on_request(self, request: SipRequest, addr: Address, now: float) -> None:
        core, method = self._core, request.method
        if self._admission.refuse_scanner(request, addr):
            return
        routing.stamp_via(request, addr)
        if method == "ACK":
            self._uas.on_ack(request, now)
            return
        key = server_key(request)
        existing = core.server_tx.get(key)
        if existing is not None:
            existing.receive_request(request, now)
            return
        # matches no transaction: charged unless it is the CANCEL of a known INVITE or belongs to
        # a known dialog; a new INVITE is charged by admission (its trunk's call budget)
        if method == "CANCEL":
            known = (*key[:-1], "INVITE") in core.invite_calls
        elif request.to.tag:
            known = (request.call_id, request.to.tag, request.from_.tag or "") in core.dialogs
        else:
            known = method == "INVITE"
        if not known and not self._admission.charge_message(request, addr, now):
            return
        mf = request.max_forwards
        if mf is not None and mf == 0 and method != "OPTIONS":
            core.stateless(request, addr, 483, "too_many_hops")
            return
        if request.uri.partition(":")[0].lower() not in ("sip", "sips"):
            # §8.2.2.1: a Request-URI scheme we do not serve (tel:, urn: ...)
            core.stateless(request, addr, 416, "unsupported")
            return
        if method == "CANCEL":
            self._uas.on_cancel(request, addr, key, now)
            return
        to_tag = request.to.tag
        if to_tag:
            handle = core.dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
            if handle is None:
                core.stateless(request, addr, 481, "unknown_dialog")
                return
            self._in_dialog.on_request(core.calls[handle], request, addr, key, now)
            return
        if method == "INVITE":
            self._uas.on_invite(request, addr, key, now)
        elif method == "OPTIONS":
            self._admission.answer_options(request, addr, key, now)
        elif method in ("BYE", "INFO", "UPDATE", "NOTIFY", "PRACK"):
            core.stateless(request, addr, 481, "unknown_dialog")
        elif method in _KNOWN_METHODS:
            core.stateless(request, addr, 405, "unsupported", [("Allow", ALLOW)])
        else:
            core.stateless(request, addr, 501, "not_implemented", [("Allow", ALLOW)])

    def _on_response(self, response: SipResponse, addr: Address, now: float) -> None:
        core = self._core
        try:
            via = response.top_via
        except SipParseError:
            return
        entry = core.client_tx.get((via.branch or "", response.cseq.method))
        if entry is None:
            self._uac.stray_response(response)
            return
        ctx, handle, purpose = entry
        if not ctx.receive_response(response, now):
            return
        if purpose == "keepalive" and response.status >= 200:
            self._keepalives.on_response(ctx.branch, response)
        if purpose == "register":
            self._registrations.on_response(handle, ctx.branch, response, now)
            return
        call = core.calls.get(handle) if handle is not None else None
        if call is None:
            return
        if purpose == "invite":
            inp: CallInput | None = self._uac.response_input(call, response)
        else:
            inp = self._in_dialog.response_input(call, purpose, response, ctx.request)
        if inp is not None:
            core.fire(call, Trigger(inp, now, response=response, sent=ctx.request, source=addr))

    def _malformed(self, exc: SipParseError, addr: Address) -> None:
        """400 (or the parser's status) when the Via can still be read; else dropped."""
        request: SipRequest | None = exc.request
        method = ""
        if request is not None:
            method = request.method
            try:
                routing.stamp_via(request, addr)
                dest = routing.response_addr(request, addr)
            except SipParseError:
                dest = None
            if dest is not None and method != "ACK":
                phrase = re.sub(r"[^\x20-\x7e]", "?", exc.reason)[:80]
                if exc.status_hint == 400:
                    phrase = f"Bad Request ({phrase})"
                response = make_response(request, exc.status_hint, phrase, to_tag=routing.new_tag())
                self._core.out.append((response.serialize(), dest))
                self._core.events.append(
                    RequestRejected("malformed", method, exc.status_hint, addr)
                )
                return
        self._core.events.append(RequestRejected("malformed", method, 0, addr))


def _request_user(uri: str) -> str:
    """The user part of a Request-URI ("" if none)."""
    scheme, _, rest = uri.partition(":")
    user, at, _host = rest.partition("@")
    return user.split(";")[0] if at and scheme.lower() in ("sip", "sips") else ""
