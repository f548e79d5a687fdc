"""Every exception class of the gateway, in families: one root each, the whole tree drawn here.

Catch a family's root to handle any failure of its kind; a subclass says which one it was. An
error that says what to answer carries it as an attribute: `status_hint` the SIP status (as
h11's `error_status_hint`), `status` the HTTP status, `code` the Realtime `error` event's code
(ConnectError's `status` and SessionSetupError's `code` are the provider's answer, not ours).
An error about a malformed input value is also a ValueError where callers catch it as one; no
other builtin is mixed in. Messages are meant for a person and never contain a credential.

This module imports nothing from the gateway, so every layer may raise and catch these. A
private exception a module raises and catches itself stays in that module, under a root here
(the local provider's `_Bad`, the SIP resolver's `_Failed`). telcodecs, below the gateway,
defines none: it raises ValueError.
`tests/foundation/test_errors.py` checks that every exception class of gateway/ and telcodecs
descends from a root drawn below, and that the drawing is the classes' real tree.

    ConfigError (ValueError)          a setting is missing, malformed or inconsistent
    StartupError                      a listener or component could not start
    SipError                          SIP and SDP (gateway.sip)
    ├── SipParseError                 malformed SIP: status_hint (400, 413, 505...), reason, request
    ├── SdpError (ValueError)         malformed SDP: status_hint 400
    │   └── NotAcceptable             no codec or stream in common: 488, reason, warning
    │       ├── EncryptedMediaOnly    every audio stream offered is SRTP we cannot answer: 488
    │       └── SrtpRequired          srtp = mandatory and no SDES-SRTP stream offered: 488
    ├── TransactionStateError         an input a transaction's state table does not allow
    ├── SipCallStateError             a command the user agent's call state does not allow
    └── _Failed                       resolver: a DNS query with no usable answer (RFC 3263)
    RtpError                          RTP, RTCP and RFC 4733 (gateway.rtp)
    ├── RtpParseError (ValueError)    bytes that are not valid RTP, RTCP or RFC 4733: reason
    ├── PortsExhausted                the RTP port pool has no free pair left
    └── DtmfError (ValueError)        a digit or duration that cannot be sent
    RealtimeError                     the Realtime session (gateway.realtime)
    ├── ConnectError                  the WebSocket could not be opened: status, retryable
    ├── SessionSetupError             no session.created/updated, or session.update refused: code
    ├── ProtocolError                 the peer broke the protocol (bad JSON, event out of state)
    ├── UnsupportedEventError         the provider does not support this client event
    ├── SessionClosed                 the session is closed; nothing more can be sent
    ├── ProviderUnavailable           the provider circuit breaker is open: not even tried
    └── _Bad                          local provider: a client event answered with `error`: code
    CallError                         calls (gateway.call)
    ├── AdmissionError                a new call is not taken: status 503, reason, retry_after
    ├── OutboundError                 an outbound call could not be placed: status (HTTP)
    ├── CallStateError                an input the Call's lifecycle table has no entry for
    ├── CallEndedError                an action asked of a call that has ended
    ├── CallDeclined                  an inbound call refused by its app or the fallback: status
    ├── CallAlreadyDecided            a second accept/reject of a webhook-mode call (409)
    └── UnknownEventName (ValueError)  a handler registered for a name that names no event
    WebRtcError                       the WebRTC leg and its signalling: status (HTTP), message
    ├── Unauthorized                  401: no credential, a wrong one, or an expired token
    ├── Forbidden                     403: a browser origin that is not allowed (CORS)
    ├── BadOffer                      400 (413 too large): the offer is not SDP we can answer
    ├── CallRejected                  503 at capacity, draining, no port, provider down: reason
    └── NoFreePort                    503: every UDP port of the ICE port range is taken
    ApiClientError                    `gateway call`/`calls`: a running gateway's API failed
"""

from __future__ import annotations

import enum
from http import HTTPStatus
from typing import Any

# --- settings and start-up ---------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent; the message names it."""


class StartupError(Exception):
    """A listener or component could not start; the message is one line for the operator."""


# --- SIP and SDP --------------------------------------------------------------------------------


class SipError(Exception):
    """Base class of the SIP and SDP errors (`gateway.sip`)."""


