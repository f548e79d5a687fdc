"""Errors of the WebRTC leg and its signalling.

    WebRtcError                 base class; `status` is the HTTP status to answer with
    ├── Unauthorized            401: no credential, a wrong one, or an expired token
    ├── Forbidden               403: a browser origin that is not allowed (CORS)
    ├── BadOffer                400: the offer is not SDP we can answer
    └── CallRejected            the call manager refused the call (503 at capacity or draining)

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
    """The call manager refused the call; `status` (e.g. 503) and `retry_after` go to the client."""

    status = 503

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after
