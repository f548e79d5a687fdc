"""What the user agent's role modules share: the call registry, the call-state dispatcher, the
transactions, and the helpers that build and queue messages.

`SipEndpoint` (ua.py) owns one `UaCore` and the role modules built on it: `admission.py` (policy
before a call exists), `uas.py`, `uac.py`, `in_dialog.py` and `session_timer.py`. Each role
registers its steps by name; `fire(call, trigger)` looks `(call.state, trigger.input)` up in
`call_state.TABLE`, runs the steps and moves the call (see call_state.py). Calls are `SipCall`
records; their timers are deadlines in the record, listed in `CALL_TIMERS`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import SdpError, SipCallStateError, SipParseError, TransactionStateError
from gateway.sip import routing
from gateway.sip.auth import Credentials
from gateway.sip.call_state import COMMANDS, REQUESTS, TABLE, CallInput, CallState
from gateway.sip.dialog import Dialog
from gateway.sip.events import RequestRejected, SipEvent, UnexpectedInput
from gateway.sip.message import REASONS, SipRequest, SipResponse, make_response, session_body
from gateway.sip.sdp import DEFAULT_MEDIA, MediaPolicy, SessionDescription
from gateway.sip.transaction import (
    Address,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, PRACK"
SUPPORTED = "timer, 100rel"
MIN_SE = 90  # RFC 4028 §4
RECENT_CALL_IDS = 8192  # Call-IDs of ended or challenged calls still recognised (LRU)


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
    media: MediaPolicy = DEFAULT_MEDIA  # a call's media unless its trunk has its own
    trunk_media: Mapping[str, MediaPolicy] = field(default_factory=dict)


@dataclass
class Retransmit:
    """§13.3.1.4: our 2xx to an INVITE, re-sent until its ACK (or 64*T1)."""

    data: bytes
    addr: Address
    cseq: int
    interval: float
    next_at: float | None
    give_up_at: float


@dataclass
class ReliableProvisional:
    """RFC 3262 §3: our reliable provisional, re-sent (T1 doubling) until its PRACK (64*T1)."""

    data: bytes
    addr: Address
    rseq: int
    interval: float
    next_at: float | None
    give_up_at: float


@dataclass
class SipCall:
    """One call (one INVITE dialog) and the data of its state; `state` moves by the table only."""

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
    media: MediaPolicy = DEFAULT_MEDIA  # its codecs, ptime and SRTP (its trunk's or ours)
    retransmit: Retransmit | None = None  # present in the states that await an ACK
    # RFC 3262 (100rel), UAS: "required", "supported" or "" (the INVITE's); our last RSeq; the
    # reliable 1xx awaiting its PRACK (in the states that await one); the 2xx it holds back
    rel100: str = ""
    rseq: int = 0
    reliable: ReliableProvisional | None = None
    held_answer: SessionDescription | bytes | None = None
    # UAC: the early dialogs of our INVITE's reliable 1xx, by To tag, with the last RSeq of each
    early: dict[str, tuple[Dialog, int]] = field(default_factory=dict)
    ack_bytes: bytes = b""  # our last ACK of a 2xx, re-sent for its retransmissions
    ack_addr: Address | None = None
    credentials: Credentials | None = None
    auth_tries: int = 0
    #: UAC: the targets of the trunk's name not tried yet, in order (RFC 3263 §4.3)
    alternates: list[Address] = field(default_factory=list)
    session_interval: int = 0  # RFC 4028, negotiated (0: no session timer)
    we_refresh: bool = False  # RFC 4028: we are the refresher
    min_se: int = 0  # our Min-SE for the call (its trunk's, raised by 422s); 0: the endpoint's
    too_brief_tries: int = 0  # 422s retried (RFC 4028 §7.3)
    peer_allow: frozenset[str] | None = None  # the methods the peer's Allow lists (None: unknown)
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # its dialog keys
    invite_key: tuple[str, ...] | None = None  # its INVITE server transaction
    # deadlines (CALL_TIMERS)
    answer_deadline: float | None = None
    cancel_deadline: float | None = None
    session_expires: float | None = None
    refresh_at: float | None = None  # we refresh (RFC 4028 §10)

    @property
    def sips(self) -> bool:
        """Dialled with a sips: Request-URI (§12.1.1: our Contact is sips: over TLS)."""
        return self.invite.uri[:5].lower() == "sips:"


@dataclass(slots=True)
class Trigger:
    """One input to a call, with what its steps need: the message, its server transaction and
    source, or a command's arguments."""

    input: CallInput
    now: float
    request: SipRequest | None = None
    response: SipResponse | None = None
    tx: ServerTransaction | None = None
    source: Address | None = None
    status: int = 0
    reason: str = ""
    headers: Sequence[tuple[str, str]] = ()
    sdp: SessionDescription | bytes | None = None
    target: str = ""
    sent: SipRequest | None = None  # our request a response answers


