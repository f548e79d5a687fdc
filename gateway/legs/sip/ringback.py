"""Ringback as early media: what a caller hears after our 183 while the provider connects.

`Ringback` ticks an RTP endpoint on the media clock before the call exists (`sip_early_media`):
each packet time it drains the caller's audio (which nobody hears yet) and sends one frame of
the ringback cadence, precomputed once per codec and packet time, so the hot path only slices
bytes. `stop()` hands the endpoint, with its sequence numbers and timestamps running on, to the
call's `SipLeg`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import telcodecs

from gateway.media.clock import MediaClock, Outbox
from gateway.media.convert import encode
from gateway.media.format import PCMA_8K, PCMU_8K
from gateway.rtp.transport import RtpEndpoint

#: North American ringback (ANSI T1.401): 440 + 480 Hz, 2 s on, 4 s off
RINGBACK_HZ = (440, 480)
RINGBACK_ON_MS, RINGBACK_OFF_MS = 2000, 4000
_AMPLITUDE = 0.12  # each of the two tones: about -16 dBFS together


@cache
def ringback_frames(codec: str, frame_ms: int) -> tuple[bytes, ...]:
    """One cadence of ringback in `codec` (pcmu/pcma), cut into `frame_ms` frames."""
    fmt = PCMA_8K if codec == "pcma" else PCMU_8K
    cadence = [(hz, RINGBACK_ON_MS) for hz in RINGBACK_HZ]
    pcm = sum(
        telcodecs.tone_pattern([tone, (0, RINGBACK_OFF_MS)], 8000, _AMPLITUDE).astype(np.int32)
        for tone in cadence
    )
    data = encode(np.asarray(pcm, dtype=np.int16), fmt)
    n = 8 * frame_ms
    return tuple(data[i : i + n] for i in range(0, len(data) - n + 1, n))


class Ringback:
    """Plays ringback into an RTP endpoint on the media clock until `stop()`."""

    def __init__(self, rtp: RtpEndpoint, clock_for: Callable[[int], MediaClock]) -> None:
        self.rtp = rtp
        self.session = rtp.session
        self._frames = ringback_frames(self.session.codec, self.session.ptime_ms)
        self._next = 0
        self._clock: MediaClock | None = clock_for(self.session.ptime_ms)
        self._send = rtp.send
        self._clock.add(self)

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        self.session.read_frame(now)  # the caller's audio before the answer: heard by nobody
        frames = self._frames
        payload = frames[self._next]
        self._next = (self._next + 1) % len(frames)
        datagram = self.session.packetize(payload, now)
        if datagram is not None:
            outbox.add(self._send, datagram)

    def stop(self) -> None:
        """Stop playing (safe to call twice); the endpoint stays open for the call."""
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
