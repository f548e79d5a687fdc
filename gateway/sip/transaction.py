"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted states) as explicit state tables.

Theory of operation: a transaction is fed inputs — requests/responses from the peer, responses
from the TU, timer expiries — each looked up in its class's `TABLE[(state, input)]`, which gives
the next state and an action. An input absent from the table raises `TransactionStateError`;
every peer input is present in every state (absorbed where the RFC says so), so only a TU bug
can raise. Timers are data: `get_timer()` is the earliest deadline, `handle_timer(now)` fires
what is due. Messages to send are appended to the shared `out` list as (bytes, Address).

Exceptions::

    TransactionStateError   an input not allowed in the current state (a TU bug)
"""

from __future__ import annotations

import enum
from typing import ClassVar, NamedTuple

from gateway.errors import TransactionStateError
from gateway.sip.message import Headers, SipRequest, SipResponse

T1 = 0.5
T2 = 4.0
T4 = 5.0


class Address(NamedTuple):
    """Where a message came from or goes: transport, host, port, and stream connection id."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    conn: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


class State(enum.Enum):
    TRYING = "trying"
    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026
    TERMINATED = "terminated"


Out = list[tuple[bytes, Address]]
ServerKey = tuple[str, ...]


def server_key(request: SipRequest) -> ServerKey:
    """§17.2.3 matching key; ACK and CANCEL map onto INVITE via `method` handling by caller."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith("z9hG4bK"):
        host, port = via.sent_by
        return (branch, host, str(port), method)
    # RFC 2543 peers: §17.2.3 fallback on the dialog-ish fields
    return (request.call_id, request.from_.tag or "", str(request.cseq.seq), str(via), method)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """§17.1.3: top Via branch plus CSeq method (ACK is never a client transaction)."""
    return (branch, method)


class _Transaction:
    TABLE: ClassVar[dict[tuple[State, str], tuple[State, str]]]
    MACHINE: ClassVar[str]  # its name in reports: invite_server, non_invite_client, ...

    def __init__(self, addr: Address, out: Out) -> None:
        self.addr = addr
        self.out = out
        self.reliable = addr.reliable
        self.state: State = State.TRYING
        self._timers: dict[str, float] = {}
        self.timed_out = False

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def get_timer(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    def handle_timer(self, now: float) -> None:
        while self._timers:
            name, when = min(self._timers.items(), key=lambda kv: kv[1])
            if when > now:
                return
            del self._timers[name]
            self._input("timer_" + name, now)

    def _input(self, name: str, now: float, message: SipRequest | SipResponse | None = None) -> str:
        try:
            new_state, action = self.TABLE[(self.state, name)]
        except KeyError:
            raise TransactionStateError(self.MACHINE, self.state.value, name) from None
        old = self.state
        self.state = new_state
        getattr(self, "_do_" + action)(now, message, old)
        # a timer that means nothing in the new state is cancelled (e.g. B once Proceeding)
        for timer in [t for t in self._timers if (new_state, "timer_" + t) not in self.TABLE]:
            del self._timers[timer]
        return action

    def _arm(self, name: str, when: float) -> None:
        self._timers[name] = when

    def _do_absorb(self, now: float, message: object, old: State) -> None:
        pass

    def _do_pass(self, now: float, message: object, old: State) -> None:
        pass

    def _do_none(self, now: float, message: object, old: State) -> None:
        pass

    def _do_timeout(self, now: float, message: object, old: State) -> None:
        self.timed_out = True


# --- server transactions


class ServerTransaction(_Transaction):
    """Common server half: remembers the request and the last response sent."""

    def __init__(self, request: SipRequest, addr: Address, out: Out) -> None:
        super().__init__(addr, out)
        self.request = request
        self.last_response: SipResponse | None = None
        self._last_bytes = b""

    def _send(self, response: SipResponse) -> None:
        self.last_response = response
        self._last_bytes = response.serialize()
        self.out.append((self._last_bytes, self.addr))

    def _do_resend(self, now: float, message: object, old: State) -> None:
        if self._last_bytes:
            self.out.append((self._last_bytes, self.addr))

    def _do_send(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._send(message)

    def send_response(self, response: SipResponse, now: float) -> None:
        """Send a response from the TU (§17.2.1/§17.2.2)."""
        kind = "send_1xx" if response.status < 200 else "send_2xx"
        if response.status >= 300:
            kind = "send_final"
        self._input(kind, now, response)

    def receive_request(self, request: SipRequest, now: float) -> bool:
        """A retransmission (or ACK) matched this transaction. True: the TU must see it."""
        name = "ack" if request.method == "ACK" else "request"
        return self._input(name, now, request) == "pass"


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 (+RFC 6026 §7.1 Accepted): timers G, H, I, L."""

    MACHINE: ClassVar[str] = "invite_server"
    TABLE: ClassVar[dict[tuple[State, str], tuple[State, str]]] = {
        (State.PROCEEDING, "request"): (State.PROCEEDING, "resend"),
        (State.PROCEEDING, "ack"): (State.PROCEEDING, "absorb"),
        (State.PROCEEDING, "send_1xx"): (State.PROCEEDING, "send"),
        (State.PROCEEDING, "send_2xx"): (State.ACCEPTED, "send_accepted"),
        (State.PROCEEDING, "send_final"): (State.COMPLETED, "send_completed"),
        (State.COMPLETED, "request"): (State.COMPLETED, "resend"),
        (State.COMPLETED, "ack"): (State.CONFIRMED, "confirm"),
        (State.COMPLETED, "timer_G"): (State.COMPLETED, "retransmit"),
        (State.COMPLETED, "timer_H"): (State.TERMINATED, "timeout"),
        (State.CONFIRMED, "request"): (State.CONFIRMED, "absorb"),
        (State.CONFIRMED, "ack"): (State.CONFIRMED, "absorb"),
        (State.CONFIRMED, "timer_I"): (State.TERMINATED, "none"),
        (State.ACCEPTED, "request"): (State.ACCEPTED, "absorb"),
        (State.ACCEPTED, "ack"): (State.ACCEPTED, "pass"),
        (State.ACCEPTED, "send_2xx"): (State.ACCEPTED, "send"),
        (State.ACCEPTED, "timer_L"): (State.TERMINATED, "none"),
        (State.TERMINATED, "request"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "ack"): (State.TERMINATED, "absorb"),
    }

    def __init__(self, request: SipRequest, addr: Address, out: Out) -> None:
        super().__init__(request, addr, out)
        self.state = State.PROCEEDING
        self._g_interval = T1

    def _do_send_accepted(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._send(message)
        self._arm("L", now + 64 * T1)

    def _do_send_completed(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._send(message)
        if not self.reliable:
            self._arm("G", now + T1)
        self._arm("H", now + 64 * T1)

    def _do_retransmit(self, now: float, message: object, old: State) -> None:
        self._do_resend(now, message, old)
        self._g_interval = min(2 * self._g_interval, T2)
        self._arm("G", now + self._g_interval)

    def _do_confirm(self, now: float, message: object, old: State) -> None:
        self._timers.pop("G", None)
        self._timers.pop("H", None)
        self._arm("I", now + (0 if self.reliable else T4))


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying, Proceeding, Completed (timer J)."""

    MACHINE: ClassVar[str] = "non_invite_server"
    TABLE: ClassVar[dict[tuple[State, str], tuple[State, str]]] = {
        (State.TRYING, "request"): (State.TRYING, "absorb"),
        (State.TRYING, "ack"): (State.TRYING, "absorb"),
        (State.TRYING, "send_1xx"): (State.PROCEEDING, "send"),
        (State.TRYING, "send_2xx"): (State.COMPLETED, "send_completed"),
        (State.TRYING, "send_final"): (State.COMPLETED, "send_completed"),
        (State.PROCEEDING, "request"): (State.PROCEEDING, "resend"),
        (State.PROCEEDING, "ack"): (State.PROCEEDING, "absorb"),
        (State.PROCEEDING, "send_1xx"): (State.PROCEEDING, "send"),
        (State.PROCEEDING, "send_2xx"): (State.COMPLETED, "send_completed"),
        (State.PROCEEDING, "send_final"): (State.COMPLETED, "send_completed"),
        (State.COMPLETED, "request"): (State.COMPLETED, "resend"),
        (State.COMPLETED, "ack"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "timer_J"): (State.TERMINATED, "none"),
        (State.TERMINATED, "request"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "ack"): (State.TERMINATED, "absorb"),
    }

    def _do_send_completed(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._send(message)
        self._arm("J", now + (0 if self.reliable else 64 * T1))


# --- client transactions


class ClientTransaction(_Transaction):
    """Common client half: sends the request, retransmits, matches responses."""

    def __init__(self, request: SipRequest, addr: Address, out: Out) -> None:
        super().__init__(addr, out)
        self.request = request
        self._bytes = request.serialize()
        self.branch = request.top_via.branch or ""
        self.final: SipResponse | None = None

    def start(self, now: float) -> None:
        self.out.append((self._bytes, self.addr))
        self._start_timers(now)

    def _start_timers(self, now: float) -> None:
        raise NotImplementedError

    def receive_response(self, response: SipResponse, now: float) -> bool:
        """A response matched this transaction. True: pass it to the TU."""
        raise NotImplementedError

    def _do_retransmit(self, now: float, message: object, old: State) -> None:
        self.out.append((self._bytes, self.addr))

    def _do_transport_error(self, now: float, message: object, old: State) -> None:
        self._timers.clear()

    def transport_error(self, now: float) -> bool:
        """§17.1.4: the request could not be sent. True: the transaction ended on it and the
        TU is to be told (as a 503, §8.1.3.1); False: it had its final response already."""
        return self._input("transport_error", now) == "transport_error"


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 (+RFC 6026 §7.2 Accepted): timers A, B, D, M."""

    MACHINE: ClassVar[str] = "invite_client"
    TABLE: ClassVar[dict[tuple[State, str], tuple[State, str]]] = {
        (State.CALLING, "timer_A"): (State.CALLING, "retransmit_a"),
        (State.CALLING, "timer_B"): (State.TERMINATED, "timeout"),
        (State.CALLING, "1xx"): (State.PROCEEDING, "pass"),
        (State.CALLING, "2xx"): (State.ACCEPTED, "accepted"),
        (State.CALLING, "final"): (State.COMPLETED, "completed"),
        (State.PROCEEDING, "1xx"): (State.PROCEEDING, "pass"),
        (State.PROCEEDING, "2xx"): (State.ACCEPTED, "accepted"),
        (State.PROCEEDING, "final"): (State.COMPLETED, "completed"),
        (State.COMPLETED, "1xx"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "2xx"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "final"): (State.COMPLETED, "resend_ack"),
        (State.COMPLETED, "timer_D"): (State.TERMINATED, "none"),
        (State.ACCEPTED, "1xx"): (State.ACCEPTED, "absorb"),
        (State.ACCEPTED, "2xx"): (State.ACCEPTED, "pass"),
        (State.ACCEPTED, "final"): (State.ACCEPTED, "absorb"),
        (State.ACCEPTED, "timer_M"): (State.TERMINATED, "none"),
        # §17.1.4: the transport could not carry it (refused, TLS handshake failed): the TU is
        # told at once (`transport_error`); after a final response it changes nothing
        (State.CALLING, "transport_error"): (State.TERMINATED, "transport_error"),
        (State.PROCEEDING, "transport_error"): (State.TERMINATED, "transport_error"),
        (State.COMPLETED, "transport_error"): (State.COMPLETED, "absorb"),
        (State.ACCEPTED, "transport_error"): (State.ACCEPTED, "absorb"),
        (State.TERMINATED, "transport_error"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "1xx"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "2xx"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "final"): (State.TERMINATED, "absorb"),
    }

    def __init__(self, request: SipRequest, addr: Address, out: Out) -> None:
        super().__init__(request, addr, out)
        self.state = State.CALLING
        self._a_interval = T1
        self._ack = b""

    def _start_timers(self, now: float) -> None:
        if not self.reliable:
            self._arm("A", now + T1)
        self._arm("B", now + 64 * T1)

    def _do_retransmit_a(self, now: float, message: object, old: State) -> None:
        self._do_retransmit(now, message, old)
        self._a_interval *= 2
        self._arm("A", now + self._a_interval)

    def _do_pass(self, now: float, message: object, old: State) -> None:
        self._timers.pop("A", None)

    def _do_accepted(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._timers.clear()
        self.final = message
        self._arm("M", now + 64 * T1)

    def _do_completed(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._timers.clear()
        self.final = message
        self._ack = build_ack_for_error(self.request, message).serialize()
        self.out.append((self._ack, self.addr))
        self._arm("D", now + (0 if self.reliable else 32.0))

    def _do_resend_ack(self, now: float, message: object, old: State) -> None:
        self.out.append((self._ack, self.addr))

    def receive_response(self, response: SipResponse, now: float) -> bool:
        kind = "1xx" if response.status < 200 else "2xx" if response.status < 300 else "final"
        action = self._input(kind, now, response)
        return action in ("pass", "accepted", "completed")


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying, Proceeding, Completed; timers E, F, K."""

    MACHINE: ClassVar[str] = "non_invite_client"
    TABLE: ClassVar[dict[tuple[State, str], tuple[State, str]]] = {
        (State.TRYING, "timer_E"): (State.TRYING, "retransmit_e"),
        (State.TRYING, "timer_F"): (State.TERMINATED, "timeout"),
        (State.TRYING, "1xx"): (State.PROCEEDING, "pass"),
        (State.TRYING, "2xx"): (State.COMPLETED, "completed"),
        (State.TRYING, "final"): (State.COMPLETED, "completed"),
        (State.PROCEEDING, "timer_E"): (State.PROCEEDING, "retransmit_e"),
        (State.PROCEEDING, "timer_F"): (State.TERMINATED, "timeout"),
        (State.PROCEEDING, "1xx"): (State.PROCEEDING, "pass"),
        (State.PROCEEDING, "2xx"): (State.COMPLETED, "completed"),
        (State.PROCEEDING, "final"): (State.COMPLETED, "completed"),
        (State.COMPLETED, "1xx"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "2xx"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "final"): (State.COMPLETED, "absorb"),
        (State.COMPLETED, "timer_K"): (State.TERMINATED, "none"),
        (State.TRYING, "transport_error"): (State.TERMINATED, "transport_error"),  # §17.1.4
        (State.PROCEEDING, "transport_error"): (State.TERMINATED, "transport_error"),
        (State.COMPLETED, "transport_error"): (State.COMPLETED, "absorb"),
        (State.TERMINATED, "transport_error"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "1xx"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "2xx"): (State.TERMINATED, "absorb"),
        (State.TERMINATED, "final"): (State.TERMINATED, "absorb"),
    }

    def __init__(self, request: SipRequest, addr: Address, out: Out) -> None:
        super().__init__(request, addr, out)
        self.state = State.TRYING
        self._e_interval = T1

    def _start_timers(self, now: float) -> None:
        if not self.reliable:
            self._arm("E", now + T1)
        self._arm("F", now + 64 * T1)

    def _do_retransmit_e(self, now: float, message: object, old: State) -> None:
        self._do_retransmit(now, message, old)
        # §17.1.2.2: doubling up to T2 while Trying, T2 once a provisional arrived
        self._e_interval = min(2 * self._e_interval, T2) if self.state is State.TRYING else T2
        self._arm("E", now + self._e_interval)

    def _do_completed(self, now: float, message: object, old: State) -> None:
        assert isinstance(message, SipResponse)
        self._timers.clear()
        self.final = message
        self._arm("K", now + (0 if self.reliable else T4))

    def receive_response(self, response: SipResponse, now: float) -> bool:
        kind = "1xx" if response.status < 200 else "2xx" if response.status < 300 else "final"
        return self._input(kind, now, response) in ("pass", "completed")


#: every input name of the four tables (a bounded label for reports)
INPUTS = tuple(
    sorted(
        {
            name
            for kind in (
                InviteServerTransaction,
                NonInviteServerTransaction,
                InviteClientTransaction,
                NonInviteClientTransaction,
            )
            for _, name in kind.TABLE
        }
    )
)


def build_ack_for_error(invite: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK for a non-2xx final response, part of the INVITE transaction."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("Route",):
        for value in invite.headers.get_all(name):
            headers.add(name, value)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    return SipRequest("ACK", invite.uri, headers)


def build_cancel(invite: SipRequest) -> SipRequest:
    """§9.1: CANCEL with the INVITE's Request-URI, top Via, Call-ID, From, To and CSeq number."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for value in invite.headers.get_all("Route"):
        headers.add("Route", value)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", invite.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return SipRequest("CANCEL", invite.uri, headers)
