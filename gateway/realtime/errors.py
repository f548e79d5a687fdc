"""Exceptions raised by the Realtime client.

The hierarchy::

    RealtimeError                 base of everything raised by gateway.realtime
    ├── ConnectError              the WebSocket could not be opened (status, retryable)
    ├── SessionSetupError         session.created/updated never came, or session.update was refused
    ├── ProtocolError             the peer broke the protocol (bad JSON, event in the wrong state)
    ├── UnsupportedEventError     the provider profile does not support this client event
    └── SessionClosed             the session is closed; nothing more can be sent

Messages never contain credentials: URLs are shown without their query and headers are never
included.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "ConnectError",
    "ProtocolError",
    "RealtimeError",
    "SessionClosed",
    "SessionSetupError",
    "UnsupportedEventError",
]


class RealtimeError(Exception):
    """Base class of every error raised by `gateway.realtime`."""


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
