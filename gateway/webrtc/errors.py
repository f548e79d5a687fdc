"""Errors of the WebRTC leg and its signalling.

    WebRtcError                 base class; `status` is the HTTP status to answer with
    ├── Unauthorized            401: no credential, a wrong one, or an expired token
    ├── Forbidden               403: a browser origin that is not allowed (CORS)
    ├── BadOffer                400: the offer is not SDP we can answer
    └── CallRejected            the call was refused: 503 at capacity, draining, or the AI
                                provider unavailable (`reason` says which)

Every one carries a message meant for a person; it never contains a credential.
"""

from __future__ import annotations


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