#: a step: False refuses the transition (the request got an error answer), anything else goes on
Step = Callable[[SipCall, Trigger], bool | None]


def _stop_2xx(call: SipCall) -> None:
    call.retransmit = None


def _stop_2xx_tick(call: SipCall) -> None:
    if call.retransmit is not None:
        call.retransmit.next_at = None


def _prack_deadline(call: SipCall) -> float | None:
    return call.reliable.give_up_at if call.reliable is not None else None


def _resend_1xx_at(call: SipCall) -> float | None:
    return call.reliable.next_at if call.reliable is not None else None


def _stop_reliable(call: SipCall) -> None:
    call.reliable = None


def _stop_1xx_tick(call: SipCall) -> None:
    if call.reliable is not None:
        call.reliable.next_at = None


def _answer_deadline(call: SipCall) -> float | None:
    return call.answer_deadline


def _stop_answer(call: SipCall) -> None:
    call.answer_deadline = None


def _ack_deadline(call: SipCall) -> float | None:
    return call.retransmit.give_up_at if call.retransmit is not None else None


def _retransmit_at(call: SipCall) -> float | None:
    return call.retransmit.next_at if call.retransmit is not None else None


def _cancel_deadline(call: SipCall) -> float | None:
    return call.cancel_deadline


def _stop_cancel(call: SipCall) -> None:
    call.cancel_deadline = None


def _session_expires(call: SipCall) -> float | None:
    return call.session_expires


def _stop_expiry(call: SipCall) -> None:
    call.session_expires = None


def _refresh_by_update(call: SipCall) -> bool:
    """RFC 4028 §10: UPDATE when the peer allows it (or when we have no offer to repeat)."""
    allow = call.peer_allow
    return (allow is not None and "UPDATE" in allow) or call.local_sdp is None


def _refresh_by_update_at(call: SipCall) -> float | None:
    return call.refresh_at if _refresh_by_update(call) else None


def _refresh_by_reinvite_at(call: SipCall) -> float | None:
    return None if _refresh_by_update(call) else call.refresh_at


def _stop_refresh(call: SipCall) -> None:
    call.refresh_at = None


#: the call's timers in the order they fire when due together: input, deadline, disarm
CALL_TIMERS: tuple[
    tuple[CallInput, Callable[[SipCall], float | None], Callable[[SipCall], None]], ...
] = (
    (CallInput.TIMER_NO_ANSWER, _answer_deadline, _stop_answer),
    (CallInput.TIMER_ACK, _ack_deadline, _stop_2xx),
    (CallInput.TIMER_2XX_RETRANSMIT, _retransmit_at, _stop_2xx_tick),
    (CallInput.TIMER_PRACK, _prack_deadline, _stop_reliable),
    (CallInput.TIMER_1XX_RETRANSMIT, _resend_1xx_at, _stop_1xx_tick),
    (CallInput.TIMER_CANCEL, _cancel_deadline, _stop_cancel),
    (CallInput.TIMER_SESSION_EXPIRED, _session_expires, _stop_expiry),
    # RFC 4028 §10: UPDATE when the peer's Allow lists it, else re-INVITE
    (CallInput.TIMER_SESSION_REFRESH, _refresh_by_update_at, _stop_refresh),
    (CallInput.TIMER_SESSION_REFRESH_REINVITE, _refresh_by_reinvite_at, _stop_refresh),
)
#: per state, the timers that mean nothing there (disarmed on entering it)
_DISARM: dict[CallState, tuple[Callable[[SipCall], None], ...]] = {
    state: tuple(stop for inp, _, stop in CALL_TIMERS if (state, inp) not in TABLE)
    for state in CallState
}

