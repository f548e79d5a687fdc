"""RFC 4733 telephone-events: the payload, a receiver that yields one digit per event, a sender.

Receiving (§2.5.2): an event is identified by its RTP timestamp. It ends with the E bit or, when
the end packets are lost, after `timeout` seconds without an update. The marker bit is ignored
on purpose: some carriers never set it. The redundant end packets (§2.5.1.4) and stragglers of
an event already reported are ignored by timestamp, so each key press gives exactly one digit.

Sending (§2.5.1): the first packet has the marker bit set, updates follow every ptime with a
growing duration, and the final packet is sent three times; all carry the event's start
timestamp. The caller (the RTP session) puts them on its media stream's sequence numbers.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from gateway.errors import DtmfError, RtpParseError

__all__ = [
    "DTMF_EVENTS",
    "DtmfDigitReceived",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
]

#: Event codes 0-15 (RFC 4733 §3.2) as digits.
DTMF_EVENTS: Final = "0123456789*#ABCD"
_EVENT: Final = struct.Struct("!BBH")
_MAX_DURATION: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-octet telephone-event payload (§2.3). `reserved` is the R bit, kept for round trips."""

    event: int
    end: bool
    volume: int
    duration: int
    reserved: bool = False

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < 4:
            raise RtpParseError("event_short", f"{len(data)} bytes")
        event, flags, duration = _EVENT.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration, bool(flags & 0x40))

    def serialize(self) -> bytes:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise ValueError("telephone-event field out of range")
        flags = (0x80 if self.end else 0) | (0x40 if self.reserved else 0) | self.volume
        return _EVENT.pack(self.event, flags, self.duration)

    def __bytes__(self) -> bytes:
        return self.serialize()

    @property
    def digit(self) -> str | None:
        """'0'-'9', '*', '#', 'A'-'D', or None for other events (flash, tones)."""
        return DTMF_EVENTS[self.event] if self.event < 16 else None


@dataclass(frozen=True, slots=True)
class DtmfDigitReceived:
    """A digit the far end sent as an RFC 4733 event. `ended_by`: end_bit, timeout or next."""

    digit: str
    duration_ms: int
    ended_by: str = "end_bit"


class DtmfReceiver:
    """Turns telephone-event packets into one `DtmfDigitReceived` per key press (sans-I/O)."""

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.2) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._timestamp: int | None = None  # the event in progress
        self._event = 0
        self._duration = 0
        self._last_seen = 0.0
        self._finished: deque[int] = deque(maxlen=16)  # timestamps already reported
        self.ignored = 0  # non-digit events and stragglers of finished events

    def receive(self, timestamp: int, event: TelephoneEvent, now: float) -> list[DtmfDigitReceived]:
        """Feed one packet's payload; returns the digits that completed (usually none)."""
        if event.event >= 16 or timestamp in self._finished:
            self.ignored += 1
            return []
        out: list[DtmfDigitReceived] = []
        if self._timestamp is not None and (
            timestamp != self._timestamp or event.event != self._event
        ):
            out.append(self._finish("next"))  # a new event began before the old one ended
        if self._timestamp is None:
            self._timestamp = timestamp
            self._event = event.event
            self._duration = 0
        self._duration = max(self._duration, event.duration)
        self._last_seen = now
        if event.end:
            out.append(self._finish("end_bit"))
        return out

    def get_timer(self) -> float | None:
        return self._last_seen + self.timeout if self._timestamp is not None else None

    def handle_timer(self, now: float) -> list[DtmfDigitReceived]:
        """End an event whose updates stopped without an end packet (lost end packets)."""
        if self._timestamp is not None and now >= self._last_seen + self.timeout:
            return [self._finish("timeout")]
        return []

    def reset(self) -> None:
        """Forget the event in progress (SSRC change)."""
        self._timestamp = None
        self._finished.clear()

    def _finish(self, ended_by: str) -> DtmfDigitReceived:
        assert self._timestamp is not None
        self._finished.append(self._timestamp)
        self._timestamp = None
        return DtmfDigitReceived(
            DTMF_EVENTS[self._event], self._duration * 1000 // self.clock_rate, ended_by
        )


class DtmfSender:
    """Produces the telephone-event payloads of queued digits, one per ptime tick (sans-I/O).

    Call `next_packet(media_timestamp)` once per tick: it returns `(payload, marker, timestamp)`
    for an event packet, or None when the tick should carry audio (idle, or the gap between
    digits).
    """

    END_PACKETS: Final = 3

    def __init__(
        self, clock_rate: int = 8000, ptime_ms: int = 20, volume: int = 10, gap_ms: int = 60
    ) -> None:
        self.clock_rate = clock_rate
        self.frame_samples = clock_rate * ptime_ms // 1000
        self.volume = volume
        self.gap_ticks = max(1, -(-gap_ms // ptime_ms))
        self._queue: deque[tuple[int, int]] = deque()  # (event, duration in samples)
        self._event = -1
        self._timestamp = 0
        self._duration = 0  # samples sent so far
        self._total = 0
        self._ends_left = 0
        self._gap_left = 0
        self.sent_digits = 0

    def queue(self, digit: str, duration_ms: int = 100) -> None:
        """Queue one digit; raises DtmfError for anything but 0-9 * # A-D."""
        if len(digit) != 1 or digit.upper() not in DTMF_EVENTS:
            raise DtmfError(f"not a DTMF digit: {digit!r}")
        duration_ms = max(40, min(duration_ms, 5000))
        samples = min(duration_ms * self.clock_rate // 1000, _MAX_DURATION)
        self._queue.append((DTMF_EVENTS.index(digit.upper()), samples))

    @property
    def active(self) -> bool:
        """True while an event is being sent or digits are queued."""
        return self._event >= 0 or bool(self._queue) or self._gap_left > 0

    def clear(self) -> None:
        self._queue.clear()
        self._event = -1
        self._gap_left = 0

    def next_packet(self, media_timestamp: int) -> tuple[bytes, bool, int] | None:
        if self._event < 0:
            if self._gap_left > 0:
                self._gap_left -= 1
                return None
            if not self._queue:
                return None
            self._event, self._total = self._queue.popleft()
            self._timestamp = media_timestamp
            self._duration = 0
            self._ends_left = self.END_PACKETS
            marker = True
        else:
            marker = False
        if self._duration < self._total:
            self._duration = min(self._duration + self.frame_samples, self._total)
        end = self._duration >= self._total
        payload = _EVENT.pack(self._event, (0x80 if end else 0) | self.volume, self._duration)
        timestamp = self._timestamp
        if end:
            self._ends_left -= 1
            if self._ends_left == 0:
                self._event = -1
                self.sent_digits += 1
                self._gap_left = self.gap_ticks
        return payload, marker, timestamp
