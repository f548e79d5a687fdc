"""The sans-I/O SIP user agent: `SipEndpoint` answers and places calls (RFC 3261 §8, §12-§17).

Theory of operation: the adapter feeds every datagram or framed stream message to
`receive(data, addr, now)`, then sends `messages_to_send()`, drains `next_event()` and re-arms one
timer at `get_timer()` that calls `handle_timer(now)`. The application answers events with
commands (`accept`, `reject`, `ring`, `hangup`, `refer`, `reinvite`, `invite`), each taking `now`;
commands only queue messages, so the adapter flushes after them too.

Policy (allow-list, rate limit, scanner, digest auth, draining, SDP) is applied *before*
`IncomingCallReceived`, so a refused INVITE costs no media port. Every refusal is reported as a
`RequestRejected` event carrying a bounded `reason` token the adapter counts and logs.

Rate limits (`SourcePolicy`) never touch a message that belongs to a transaction or dialog in
progress (a retransmission, ACK, CANCEL of a known INVITE, an in-dialog request, a response to
our request). Everything else is charged once. Before parsing, a datagram whose Call-ID (read
from the raw bytes) belongs to no call the endpoint knows is charged to its source's message
budget if the source is outside the allow-list, and dropped silently beyond it: a flood stays
cheap. After parsing, what matches no transaction or dialog is charged if it was not before: a
new INVITE from an allowed source to its trunk's call budget (beyond it `503` with Retry-After,
at a bounded rate), anything else to the message budget.

Calls move through an explicit command table (`_COMMANDS`): a command not allowed in the call's
state raises `CallStateError`. Unknown call handles raise `KeyError`... as `CallStateError` too.

Exceptions::

    CallStateError   a command not allowed in the call's current state (or an unknown call)
"""

from __future__ import annotations

import enum
import os
import re
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.sip import sdp as sdpmod
from gateway.sip.auth import AuthResult, Credentials, DigestServer, authorization, pick_challenge
from gateway.sip.dialog import Dialog
from gateway.sip.message import (
    REASONS,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    make_response,
    parse,
)
from gateway.sip.policy import SourcePolicy, is_scanner
from gateway.sip.sdp import Negotiated, NotAcceptable, SdpError, SessionDescription
from gateway.sip.transaction import (
    T1,
    T2,
    Address,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    TransactionStateError,
    build_cancel,
    server_key,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
SUPPORTED = "timer"
_KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "PRACK", "REFER"}
)  # understood but not accepted here: 405
_DTMF_CHARS = "0123456789*#ABCD"
_DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15
MIN_SE = 90  # RFC 4028 §4
_RECENT_CALL_IDS = 8192  # Call-IDs of ended or challenged calls still recognised (LRU)
# the Call-ID of a datagram, read without parsing it (compact form `i`, §7.3.3)
_RAW_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")


class CallStateError(RuntimeError):
    """A command not allowed in the call's current state, or an unknown call handle."""


# --- events


@dataclass(frozen=True, slots=True)
class SipEvent:
    """Base class of every endpoint event."""


@dataclass(frozen=True, slots=True)
class IncomingCallReceived(SipEvent):
    """An INVITE passed policy. Answer with accept/reject/ring. `offer` None: late offer."""

    call: int
    request_uri: str
    from_uri: str
    to_uri: str
    headers: Mapping[str, str]
    offer: SessionDescription | None
    source: Address


@dataclass(frozen=True, slots=True)
class CallAcked(SipEvent):
    """The ACK for our 2xx arrived; `answer` is its SDP for a late-offer call."""

    call: int
    answer: SessionDescription | None


@dataclass(frozen=True, slots=True)
class CallCancelled(SipEvent):
    call: int


@dataclass(frozen=True, slots=True)
class CallEndedByRemote(SipEvent):
    """The peer sent BYE."""

    call: int


@dataclass(frozen=True, slots=True)
class MediaUpdated(SipEvent):
    """A re-INVITE/UPDATE (or our re-INVITE's answer) changed media; already answered."""

    call: int
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class DtmfInfoReceived(SipEvent):
    call: int
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class TransferProgressed(SipEvent):
    """REFER progress: 202 accepted, then NOTIFY sipfrag statuses until `final`."""

    call: int
    status: int
    final: bool


@dataclass(frozen=True, slots=True)
class OutboundCallProgressed(SipEvent):
    call: int
    status: int


@dataclass(frozen=True, slots=True)
class OutboundCallAnswered(SipEvent):
    call: int
    answer: SessionDescription | None


@dataclass(frozen=True, slots=True)
class OutboundCallFailed(SipEvent):
    call: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallTerminated(SipEvent):
    """The endpoint ended the call itself: ack_timeout, session_expired, request_timeout."""

    call: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestRejected(SipEvent):
    """A request refused or dropped (status 0) with a bounded `reason` token."""

    reason: str
    method: str
    status: int
    source: Address


REJECT_REASONS = (
    "not_allowed",
    "provider_unavailable",
    "auth_required",
    "auth_failed",
    "rate_limited",
    "scanner",
    "capacity",
    "draining",
    "malformed",
    "no_codec",
    "srtp_unsupported",
    "unsupported",
    "unknown_dialog",
    "not_implemented",
    "too_many_hops",
    "rejected",
    "server_error",
)


# --- calls


class CallState(enum.Enum):
    INCOMING = "incoming"  # UAS: INVITE received, no final response yet
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for ACK
    OUTGOING = "outgoing"  # UAC: INVITE sent, no final response yet
    CANCELLING = "cancelling"  # UAC: CANCEL sent or due
    CONFIRMED = "confirmed"  # dialog confirmed
    ENDING = "ending"  # BYE sent
    ENDED = "ended"


S = CallState
# command → state → action (h11 style); absent pairs raise CallStateError
_COMMANDS: dict[tuple[str, CallState], str] = {
    ("ring", S.INCOMING): "ring",
    ("accept", S.INCOMING): "accept",
    ("reject", S.INCOMING): "reject",
    ("hangup", S.INCOMING): "reject_480",
    ("hangup", S.ANSWERED): "bye_after_ack",
    ("hangup", S.OUTGOING): "cancel",
    ("hangup", S.CANCELLING): "noop",
    ("hangup", S.CONFIRMED): "bye",
    ("hangup", S.ENDING): "noop",
    ("hangup", S.ENDED): "noop",
    ("refer", S.CONFIRMED): "refer",
    ("reinvite", S.CONFIRMED): "reinvite",
}


@dataclass
class _Retransmit:
    """§13.3.1.4: our 2xx to an INVITE, re-sent until its ACK (or 64*T1)."""

    data: bytes
    addr: Address
    cseq: int
    interval: float
    next_at: float | None
    give_up_at: float


