"""Exceptions raised by the RTP package.

    RtpError                      base of everything below
    ├── RtpParseError (ValueError)   a packet that is not valid RTP, RTCP or RFC 4733
    ├── PortsExhausted            the RTP port pool has no free pair left
    └── DtmfError (ValueError)    a digit or duration we cannot send

The sans-I/O session never raises on received bytes: it counts and drops. Parse errors surface
only to callers of the `parse()` classmethods.
"""

from __future__ import annotations

__all__ = ["DtmfError", "PortsExhausted", "RtpError", "RtpParseError"]


class RtpError(Exception):
    """Base class of the RTP package's exceptions."""


class RtpParseError(RtpError, ValueError):
    """Bytes that are not a valid packet. `reason` is a short bounded token for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PortsExhausted(RtpError):
    """Every RTP/RTCP port pair in the pool is in use (or could not be bound)."""


class DtmfError(RtpError, ValueError):
    """A DTMF digit or duration that cannot be sent as an RFC 4733 event."""