ClientEntry = tuple[ClientTransaction, int | None, str]


class UaCore:
    """Registries, transactions, the call-state dispatcher and message helpers for one UA."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.out: list[tuple[bytes, Address]] = []
        self.events: deque[SipEvent] = deque()
        self.server_tx: dict[tuple[str, ...], ServerTransaction] = {}
        self.client_tx: dict[tuple[str, str], ClientEntry] = {}
        self.calls: dict[int, SipCall] = {}
        self.dialogs: dict[tuple[str, str, str], int] = {}  # dialog key → call
        self.invite_calls: dict[tuple[str, ...], int] = {}  # INVITE server tx key → call
        self.timer_dirty = True  # get_timer() recomputes; else it returns timer_cache
        self.timer_cache: float | None = None
        # Call-IDs of live calls (how many), then of ended ones (admission.py lets them pass)
        self.live_call_ids: dict[str, int] = {}
        self.recent_call_ids: OrderedDict[str, None] = OrderedDict()
        self._next_handle = 1
        self._steps: dict[str, Step] = {}
        #: the trunk an incoming request comes through ("" if none); SipEndpoint sets it
        self.trunk_of: Callable[[SipRequest, Address], str] = lambda _request, _addr: ""

    def media_for(self, trunk: str) -> MediaPolicy:
        """The media policy of a call through `trunk` ("": none): the trunk's, else ours."""
        return self.config.trunk_media.get(trunk, self.config.media) if trunk else self.config.media

    # --- the call registry

    def new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    def add_call(self, call: SipCall) -> None:
        self.calls[call.handle] = call
        call_id = call.invite.call_id
        self.live_call_ids[call_id] = self.live_call_ids.get(call_id, 0) + 1

    def release(self, call: SipCall) -> None:
        """The call ended: forget it everywhere (its Call-ID stays known for a while)."""
        call.retransmit = call.reliable = None
        call.session_expires = call.refresh_at = None
        if self.calls.pop(call.handle, None) is not None:
            call_id = call.invite.call_id
            left = self.live_call_ids.get(call_id, 1) - 1
            if left > 0:
                self.live_call_ids[call_id] = left
            else:
                self.live_call_ids.pop(call_id, None)
            # its retransmissions, ACKs and late BYEs still pass free for a while
            self.recent_call_ids[call_id] = None
            self.recent_call_ids.move_to_end(call_id)
            if len(self.recent_call_ids) > RECENT_CALL_IDS:
                self.recent_call_ids.popitem(last=False)
        for key in call.keys:
            self.dialogs.pop(key, None)
        if call.invite_key is not None:
            self.invite_calls.pop(call.invite_key, None)

    # --- the call state machine

    def register(self, steps: Mapping[str, Step]) -> None:
        """Steps by the names `call_state.ROWS` uses; one owner per name."""
        for name, step in steps.items():
            if name in self._steps:
                raise ValueError(f"step {name} registered twice")
            self._steps[name] = step

    @property
    def step_names(self) -> frozenset[str]:
        return frozenset(self._steps)

    def command(self, handle: int, trigger: Trigger) -> None:
        """Run a command; raises `SipCallStateError` if the call's state has no entry for it."""
        assert trigger.input in COMMANDS
        name = trigger.input.value
        call = self.calls.get(handle)
        if call is None:
            raise SipCallStateError(f"{name}: no call {handle}")
        if (call.state, trigger.input) not in TABLE:
            raise SipCallStateError(f"{name} not allowed in state {call.state.value}")
        self.timer_dirty = True
        self.fire(call, trigger)

    def fire(self, call: SipCall, trigger: Trigger) -> None:
        """Apply one input to a call: the table's steps, then its next state. An input the
        table has no entry for is reported (`UnexpectedInput`; a request is answered 500)."""
        entry = TABLE.get((call.state, trigger.input))
        if entry is None:
            self._unexpected(call, trigger)
            return
        next_state, steps = entry
        for name in steps:
            if self._steps[name](call, trigger) is False:
                return  # refused: answered with an error, the call stays as it was
        call.state = next_state
        if next_state is CallState.ENDED:
            self.release(call)
            return
        for stop in _DISARM[next_state]:
            stop(call)

    def _unexpected(self, call: SipCall, trigger: Trigger) -> None:
        if trigger.input in REQUESTS and trigger.tx is not None:
            self.tx_respond(trigger.tx, 500, trigger.now)
        self.events.append(
            UnexpectedInput("call", call.state.value, trigger.input.value, call.handle)
        )

    def transaction_error(self, exc: TransactionStateError) -> None:
        """A transaction's table had no entry for an input (a TU bug): reported."""
        self.events.append(UnexpectedInput(exc.machine, exc.state, exc.input))

    def calls_timer(self) -> float | None:
        """The earliest deadline of any call: those of `CALL_TIMERS`, read inline because
        `get_timer()` asks every call after every message."""
        times: list[float] = []
        for call in self.calls.values():
            rt = call.retransmit
            if rt is not None:
                times.append(rt.give_up_at)
                if rt.next_at is not None:
                    times.append(rt.next_at)
            rel = call.reliable
            if rel is not None:
                times.append(rel.give_up_at)
                if rel.next_at is not None:
                    times.append(rel.next_at)
            for when in (
                call.answer_deadline,
                call.cancel_deadline,
                call.session_expires,
                call.refresh_at,
            ):
                if when is not None:
                    times.append(when)
        return min(times) if times else None

    def fire_timers(self, call: SipCall, now: float) -> None:
        """Fire the call's due timers in `CALL_TIMERS` order, each disarmed as it fires."""
        for input_, deadline, stop in CALL_TIMERS:
            if call.state is CallState.ENDED:
                return
            when = deadline(call)
            if when is not None and now >= when:
                stop(call)
                self.fire(call, Trigger(input_, now))

    # --- transactions

    def server(
        self, request: SipRequest, addr: Address, key: tuple[str, ...]
    ) -> NonInviteServerTransaction:
        tx = NonInviteServerTransaction(request, routing.response_addr(request, addr), self.out)
        self.server_tx[key] = tx
        return tx

    def invite_server(
        self, request: SipRequest, addr: Address, key: tuple[str, ...]
    ) -> InviteServerTransaction:
        tx = InviteServerTransaction(request, routing.response_addr(request, addr), self.out)
        self.server_tx[key] = tx
        return tx

    def start_client(
        self, request: SipRequest, addr: Address, handle: int | None, purpose: str, now: float
    ) -> None:
        """Send a request in a new client transaction; its responses and timeout come back to
        the call by `purpose` (invite, reinvite, bye, refer, cancel, update, info)."""
        ctx: ClientTransaction
        if request.method == "INVITE":
            ctx = InviteClientTransaction(request, addr, self.out)
        else:
            ctx = NonInviteClientTransaction(request, addr, self.out)
        self.client_tx[(ctx.branch, request.method)] = (ctx, handle, purpose)
        ctx.start(now)

    # --- how we name ourselves

    def hostport(self, transport: str = "udp") -> str:
        c = self.config
        return routing.hostport(c.host, c.port, c.tls_port, transport)

    def via(self, dest: Address) -> str:
        alias = dest.transport == "tls" and not self.config.tls_port
        return routing.via(self.hostport(dest.transport), dest, routing.new_branch(), alias)

    def contact(self, dest: Address, call: SipCall | None = None, *, sips: bool = False) -> str:
        """Our Contact towards `dest`: the port and transport of the transport that carries it;
        sips: over TLS when the call (or `sips`, before it exists) has a sips: Request-URI."""
        ours = self.hostport(dest.transport)
        sips = sips or (call is not None and call.sips)
        return routing.contact(self.config.user, ours, dest, sips)

    # --- responses

    def tx_respond(
        self,
        tx: ServerTransaction,
        status: int,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str | None = None,
    ) -> None:
        """Answer a request that is no call's INVITE, in its transaction."""
        to_tag = routing.new_tag() if status > 100 else None
        response = make_response(
            tx.request,
            status,
            reason or REASONS.get(status, "Unknown"),
            to_tag=to_tag,
            headers=headers,
            body=body,
        )
        tx.send_response(response, now)

    def call_response(
        self,
        call: SipCall,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        request: SipRequest | None = None,
    ) -> SipResponse:
        """A response to the call's INVITE (or a re-INVITE of it), with our tag."""
        extra: list[tuple[str, str]] = []
        if 100 < status < 300:
            # §12.1.1: a response that makes a dialog copies Record-Route, in order, so that
            # in-dialog requests come back through the proxies (Kamailio in front of us)
            invite = request or call.invite
            extra = [
                *(("Record-Route", rr) for rr in invite.headers.get_all("Record-Route")),
                ("Contact", self.contact(call.peer, call)),
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

    def respond_invite(
        self, call: SipCall, status: int, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Answer the call's INVITE in its server transaction."""
        assert call.ist is not None
        call.ist.send_response(self.call_response(call, status, headers), now)

    def stateless(
        self,
        request: SipRequest,
        addr: Address,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A final response with no transaction (cheap refusals; §8.2 checks), reported."""
        response = make_response(
            request,
            status,
            REASONS.get(status, "Unknown"),
            to_tag=routing.new_tag(),
            headers=headers,
        )
        self.out.append((response.serialize(), routing.response_addr(request, addr)))
        self.events.append(RequestRejected(reason, request.method, status, addr))

    # --- requests

    def send_in_dialog(
        self,
        call: SipCall,
        method: str,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """A request in the call's dialog, in its own client transaction."""
        assert call.dialog is not None
        dest = routing.target_addr(call.peer, call.dialog)
        request = call.dialog.create_request(
            method, self.via(dest), self.contact(dest, call), headers=headers, body=body
        )
        self.start_client(request, dest, call.handle, _purpose(method), now)

    def resend_in_dialog(
        self,
        call: SipCall,
        sent: SipRequest,
        now: float,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        """Our in-dialog request `sent` again, with `headers` set, the next CSeq and a new
        branch (a challenge answered, RFC 3261 §22.2; a 422 answered, RFC 4028 §7.3)."""
        assert call.dialog is not None
        dest = routing.target_addr(call.peer, call.dialog)
        call.dialog.local_seq += 1
        h = sent.headers.copy()
        h.set("Via", self.via(dest))
        h.set("CSeq", f"{call.dialog.local_seq} {sent.method}")
        for name, value in headers:
            h.set(name, value)
        request = SipRequest(sent.method, sent.uri, h, sent.body)
        self.start_client(request, dest, call.handle, _purpose(sent.method), now)


def _purpose(method: str) -> str:
    """The purpose our in-dialog request's responses are routed by (see `start_client`)."""
    return {"INVITE": "reinvite"}.get(method, method.lower())


def sdp_of(message: SipRequest | SipResponse) -> SessionDescription | None:
    """The message's SDP body (or SDP part of a multipart body), None if it has none or it
    does not parse."""
    try:
        body = session_body(message)
        return SessionDescription.parse(body) if body is not None else None
    except (SdpError, SipParseError):
        return None


def offer_body(message: SipRequest | SipResponse) -> bytes:
    """The SDP bytes of a message with a body: the application/sdp part of a multipart one
    (RFC 5621); else the body as it is (which then fails to parse as SDP: 400)."""
    try:
        return session_body(message) or message.body
    except SipParseError:
        return message.body