@dataclass
class _Call:
    handle: int
    role: str  # "uas" | "uac"
    state: CallState
    invite: SipRequest
    peer: Address
    local_tag: str
    ist: InviteServerTransaction | None = None
    dialog: Dialog | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    late_offer: bool = False
    retransmit: _Retransmit | None = None
    pending_bye: bool = False
    pending_cancel: bool = False
    got_provisional: bool = False
    incoming_reinvite_offer: bool | None = None  # None: none pending; False: we offered in 2xx
    outgoing_reinvite: bool = False
    ack_bytes: bytes = b""
    ack_addr: Address | None = None
    credentials: Credentials | None = None
    auth_tries: int = 0
    session_expires: float | None = None  # deadline
    refresh_at: float | None = None  # we refresh (refresher=uas)
    session_interval: int = 0
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    invite_key: tuple[str, ...] | None = None
    cancel_deadline: float | None = None
    answer_deadline: float | None = None


@dataclass(frozen=True)
class EndpointConfig:
    """What the endpoint says about itself. `host`/`port` go in Via and Contact (`tls_port`,
    when TLS is served, in those of messages sent over TLS)."""

    host: str
    port: int
    tls_port: int = 0
    transport: str = "udp"
    user: str = "gateway"
    user_agent: str = "realtime-gateway"
    max_size: int = 65536
    min_session_expires: int = MIN_SE
    answer_timeout: float = 180.0  # like timer C: an INVITE left unanswered gets 480


def _token() -> str:
    return os.urandom(6).hex()


def _branch() -> str:
    return "z9hG4bK" + os.urandom(8).hex()