class SipParseError(SipError):
    """Malformed SIP input. `reason` is a short phrase fit for a 400 reason phrase.

    `status_hint` is the status to answer (400; 413/513 too large, 505 version); `request` is
    the `SipRequest` parsed so far (start line and headers) when there is one to answer (typed
    Any: this module imports nothing from the gateway)."""

    def __init__(self, reason: str, status_hint: int = 400, request: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.request = request


class SdpError(SipError, ValueError):
    """Malformed SDP; `status_hint` is the SIP status to answer."""

    status_hint = 400


class NotAcceptable(SdpError):
    """No codec or stream in common (RFC 3264 §6): answer 488 Not Acceptable Here.

    `reason` is the bounded refusal token (metrics label), `warning` the RFC 3261 §20.43 code
    for the Warning header."""

    status_hint = 488
    reason = "no_codec"
    warning = 304  # Media type not available


class EncryptedMediaOnly(NotAcceptable):
    """Every audio line offered is SRTP (RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP(F)), which the
    gateway does not do yet: 488."""

    reason = "srtp_unsupported"
    warning = 302  # Incompatible transport protocol (the m= line's proto)


class SrtpRequired(NotAcceptable):
    """SRTP is mandatory (the `srtp` setting) and no SDES-SRTP line we can answer was offered
    (or answered): 488."""

    reason = "srtp_required"
    warning = 302  # Incompatible transport protocol


class TransactionStateError(SipError):
    """An input the transaction's state table does not allow. `machine`, `state` and `input`
    name it in the table's own words (the endpoint reports it as `UnexpectedInput`)."""

    def __init__(self, machine: str, state: str, input_: str) -> None:
        super().__init__(f"{machine}: {input_} not allowed in {state}")
        self.machine = machine
        self.state = state
        self.input = input_


class SipCallStateError(SipError):
    """A command not allowed in the SIP call's current state, or an unknown call handle."""


# --- RTP ----------------------------------------------------------------------------------------


class RtpError(Exception):
    """Base class of the RTP package's exceptions.

    The sans-I/O session never raises on received bytes: it counts and drops. Parse errors
    surface only to callers of the `parse()` classmethods."""


class RtpParseError(RtpError, ValueError):
    """Bytes that are not a valid packet. `reason` is a short bounded token for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PortsExhausted(RtpError):
    """Every RTP/RTCP port pair in the pool is in use (or could not be bound)."""


class DtmfError(RtpError, ValueError):
    """A DTMF digit or duration that cannot be sent as an RFC 4733 event."""


# --- Realtime -----------------------------------------------------------------------------------


class RealtimeError(Exception):
    """Base class of every error raised by `gateway.realtime`.

    Messages never contain credentials: URLs are shown without their query and headers are
    never included."""


class ConnectError(RealtimeError):
    """Opening the WebSocket failed.

    `status` is the HTTP status the provider answered the upgrade with, None when no HTTP answer
    came (DNS, TCP, TLS, timeout). `retryable` is False for 4xx answers: retrying cannot help.
    """

    def __init__(self, provider: str, status: int | None = None, reason: str = "") -> None:
        self.provider = provider
        self.status = status
        self.retryable = status is None or status >= 500
        if status is not None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "HTTP error"
            text = f"{status} {phrase} from provider {provider}"
        else:
            text = f"cannot connect to provider {provider}"
        super().__init__(f"{text}: {reason}" if reason else text)


class SessionSetupError(RealtimeError):
    """The session handshake failed: a timeout, or an `error` answering session.update."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class ProtocolError(RealtimeError):
    """The peer sent something the protocol does not allow."""


class UnsupportedEventError(RealtimeError):
    """The selected provider does not support this client event (e.g. Yandex: input clear)."""


class SessionClosed(RealtimeError):
    """The session is closed (by `close()`, or lost after failed reconnects)."""


class ProviderUnavailable(RealtimeError):
    """A call refused without trying the provider: the breaker is open."""


# --- calls --------------------------------------------------------------------------------------


class CallError(Exception):
    """Base class of the errors of calls (`gateway.call`)."""


class AdmissionError(CallError):
    """A new call cannot be taken: `status` (503) and `reason` (capacity, draining)."""

    status = 503

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OutboundError(CallError):
    """An outbound call could not be placed: `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CallStateError(CallError):
    """An input the Call's lifecycle table has no transition for (`state` and `input` are
    the table's `CallState` and `CallInput`)."""

    def __init__(self, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"{event.value} not allowed in call state {state.value}")
        self.state = state
        self.input = event


class CallEndedError(CallError):
    """An action was asked of a call that has ended."""


class CallDeclined(CallError):
    """An inbound call refused by its app (`/v1/realtime/calls/{id}/reject`) or by the
    webhook fallback: the SIP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"call declined with {status}: {reason}")
        self.status = status
        self.reason = reason


class CallAlreadyDecided(CallError):
    """A second accept/reject for a webhook-mode call (the API's 409)."""


class UnknownEventName(CallError, ValueError):
    """A scenario registered a handler for an event name (or object) that names no event it
    could ever receive; raised at registration, so the mistake is never silent."""


# --- WebRTC -------------------------------------------------------------------------------------


class WebRtcError(Exception):
    """Base class: `status` is the HTTP status, `message` a sentence for the client."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class Unauthorized(WebRtcError):
    """No usable credential came with the request."""

    status = 401


class Forbidden(WebRtcError):
    """The request came from a browser origin that is not allowed."""

    status = 403


class BadOffer(WebRtcError):
    """The SDP offer (or the body carrying it) cannot be answered."""

    status = 400


class CallRejected(WebRtcError):
    """The call was refused; `status` (e.g. 503), `retry_after` and `reason` go to the client.

    `reason` is a bounded token: capacity, draining, no_port or provider_unavailable (the page
    tells the last one apart: the AI provider is unreachable, not the agent busy)."""

    status = 503

    def __init__(
        self,
        status: int,
        message: str,
        retry_after: int | None = None,
        reason: str = "capacity",
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after
        self.reason = reason


class NoFreePort(WebRtcError):
    """Every port tried in the configured ICE UDP range was taken (the leg answers it as
    CallRejected 503, reason no_port)."""

    status = 503


# --- the command line as a client of a running gateway -----------------------------------------


class ApiClientError(Exception):
    """`gateway call` / `gateway calls`: the gateway's HTTP API could not be reached, or it
    answered with an error; the message is one line for the operator (never the token)."""
