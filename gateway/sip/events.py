"""What the SIP user agent tells the application: frozen dataclasses, past-tense names.

`SipEndpoint.next_event()` returns them in order. Every refusal is a `RequestRejected` whose
`reason` is one of `REJECT_REASONS` (the adapter counts and logs it); a far-end or timer input
the call state table (`call_state.py`) or a transaction table has no entry for is an
`UnexpectedInput`, never swallowed (the adapter logs and counts it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.sip.sdp import Negotiated, SessionDescription
from gateway.sip.transaction import Address


@dataclass(frozen=True, slots=True)
class SipEvent:
    """Base class of every endpoint event."""


@dataclass(frozen=True, slots=True)
class IncomingCallReceived(SipEvent):
    """An INVITE passed policy. Answer with accept/reject/ring. `offer` None: late offer.
    `header_list` is the INVITE's header lines in order (repeated ones too; credentials left
    out and sizes capped: uas.exposed_headers); `headers` the first value of each name."""

    call: int
    request_uri: str
    from_uri: str
    to_uri: str
    headers: Mapping[str, str]
    offer: SessionDescription | None
    source: Address
    header_list: tuple[tuple[str, str], ...] = ()


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
    """A provisional response to our INVITE; `early` is its SDP (early media), if any."""

    call: int
    status: int
    early: SessionDescription | None = None


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
class OutboundCallFailedOver(SipEvent):
    """Our INVITE moved to the next target of its trunk's name (RFC 3263 §4.3) after `reason`
    (`timeout`, `503` or `transport`) at `failed`; the call goes on, to `destination`."""

    call: int
    reason: str
    failed: Address
    destination: Address


@dataclass(frozen=True, slots=True)
class CallTerminated(SipEvent):
    """The endpoint ended the call itself: ack_timeout, session_expired, request_timeout."""

    call: int
    reason: str


@dataclass(frozen=True, slots=True)
class RegistrationUpdated(SipEvent):
    """A trunk's registration (RFC 3261 §10.2) changed state or one REGISTER came to a
    `result` (registration.RESULTS; None: a state change alone). `state` is one of
    registration.REPORTED_STATES; `expires` the binding's granted life when registered;
    `retry_in` the wait before the next attempt after a failure."""

    trunk: str
    state: str
    result: str | None
    status: int
    reason: str
    expires: int
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class RequestRejected(SipEvent):
    """A request refused or dropped (status 0) with a bounded `reason` token."""

    reason: str
    method: str
    status: int
    source: Address


@dataclass(frozen=True, slots=True)
class UnexpectedInput(SipEvent):
    """An input a state table has no entry for: a core bug, reported instead of swallowed.

    `machine` is `call` (the call state table; `call` is its handle), `registration`
    (registration.py's table), or the transaction kind
    (`invite_server`, `non_invite_server`, `invite_client`, `non_invite_client`); `state` and
    `input` are the table's own names. A request that met no entry was answered 500."""

    machine: str
    state: str
    input: str
    call: int | None = None


@dataclass(frozen=True, slots=True)
class KeepAliveResult(SipEvent):
    """A keep-alive towards `trunk` (keepalive.py): `result` ok, error (a 5xx/6xx answer),
    timeout, or sent (a CRLF ping, which has no answer); `status` the answer's, 0 if none.
    `changed`: the trunk went from answering to failing or back."""

    trunk: str
    result: str
    status: int
    changed: bool


REJECT_REASONS = (
    "not_allowed",
    "provider_unavailable",
    "auth_required",
    "auth_failed",
    "rate_limited",
    "scanner",
    "capacity",
    "draining",
    "overload",
    "malformed",
    "no_codec",
    "srtp_unsupported",
    "srtp_required",
    "unsupported",
    "unknown_dialog",
    "not_implemented",
    "too_many_hops",
    "rejected",
    "server_error",
)

MACHINES = (
    "call",
    "registration",
    "invite_server",
    "non_invite_server",
    "invite_client",
    "non_invite_client",
)