class SipEndpoint:
    """A SIP UA core for many calls: feed bytes and time in, take bytes, events and timers out."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        policy: SourcePolicy | None = None,
        auth: DigestServer | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.auth = auth
        self.draining = False
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[SipEvent] = deque()
        self._server_tx: dict[tuple[str, ...], ServerTransaction] = {}
        self._client_tx: dict[tuple[str, str], tuple[ClientTransaction, int | None, str]] = {}
        self._calls: dict[int, _Call] = {}
        self._dialogs: dict[tuple[str, str, str], int] = {}
        self._invite_calls: dict[tuple[str, ...], int] = {}
        self._next_handle = 1
        self._timer_cache: float | None = None
        self._timer_dirty = True
        self.unavailable: str | None = None
        self._unavailable_retry = 10
        # Call-IDs of live calls (how many), then of ended or digest-challenged ones: a message
        # carrying one belongs to a call and is never rate limited
        self._call_ids: dict[str, int] = {}
        self._recent_call_ids: OrderedDict[str, None] = OrderedDict()
        # Call-IDs we sent a digest challenge for: the authenticated retry costs no new token
        self._challenged: OrderedDict[str, None] = OrderedDict()
        self._paid = False  # the message being handled was charged before parsing

    # --- adapter API

    def receive(self, data: bytes, addr: Address, now: float) -> str | None:
        """One datagram, or one framed message from a stream connection.

        Returns the method of a request that parsed (for the adapter to count), else None:
        a response, a malformed message, or one dropped before parsing."""
        self._paid = False
        if self.policy is not None:
            end = data.find(b"\r\n\r\n")  # the Call-ID is looked for in the headers only
            found = _RAW_CALL_ID.search(data, 0, end if end > 0 else len(data))
            call_id = found.group(1).decode("utf-8", "replace") if found else ""
            if not self._screen(addr, now, call_id, data.startswith(b"INVITE ")):
                return None
        self._timer_dirty = True
        try:
            message = parse(data, max_size=self.config.max_size, stream=addr.reliable)
        except SipParseError as exc:
            self._malformed(exc, addr)
            return None
        if isinstance(message, SipResponse):
            self._on_response(message, now)
            return None
        self._on_request(message, addr, now)
        return message.method

    def receive_message(self, message: SipRequest | SipResponse, addr: Address, now: float) -> None:
        """A message already framed and parsed by `SipStreamParser` (stream transports)."""
        self._paid = False
        if self.policy is not None:
            invite = isinstance(message, SipRequest) and message.method == "INVITE"
            if not self._screen(addr, now, message.call_id, invite):
                return
        self._timer_dirty = True
        if isinstance(message, SipResponse):
            self._on_response(message, now)
        else:
            self._on_request(message, addr, now)

    def messages_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._out[:]
        self._out.clear()  # transactions hold this very list
        return out

    def next_event(self) -> SipEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if not self._timer_dirty:
            return self._timer_cache
        times = [t for tx in self._server_tx.values() if (t := tx.get_timer()) is not None]
        times += [t for tx, _, _ in self._client_tx.values() if (t := tx.get_timer()) is not None]
        for call in self._calls.values():
            if call.retransmit is not None:
                times.append(call.retransmit.give_up_at)
                if call.retransmit.next_at is not None:
                    times.append(call.retransmit.next_at)
            if call.session_expires is not None:
                times.append(call.session_expires)
            if call.refresh_at is not None:
                times.append(call.refresh_at)
            if call.cancel_deadline is not None:
                times.append(call.cancel_deadline)
            if call.answer_deadline is not None and call.state is S.INCOMING:
                times.append(call.answer_deadline)
        self._timer_cache = min(times) if times else None
        self._timer_dirty = False
        return self._timer_cache

    def handle_timer(self, now: float) -> None:
        self._timer_dirty = True
        for key, stx in list(self._server_tx.items()):
            try:
                stx.handle_timer(now)
            except TransactionStateError:
                stx.state = State.TERMINATED  # a table gap must not spin the timer loop
            if stx.terminated:
                del self._server_tx[key]
                self._invite_calls.pop(key, None)
        for ckey, (ctx, handle, purpose) in list(self._client_tx.items()):
            try:
                ctx.handle_timer(now)
            except TransactionStateError:
                ctx.state = State.TERMINATED
            if ctx.terminated:
                del self._client_tx[ckey]
                if ctx.timed_out:
                    self._client_timeout(handle, purpose, now)
        for call in list(self._calls.values()):
            self._call_timers(call, now)

    def set_draining(self, draining: bool) -> None:
        """While draining, new INVITEs get 503 and OPTIONS 503 (so balancers move away)."""
        self.draining = draining

    def set_unavailable(self, reason: str | None, retry_after: int = 10) -> None:
        """While `reason` is set (a REJECT_REASONS token), OPTIONS get 503 with Retry-After, so
        a balancer probing with OPTIONS (Kamailio's dispatcher) sends new calls elsewhere.
        INVITEs are still handed to the application, which decides."""
        self.unavailable = reason
        self._unavailable_retry = retry_after

    # --- rate limits

    def _known_call_id(self, call_id: str) -> bool:
        return (
            call_id in self._call_ids
            or call_id in self._recent_call_ids
            or call_id in self._challenged
        )

    def _screen(self, addr: Address, now: float, call_id: str, invite: bool) -> bool:
        """Before parsing: False drops the message (counted). A message carrying the Call-ID of
        a known call passes (what it is gets checked after parsing); otherwise a source outside
        the allow-list spends its message budget here, and an INVITE from an allowed source is
        dropped only if it would get neither a call nor a 503."""
        assert self.policy is not None
        if call_id and self._known_call_id(call_id):
            return True
        if not self.policy.is_allowed(addr.host):
            if self.policy.admit(addr.host, now):
                self._paid = True
                return True
        elif not (invite and self.policy.calls_exhausted(addr.host, now)):
            return True
        self._events.append(RequestRejected("rate_limited", "INVITE" if invite else "", 0, addr))
        return False

    def _charge_message(self, request: SipRequest, addr: Address, now: float) -> bool:
        """After parsing, a request that matches no transaction or dialog spends its source's
        message budget, unless it paid before parsing. False: dropped, counted."""
        if self.policy is None or self._paid or self.policy.admit(addr.host, now):
            self._paid = True
            return True
        self._events.append(RequestRejected("rate_limited", request.method, 0, addr))
        return False

    def _remember_call_id(self, call_id: str) -> None:
        self._recent_call_ids[call_id] = None
        self._recent_call_ids.move_to_end(call_id)
        if len(self._recent_call_ids) > _RECENT_CALL_IDS:
            self._recent_call_ids.popitem(last=False)

    def _add_call(self, call: _Call) -> None:
        self._calls[call.handle] = call
        call_id = call.invite.call_id
        self._call_ids[call_id] = self._call_ids.get(call_id, 0) + 1

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def transaction_count(self) -> int:
        return len(self._server_tx) + len(self._client_tx)

    # --- commands

    def _command(self, name: str, handle: int) -> tuple[_Call, str]:
        call = self._calls.get(handle)
        if call is None:
            raise CallStateError(f"{name}: no call {handle}")
        action = _COMMANDS.get((name, call.state))
        if action is None:
            raise CallStateError(f"{name} not allowed in state {call.state.value}")
        self._timer_dirty = True
        return call, action

    def ring(self, call: int, now: float) -> None:
        """Send 180 Ringing."""
        c, _ = self._command("ring", call)
        self._respond_call(c, 180, now)

    def accept(self, call: int, sdp: SessionDescription | bytes, now: float) -> None:
        """Answer with 200 OK carrying `sdp` (the answer, or our offer for a late offer)."""
        c, _ = self._command("accept", call)
        body = sdp if isinstance(sdp, bytes) else sdp.serialize()
        c.local_sdp = sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)
        headers = [("Content-Type", "application/sdp"), *self._session_timer_headers(c, now)]
        assert c.ist is not None
        response = self._call_response(c, 200, headers, body)
        c.ist.send_response(response, now)
        c.dialog = Dialog.as_uas(c.invite, c.local_tag)
        c.state = S.ANSWERED
        self._start_retransmit(c, response, c.ist.addr, c.invite.cseq.seq, now)

    def reject(
        self,
        call: int,
        status: int,
        now: float,
        reason: str = "rejected",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Refuse an incoming call (e.g. 503 + Retry-After for capacity, 486, 488, 603)."""
        c, _ = self._command("reject", call)
        self._final_reject(c, status, now, headers)
        self._events.append(RequestRejected(reason, "INVITE", status, c.peer))

    def hangup(self, call: int, now: float) -> None:
        """End the call whatever its state: BYE, CANCEL, or 480 to an unanswered INVITE."""
        c, action = self._command("hangup", call)
        if action == "reject_480":
            self._final_reject(c, 480, now, ())
        elif action == "bye_after_ack":
            c.pending_bye = True
        elif action == "cancel":
            c.state = S.CANCELLING
            if c.got_provisional:
                self._send_cancel(c, now)
            else:
                c.pending_cancel = True  # §9.1: not before a provisional response
        elif action == "bye":
            self._send_bye(c, now)

    def refer(self, call: int, target_uri: str, now: float) -> None:
        """Blind transfer: REFER the peer to `target_uri` (RFC 3515); NOTIFYs follow."""
        c, _ = self._command("refer", call)
        ours = f"<sip:{self.config.user}@{self._hostport()}>"
        self._send_in_dialog(
            c, "REFER", now, [("Refer-To", f"<{target_uri}>"), ("Referred-By", ours)]
        )

    def reinvite(self, call: int, sdp: SessionDescription, now: float) -> None:
        """Send a re-INVITE with a new offer (hold with a=sendonly, resume, codec change)."""
        c, _ = self._command("reinvite", call)
        if c.outgoing_reinvite or c.incoming_reinvite_offer is not None:
            raise CallStateError("an INVITE transaction is already in progress")
        c.local_sdp = sdp
        c.outgoing_reinvite = True
        self._send_in_dialog(
            c, "INVITE", now, [("Content-Type", "application/sdp")], sdp.serialize()
        )

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
    ) -> int:
        """Place an outbound call to `target_uri` via `destination` (a trunk); returns the call."""
        SipUri.parse(target_uri)
        handle = self._new_handle()
        tag = _token()
        h = Headers()
        h.add("Via", self._via(destination, _branch()))
        h.add("Max-Forwards", "70")
        h.add("From", f"<{from_uri}>;tag={tag}")
        h.add("To", f"<{target_uri}>")
        h.add("Call-ID", f"{_token()}{_token()}@{self.config.host}")
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self._contact(destination))
        h.add("Allow", ALLOW)
        h.add("Supported", SUPPORTED)
        h.add("User-Agent", self.config.user_agent)
        for name, value in headers:
            h.add(name, value)
        body = b""
        if offer is not None:
            h.add("Content-Type", "application/sdp")
            body = offer.serialize()
        request = SipRequest("INVITE", target_uri, h, body)
        call = _Call(handle, "uac", S.OUTGOING, request, destination, tag, local_sdp=offer)
        call.credentials = credentials
        self._add_call(call)
        self._start_client(request, destination, handle, "invite", now)
        return handle

    # --- inbound requests

    def _on_request(self, request: SipRequest, addr: Address, now: float) -> None:
        method = request.method
        if is_scanner(request.headers.get("User-Agent")):
            self._events.append(RequestRejected("scanner", method, 0, addr))
            return
        self._stamp_via(request, addr)
        if method == "ACK":
            self._on_ack(request, addr, now)
            return
        key = server_key(request)
        existing = self._server_tx.get(key)
        if existing is not None:
            existing.receive_request(request, now)
            return
        # matches no transaction: charged unless it is the CANCEL of a known INVITE or belongs to
        # a known dialog; a new INVITE is charged in _on_invite (its trunk's call budget)
        if method == "CANCEL":
            known = (*key[:-1], "INVITE") in self._invite_calls
        elif request.to.tag:
            known = (request.call_id, request.to.tag, request.from_.tag or "") in self._dialogs
        else:
            known = method == "INVITE"
        if not known and not self._charge_message(request, addr, now):
            return
        mf = request.max_forwards
        if mf is not None and mf == 0 and method != "OPTIONS":
            self._stateless(request, addr, 483, "too_many_hops")
            return
        if method == "CANCEL":
            self._on_cancel(request, addr, key, now)
            return
        to_tag = request.to.tag
        if to_tag:
            handle = self._dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
            if handle is None:
                self._stateless(request, addr, 481, "unknown_dialog")
                return
            self._in_dialog(self._calls[handle], request, addr, key, now)
            return
        if method == "INVITE":
            self._on_invite(request, addr, key, now)
        elif method == "OPTIONS":
            if self.policy is not None and not self.policy.is_allowed(addr.host):
                self._stateless(request, addr, 403, "not_allowed")
                return
            refusal = "draining" if self.draining else self.unavailable
            tx = self._server(request, addr, key)
            extra = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)]
            if refusal is not None:
                extra.append(
                    ("Retry-After", "30" if self.draining else str(self._unavailable_retry))
                )
                self._events.append(RequestRejected(refusal, method, 503, addr))
            self._tx_respond(tx, 200 if refusal is None else 503, now, extra)
        elif method in ("BYE", "INFO", "UPDATE", "NOTIFY"):
            self._stateless(request, addr, 481, "unknown_dialog")
        elif method in _KNOWN_METHODS:
            self._stateless(request, addr, 405, "unsupported", [("Allow", ALLOW)])
        else:
            self._stateless(request, addr, 501, "not_implemented", [("Allow", ALLOW)])

    def _on_invite(
        self, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        if self.policy is not None:
            if not self.policy.is_allowed(addr.host):
                if self._charge_message(request, addr, now):
                    self._stateless(request, addr, 403, "not_allowed")
                return
            # one token per call attempt: the retry after our digest challenge is free, once
            retry = request.call_id in self._challenged
            if retry:
                del self._challenged[request.call_id]
            elif not self.policy.admit_call(addr.host, now):
                self._over_call_budget(request, addr, now)
                return
        unsupported = [
            o for o in request.headers.get_all("Require") if o.strip().lower() != "timer"
        ]
        if unsupported:
            self._stateless(
                request, addr, 420, "unsupported", [("Unsupported", ", ".join(unsupported))]
            )
            return
        if self.draining:
            self._stateless(request, addr, 503, "draining", [("Retry-After", "30")])
            return
        tx = InviteServerTransaction(request, self._response_addr(request, addr), self._out)
        self._server_tx[key] = tx
        if self.auth is not None:
            result = self.auth.verify(request, now)
            if result is not AuthResult.OK:
                reason = "auth_failed" if result is AuthResult.FAILED else "auth_required"
                headers = self.auth.challenge(now, stale=result is AuthResult.STALE)
                self._tx_respond(tx, self.auth.status, now, headers)
                self._challenged[request.call_id] = None
                if len(self._challenged) > _RECENT_CALL_IDS:
                    self._challenged.popitem(last=False)
                self._events.append(RequestRejected(reason, "INVITE", self.auth.status, addr))
                return
        se = self._parse_session_expires(request)
        if se is not None and se < self.config.min_session_expires:
            self._tx_respond(tx, 422, now, [("Min-SE", str(self.config.min_session_expires))])
            self._events.append(RequestRejected("unsupported", "INVITE", 422, addr))
            return
        offer: SessionDescription | None = None
        if request.body:
            if request.content_type != "application/sdp":
                self._tx_respond(tx, 415, now, [("Accept", "application/sdp")])
                self._events.append(RequestRejected("unsupported", "INVITE", 415, addr))
                return
            try:
                offer = SessionDescription.parse(request.body)
                sdpmod.check_offer(offer)
            except NotAcceptable as exc:
                self._tx_respond(tx, 488, now, [_warning(exc)])
                self._events.append(RequestRejected(exc.reason, "INVITE", 488, addr))
                return
            except SdpError as exc:
                self._tx_respond(tx, 400, now, reason=f"Bad SDP: {exc}")
                self._events.append(RequestRejected("malformed", "INVITE", 400, addr))
                return
        tx.send_response(make_response(request, 100, "Trying"), now)
        handle = self._new_handle()
        call = _Call(handle, "uas", S.INCOMING, request, addr, _token(), ist=tx)
        call.remote_sdp = offer
        call.late_offer = offer is None
        call.answer_deadline = now + self.config.answer_timeout
        self._add_call(call)
        self._invite_calls[key] = handle
        call.invite_key = key
        dkey = (request.call_id, call.local_tag, request.from_.tag or "")
        self._dialogs[dkey] = handle
        call.keys.append(dkey)
        first_values = MappingProxyType(dict(reversed(request.headers.items())))
        self._events.append(
            IncomingCallReceived(
                handle,
                request.uri,
                str(request.from_.uri),
                str(request.to.uri),
                first_values,
                offer,
                addr,
            )
        )

    def _over_call_budget(self, request: SipRequest, addr: Address, now: float) -> None:
        """A new INVITE over its trunk's call budget: 503 + Retry-After (§21.5.4), statelessly,
        while the global reply budget lasts; beyond it, dropped. Counted either way."""
        assert self.policy is not None
        if self.policy.admit_reply(now):
            retry = str(self.policy.retry_after(addr.host))
            self._stateless(request, addr, 503, "rate_limited", [("Retry-After", retry)])
        else:
            self._events.append(RequestRejected("rate_limited", "INVITE", 0, addr))

    def _on_cancel(
        self, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        invite_key = (*key[:-1], "INVITE")
        handle = self._invite_calls.get(invite_key)
        tx = self._server(request, addr, key)
        call = self._calls.get(handle) if handle is not None else None
        if call is None:
            self._tx_respond(tx, 481, now)
            return
        if call.state is not S.INCOMING:
            self._tx_respond(tx, 200, now)  # §9.2: too late, the INVITE already has its final
            return
        self._tx_respond(tx, 200, now)
        assert call.ist is not None
        call.ist.send_response(self._call_response(call, 487, []), now)
        self._end_call(call)
        self._events.append(CallCancelled(call.handle))

    def _on_ack(self, request: SipRequest, addr: Address, now: float) -> None:
        stx = self._server_tx.get(server_key(request))
        if isinstance(stx, InviteServerTransaction) and not stx.receive_request(request, now):
            return  # ACK for a non-2xx: absorbed by the transaction (§17.2.1)
        handle = self._dialogs.get((request.call_id, request.to.tag or "", request.from_.tag or ""))
        call = self._calls.get(handle) if handle is not None else None
        if call is None or call.retransmit is None or call.retransmit.cseq != request.cseq.seq:
            return  # stray or duplicate ACK: never answered (§17)
        call.retransmit = None
        answer: SessionDescription | None = None
        if request.body and request.content_type == "application/sdp":
            try:
                answer = SessionDescription.parse(request.body)
            except SdpError:
                answer = None
        if call.state is S.ANSWERED:
            call.state = S.CONFIRMED
            if answer is not None:
                call.remote_sdp = answer
            self._events.append(CallAcked(call.handle, answer))
            if call.pending_bye:
                self._send_bye(call, now)
        elif call.incoming_reinvite_offer is not None:
            offered_in_2xx = call.incoming_reinvite_offer is False
            call.incoming_reinvite_offer = None
            if offered_in_2xx and answer is not None and call.local_sdp is not None:
                self._media_from_answer(call, answer)

    def _in_dialog(
        self, call: _Call, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        method = request.method
        assert call.dialog is not None or call.state is S.INCOMING
        if call.dialog is not None and not call.dialog.accept_remote_cseq(request):
            tx = self._server(request, addr, key)
            self._tx_respond(tx, 500, now, reason="CSeq out of order")
            return
        if method == "INVITE":
            self._on_reinvite(call, request, addr, key, now)
            return
        tx = self._server(request, addr, key)
        if method == "BYE":
            self._tx_respond(tx, 200, now)
            if call.state is S.INCOMING and call.ist is not None:
                call.ist.send_response(self._call_response(call, 487, []), now)
            self._end_call(call)
            self._events.append(CallEndedByRemote(call.handle))
        elif method == "OPTIONS":
            self._tx_respond(tx, 200, now, [("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method == "INFO":
            self._on_info(call, request, tx, now)
        elif method == "UPDATE":
            self._on_update(call, request, tx, now)
        elif method == "NOTIFY":
            self._on_notify(call, request, tx, now)
        else:
            self._tx_respond(tx, 405, now, [("Allow", ALLOW)])
            self._events.append(RequestRejected("unsupported", method, 405, addr))

    def _on_reinvite(
        self, call: _Call, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        tx = InviteServerTransaction(request, self._response_addr(request, addr), self._out)
        self._server_tx[key] = tx
        if call.state is not S.CONFIRMED or call.outgoing_reinvite or call.retransmit is not None:
            # §14.2: an INVITE while another is in progress gets 491 (500 if ours is pending)
            self._tx_respond(tx, 491 if call.state is S.CONFIRMED else 500, now)
            return
        assert call.dialog is not None and call.local_sdp is not None
        extra = self._session_timer_headers(call, now, request)
        answer_sdp = call.local_sdp
        if request.body:
            try:
                negotiated = self._negotiate_update(call, request.body)
            except NotAcceptable as exc:  # the call goes on with the media it had
                self._tx_respond(tx, 488, now, [_warning(exc)])
                self._events.append(RequestRejected(exc.reason, "INVITE", 488, addr))
                return
            except SdpError as exc:
                self._tx_respond(tx, 400, now, reason=f"Bad SDP: {exc}")
                return
            answer_sdp = negotiated.answer
            call.incoming_reinvite_offer = True
        else:
            call.incoming_reinvite_offer = False  # we offer in the 2xx, answer in ACK
            negotiated = None
        call.dialog.refresh_target(request)
        response = self._call_response(
            call,
            200,
            [("Content-Type", "application/sdp"), *extra],
            answer_sdp.serialize(),
            request=request,
        )
        tx.send_response(response, now)
        self._start_retransmit(call, response, tx.addr, request.cseq.seq, now)
        if negotiated is not None:
            self._events.append(MediaUpdated(call.handle, negotiated))

    def _on_update(
        self, call: _Call, request: SipRequest, tx: ServerTransaction, now: float
    ) -> None:
        if call.state is not S.CONFIRMED or call.local_sdp is None or call.dialog is None:
            self._tx_respond(tx, 491, now)
            return
        extra = self._session_timer_headers(call, now, request)
        call.dialog.refresh_target(request)
        if not request.body:
            self._tx_respond(tx, 200, now, extra)  # session refresh only (RFC 4028 §7.4)
            return
        try:
            negotiated = self._negotiate_update(call, request.body)
        except NotAcceptable as exc:  # the call goes on with the media it had
            self._tx_respond(tx, 488, now, [_warning(exc)])
            self._events.append(RequestRejected(exc.reason, "UPDATE", 488, tx.addr))
            return
        except SdpError as exc:
            self._tx_respond(tx, 400, now, reason=f"Bad SDP: {exc}")
            return
        self._tx_respond(
            tx,
            200,
            now,
            [
                ("Content-Type", "application/sdp"),
                ("Contact", self._contact(call.peer, call)),
                *extra,
            ],
            negotiated.answer.serialize(),
        )
        self._events.append(MediaUpdated(call.handle, negotiated))

    def _negotiate_update(self, call: _Call, body: bytes) -> Negotiated:
        """Answer a new offer with our current address/port, preferring our current codec."""
        assert call.local_sdp is not None
        offer = SessionDescription.parse(body)
        local = call.local_sdp
        audio = local.audio()
        port = audio.port if audio else 0
        addr = (audio.connection if audio else None) or local.connection or local.origin_address
        current = self._current_codec(local)
        prefer: tuple[sdpmod.Codec, ...] = (
            (current, "pcma" if current == "pcmu" else "pcmu") if current else ("pcmu", "pcma")
        )
        negotiated = sdpmod.negotiate(
            offer,
            addr,
            port,
            prefer=prefer,
            session_id=local.session_id,
            session_version=local.session_version,
        )
        answer = negotiated.answer
        if _media_lines(answer) != _media_lines(local):
            answer.session_version = local.session_version + 1  # RFC 3264 §8
        call.local_sdp = answer
        call.remote_sdp = offer
        return negotiated

    @staticmethod
    def _current_codec(sd: SessionDescription) -> sdpmod.Codec | None:
        audio = sd.audio()
        if audio is None:
            return None
        for fmt in audio.formats:
            if fmt == "0":
                return "pcmu"
            if fmt == "8":
                return "pcma"
        return None

    def _media_from_answer(self, call: _Call, answer: SessionDescription) -> None:
        try:
            codec, pt, dtmf, ptime, remote, rtcp, direction = sdpmod.describe(answer)
        except SdpError:
            return
        assert call.local_sdp is not None
        call.remote_sdp = answer
        self._events.append(
            MediaUpdated(
                call.handle,
                Negotiated(call.local_sdp, codec, pt, dtmf, ptime, remote, rtcp, direction),
            )
        )

    def _on_info(self, call: _Call, request: SipRequest, tx: ServerTransaction, now: float) -> None:
        ctype = request.content_type
        digit: str | None = None
        duration = 0
        text = request.body.decode("utf-8", "replace")
        if ctype == "application/dtmf-relay":
            m = re.search(r"(?im)^\s*signal\s*=\s*(\S+)", text)
            d = re.search(r"(?im)^\s*duration\s*=\s*(\d+)", text)
            digit = m.group(1) if m else None
            duration = int(d.group(1)) if d else 0
        elif ctype == "application/dtmf":
            digit = text.strip()
        elif not request.body:
            self._tx_respond(tx, 200, now)
            return
        else:
            self._tx_respond(tx, 415, now, [("Accept", "application/dtmf-relay, application/dtmf")])
            return
        if digit is not None and digit.isdigit() and 10 <= int(digit) <= 15:
            digit = _DTMF_EVENTS[int(digit)]  # some send RFC 4733 event codes
        if digit is None or len(digit) != 1 or digit.upper() not in _DTMF_CHARS:
            self._tx_respond(tx, 400, now, reason="Bad DTMF body")
            return
        self._tx_respond(tx, 200, now)
        self._events.append(DtmfInfoReceived(call.handle, digit.upper(), duration))

    def _on_notify(
        self, call: _Call, request: SipRequest, tx: ServerTransaction, now: float
    ) -> None:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self._tx_respond(tx, 489, now, reason="Bad Event")
            return
        self._tx_respond(tx, 200, now)
        m = re.match(rb"\s*SIP/2\.0\s+(\d{3})", request.body)
        state = (request.headers.get("Subscription-State") or "").lower()
        if m:
            status = int(m.group(1))
            final = status >= 200 or state.startswith("terminated")
            self._events.append(TransferProgressed(call.handle, status, final))

    # --- responses to our requests

    def _on_response(self, response: SipResponse, now: float) -> None:
        try:
            via = response.top_via
        except SipParseError:
            return
        entry = self._client_tx.get((via.branch or "", response.cseq.method))
        if entry is None:
            self._stray_response(response, now)
            return
        ctx, handle, purpose = entry
        if not ctx.receive_response(response, now):
            return
        call = self._calls.get(handle) if handle is not None else None
        if call is None:
            return
        if purpose == "invite":
            self._on_invite_response(call, ctx, response, now)
        elif purpose == "reinvite":
            self._on_reinvite_response(call, response, now)
        elif purpose == "refer":
            if response.status >= 200:
                self._events.append(
                    TransferProgressed(call.handle, response.status, response.status >= 300)
                )
        elif purpose == "bye" and response.status >= 200:
            self._end_call(call)

    def _stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx retransmission after our INVITE transaction ended: re-send the ACK (§13.2.2.4)."""
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        for call in self._calls.values():
            if (
                call.dialog is not None
                and call.dialog.call_id == response.call_id
                and call.ack_bytes
                and call.ack_addr is not None
            ):
                self._out.append((call.ack_bytes, call.ack_addr))

    def _on_invite_response(
        self, call: _Call, ctx: ClientTransaction, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if status < 200:
            call.got_provisional = True
            if call.pending_cancel:
                call.pending_cancel = False
                self._send_cancel(call, now)
            elif status > 100:
                self._events.append(OutboundCallProgressed(call.handle, status))
            return
        if 200 <= status < 300:
            if call.dialog is None:
                call.dialog = Dialog.as_uac(call.invite, response)
                self._dialogs[call.dialog.key] = call.handle
                call.keys.append(call.dialog.key)
            self._send_ack(call, response, now)
            answer = None
            if response.body and response.content_type == "application/sdp":
                try:
                    answer = SessionDescription.parse(response.body)
                except SdpError:
                    answer = None
            if call.state is S.CANCELLING:
                call.state = S.CONFIRMED
                self._send_bye(call, now)
                return
            if call.state is not S.OUTGOING:
                return  # a 2xx retransmission: ACK re-sent above
            call.state = S.CONFIRMED
            call.remote_sdp = answer
            self._events.append(OutboundCallAnswered(call.handle, answer))
            return
        if status in (401, 407) and call.credentials is not None and call.auth_tries < 1:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenge = pick_challenge(response.headers.get_all(header))
            if challenge is not None and call.state is S.OUTGOING:
                call.auth_tries += 1
                self._retry_with_auth(call, challenge, status, now)
                return
        cancelled = call.state is S.CANCELLING
        self._end_call(call)
        if cancelled:
            self._events.append(CallTerminated(call.handle, "cancelled"))
        else:
            self._events.append(OutboundCallFailed(call.handle, status, response.reason))

    def _retry_with_auth(
        self, call: _Call, challenge: dict[str, str], status: int, now: float
    ) -> None:
        assert call.credentials is not None
        old = call.invite
        h = old.headers.copy()
        h.set("Via", self._via(call.peer, _branch()))
        h.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        h.set(name, authorization(challenge, "INVITE", old.uri, call.credentials))
        call.invite = SipRequest("INVITE", old.uri, h, old.body)
        call.got_provisional = False
        self._start_client(call.invite, call.peer, call.handle, "invite", now)

    def _on_reinvite_response(self, call: _Call, response: SipResponse, now: float) -> None:
        if response.status < 200:
            return
        call.outgoing_reinvite = False
        if response.status >= 300:
            if response.status in (408, 481):
                self._send_bye(call, now)  # §14.1: the dialog is gone
                self._events.append(CallTerminated(call.handle, "reinvite_failed"))
            return
        assert call.dialog is not None
        call.dialog.refresh_target(response)
        self._send_ack(call, response, now)
        if response.body and response.content_type == "application/sdp":
            try:
                self._media_from_answer(call, SessionDescription.parse(response.body))
            except SdpError:
                pass

    def _client_timeout(self, handle: int | None, purpose: str, now: float) -> None:
        call = self._calls.get(handle) if handle is not None else None
        if call is None:
            return
        if purpose == "invite" and call.state in (S.OUTGOING, S.CANCELLING):
            self._end_call(call)
            self._events.append(OutboundCallFailed(call.handle, 408, "Request Timeout"))
        elif purpose == "refer":
            self._events.append(TransferProgressed(call.handle, 408, True))
        elif purpose == "reinvite":
            call.outgoing_reinvite = False
            self._send_bye(call, now)
            self._events.append(CallTerminated(call.handle, "request_timeout"))
        elif purpose == "bye":
            self._end_call(call)

    # --- timers per call

    def _call_timers(self, call: _Call, now: float) -> None:
        if (
            call.answer_deadline is not None
            and now >= call.answer_deadline
            and call.state is S.INCOMING
        ):
            call.answer_deadline = None
            self._final_reject(call, 480, now, ())
            self._events.append(CallTerminated(call.handle, "no_answer"))
            return
        rt = call.retransmit
        if rt is not None:
            if now >= rt.give_up_at:
                # §13.3.1.4: no ACK within 64*T1: confirm and end the session with BYE
                call.retransmit = None
                if call.state is S.ANSWERED:
                    call.state = S.CONFIRMED
                call.incoming_reinvite_offer = None
                self._send_bye(call, now)
                self._events.append(CallTerminated(call.handle, "ack_timeout"))
                return
            if rt.next_at is not None and now >= rt.next_at:
                self._out.append((rt.data, rt.addr))
                rt.interval = min(rt.interval * 2, T2)
                rt.next_at = now + rt.interval
        if call.cancel_deadline is not None and now >= call.cancel_deadline:
            call.cancel_deadline = None
            if call.state is S.CANCELLING:
                self._end_call(call)
                self._events.append(CallTerminated(call.handle, "cancelled"))
                return
        if call.session_expires is not None and now >= call.session_expires:
            call.session_expires = None
            call.refresh_at = None
            if call.state is S.CONFIRMED:
                self._send_bye(call, now)
                self._events.append(CallTerminated(call.handle, "session_expired"))
        if call.refresh_at is not None and now >= call.refresh_at:
            call.refresh_at = None
            if call.state is S.CONFIRMED and call.session_interval:
                # RFC 4028 §7.4: refresh with a body-less UPDATE
                self._send_in_dialog(
                    call,
                    "UPDATE",
                    now,
                    [
                        ("Session-Expires", f"{call.session_interval};refresher=uas"),
                        ("Supported", SUPPORTED),
                    ],
                )
                call.refresh_at = now + call.session_interval / 2
                call.session_expires = now + call.session_interval

    def _start_retransmit(
        self, call: _Call, response: SipResponse, addr: Address, cseq: int, now: float
    ) -> None:
        next_at = None if call.peer.reliable else now + T1
        call.retransmit = _Retransmit(response.serialize(), addr, cseq, T1, next_at, now + 64 * T1)

    # --- session timers (RFC 4028)

    @staticmethod
    def _parse_session_expires(request: SipRequest) -> int | None:
        value = request.headers.get("Session-Expires")
        if value is None:
            return None
        num = value.split(";")[0].strip()
        return int(num) if num.isdigit() else None

    def _session_timer_headers(
        self, call: _Call, now: float, request: SipRequest | None = None
    ) -> list[tuple[str, str]]:
        request = request or call.invite
        interval = self._parse_session_expires(request)
        supported = [s.strip().lower() for s in request.headers.get_all("Supported")]
        if interval is None or "timer" not in supported:
            if interval is not None:
                # the UAC cannot refresh: we do (§9, refresher=uas)
                refresher = "uas"
            else:
                return []
        else:
            value = request.headers.get("Session-Expires") or ""
            refresher = "uas" if "refresher=uas" in value.replace(" ", "").lower() else "uac"
        interval = max(interval, self.config.min_session_expires)
        call.session_interval = interval
        if refresher == "uac":
            call.session_expires = now + interval - min(32, interval / 3)  # §10
            call.refresh_at = None
        else:
            call.session_expires = None
            call.refresh_at = now + interval / 2
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if "timer" in supported:
            headers.append(("Require", "timer"))
        return headers

    # --- sending helpers

    def _hostport(self, transport: str = "udp") -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        port = self.config.tls_port if transport == "tls" and self.config.tls_port else None
        return f"{host}:{port or self.config.port}"

    def _via(self, dest: Address, branch: str) -> str:
        hostport = self._hostport(dest.transport)
        return f"SIP/2.0/{dest.transport.upper()} {hostport};branch={branch};rport"

    def _contact(self, dest: Address, call: _Call | None = None) -> str:
        """Our Contact for messages to `dest`: the port of its transport. A dialog set up with a
        sips: Request-URI gets a sips: Contact (§12.1.1); anything else over TLS gets
        sip:...;transport=tls, which is what phones dialling sip:...;transport=tls can follow."""
        hostport = self._hostport(dest.transport)
        if call is not None and dest.transport == "tls" and call.invite.uri[:5].lower() == "sips:":
            return f"<sips:{self.config.user}@{hostport}>"
        transport = f";transport={dest.transport}" if dest.transport != "udp" else ""
        return f"<sip:{self.config.user}@{hostport}{transport}>"

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    def _server(
        self, request: SipRequest, addr: Address, key: tuple[str, ...]
    ) -> ServerTransaction:
        tx = NonInviteServerTransaction(request, self._response_addr(request, addr), self._out)
        self._server_tx[key] = tx
        return tx

    def _tx_respond(
        self,
        tx: ServerTransaction,
        status: int,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str | None = None,
    ) -> None:
        to_tag = _token() if status > 100 else None
        response = make_response(
            tx.request,
            status,
            reason or REASONS.get(status, "Unknown"),
            to_tag=to_tag,
            headers=headers,
            body=body,
        )
        tx.send_response(response, now)

    def _call_response(
        self,
        call: _Call,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        request: SipRequest | None = None,
    ) -> SipResponse:
        extra: list[tuple[str, str]] = []
        if 100 < status < 300:
            # §12.1.1: a response that makes a dialog copies Record-Route, in order, so that
            # in-dialog requests come back through the proxies (Kamailio in front of us)
            invite = request or call.invite
            extra = [
                *(("Record-Route", rr) for rr in invite.headers.get_all("Record-Route")),
                ("Contact", self._contact(call.peer, call)),
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
            ]
        return make_response(
            request or call.invite,
            status,
            REASONS.get(status, "Unknown"),
            to_tag=call.local_tag,
            headers=[*extra, *headers],
            body=body,
        )

    def _respond_call(self, call: _Call, status: int, now: float) -> None:
        assert call.ist is not None
        call.ist.send_response(self._call_response(call, status, []), now)

    def _final_reject(
        self, call: _Call, status: int, now: float, headers: Sequence[tuple[str, str]]
    ) -> None:
        assert call.ist is not None
        call.ist.send_response(self._call_response(call, status, headers), now)
        self._end_call(call)

    def _stateless(
        self,
        request: SipRequest,
        addr: Address,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
        phrase: str | None = None,
    ) -> None:
        """A final response with no transaction (cheap refusals; §8.2 checks)."""
        response = make_response(
            request,
            status,
            phrase or REASONS.get(status, "Unknown"),
            to_tag=_token(),
            headers=headers,
        )
        self._out.append((response.serialize(), self._response_addr(request, addr)))
        self._events.append(RequestRejected(reason, request.method, status, addr))

    def _malformed(self, exc: SipParseError, addr: Address) -> None:
        request = exc.request
        method = ""
        if request is not None:
            method = request.method
            try:
                self._stamp_via(request, addr)
                dest = self._response_addr(request, addr)
            except SipParseError:
                dest = None
            if dest is not None and method != "ACK":
                phrase = re.sub(r"[^\x20-\x7e]", "?", exc.reason)[:80]
                if exc.status_hint == 400:
                    phrase = f"Bad Request ({phrase})"
                response = make_response(request, exc.status_hint, phrase, to_tag=_token())
                self._out.append((response.serialize(), dest))
                self._events.append(RequestRejected("malformed", method, exc.status_hint, addr))
                return
        self._events.append(RequestRejected("malformed", method, 0, addr))

    def _stamp_via(self, request: SipRequest, addr: Address) -> None:
        """§18.2.1 received=, RFC 3581 rport=: remember where the request really came from."""
        if addr.reliable:
            return
        vias = request.headers.get_all("Via")
        if not vias:
            raise SipParseError("missing Via")
        top = Via.parse(vias[0])
        params = dict(top.params)
        if top.host != addr.host:
            params["received"] = addr.host
        if "rport" in params:
            params["rport"] = str(addr.port)
            params.setdefault("received", addr.host)
        if params == top.params:
            return
        new_top = str(Via(top.transport, top.host, top.port, params))
        others = [(n, v) for n, v in request.headers if n != "Via"]
        request.headers = Headers([("Via", v) for v in (new_top, *vias[1:])] + others)

    def _response_addr(self, request: SipRequest, addr: Address) -> Address:
        """§18.2.2 with RFC 3581: where a response to `request` from `addr` goes."""
        if addr.reliable:
            return addr
        vias = request.headers.get_all("Via")
        if not vias:
            raise SipParseError("missing Via")
        via = Via.parse(vias[0])
        host = via.received or via.host
        port = via.rport or via.port or 5060
        if via.received is None and via.rport is None and via.host == addr.host:
            port = via.port or 5060
        return Address(addr.transport, host, port, None)

    def _target_addr(self, call: _Call) -> Address:
        """Where in-dialog requests go: the next hop's IP literal, else the peer's address."""
        if call.dialog is None:
            return call.peer
        uri = call.dialog.next_hop_uri()
        if call.peer.reliable or not sdpmod.is_ip(uri.host):
            return call.peer
        return Address(call.peer.transport, uri.host, uri.port or 5060, None)

    def _start_client(
        self, request: SipRequest, addr: Address, handle: int | None, purpose: str, now: float
    ) -> None:
        ctx: ClientTransaction
        if request.method == "INVITE":
            ctx = InviteClientTransaction(request, addr, self._out)
        else:
            ctx = NonInviteClientTransaction(request, addr, self._out)
        self._client_tx[(ctx.branch, request.method)] = (ctx, handle, purpose)
        ctx.start(now)

    def _send_in_dialog(
        self,
        call: _Call,
        method: str,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        assert call.dialog is not None
        dest = self._target_addr(call)
        request = call.dialog.create_request(
            method,
            self._via(dest, _branch()),
            self._contact(dest, call),
            headers=headers,
            body=body,
        )
        purpose = {"INVITE": "reinvite"}.get(method, method.lower())
        self._start_client(request, dest, call.handle, purpose, now)

    def _send_bye(self, call: _Call, now: float) -> None:
        if call.dialog is None:
            self._end_call(call)
            return
        call.state = S.ENDING
        call.retransmit = None
        call.session_expires = call.refresh_at = None
        self._send_in_dialog(call, "BYE", now)

    def _send_cancel(self, call: _Call, now: float) -> None:
        call.cancel_deadline = now + 64 * T1  # §9.1: give up on the INVITE after that
        cancel = build_cancel(call.invite)
        self._start_client(cancel, call.peer, call.handle, "cancel", now)

    def _send_ack(self, call: _Call, response: SipResponse, now: float) -> None:
        """§13.2.2.4: ACK for a 2xx, a new transaction-less request, re-sent per 2xx copy."""
        assert call.dialog is not None
        dest = self._target_addr(call)
        ack = call.dialog.create_request(
            "ACK", self._via(dest, _branch()), self._contact(dest, call), cseq=response.cseq.seq
        )
        for name in ("Authorization", "Proxy-Authorization"):
            value = call.invite.headers.get(name)
            if value is not None and response.cseq.seq == call.invite.cseq.seq:
                ack.headers.add(name, value)
        call.ack_bytes = ack.serialize()
        call.ack_addr = dest
        self._out.append((call.ack_bytes, dest))

    def _end_call(self, call: _Call) -> None:
        call.state = S.ENDED
        call.retransmit = None
        call.session_expires = call.refresh_at = None
        if self._calls.pop(call.handle, None) is not None:
            call_id = call.invite.call_id
            left = self._call_ids.get(call_id, 1) - 1
            if left > 0:
                self._call_ids[call_id] = left
            else:
                self._call_ids.pop(call_id, None)
            # its retransmissions, ACKs and late BYEs still pass free for a while
            self._remember_call_id(call_id)
        for key in call.keys:
            self._dialogs.pop(key, None)
        if call.invite_key is not None:
            self._invite_calls.pop(call.invite_key, None)


def _warning(exc: NotAcceptable) -> tuple[str, str]:
    """The Warning header of a 488 (RFC 3261 §20.43: code, agent, quoted text)."""
    text = str(exc).replace("\\", "").replace('"', "'")
    return ("Warning", f'{exc.warning} - "{text}"')


def _media_lines(sd: SessionDescription) -> list[tuple[object, ...]]:
    return [
        (m.media, m.port, m.proto, tuple(m.formats), m.connection, tuple(m.attributes))
        for m in sd.media
    ] + [(sd.connection,)]


__all__ = [
    "ALLOW",
    "Address",
    "CallAcked",
    "CallCancelled",
    "CallEndedByRemote",
    "CallStateError",
    "CallTerminated",
    "Credentials",
    "DtmfInfoReceived",
    "EndpointConfig",
    "IncomingCallReceived",
    "MediaUpdated",
    "NameAddr",
    "OutboundCallAnswered",
    "OutboundCallFailed",
    "OutboundCallProgressed",
    "RequestRejected",
    "SipEndpoint",
    "SipEvent",
    "TransferProgressed",
]
