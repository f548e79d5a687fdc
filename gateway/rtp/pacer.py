"""`FrameDeadlines`: absolute frame deadlines for a paced sender (sans-I/O).

Frame n is due at `start + n * period`. A tick asks how many frames are due; lateness is
measured against the deadline of the first of them. After a stall longer than `max_burst`
frames the deadlines skip ahead instead of bursting: a receiver's jitter buffer would drop a
burst anyway, and the RTP session advances its timestamps over the gap (see
`RtpSession.packetize`). Used by the shared media clock, one instance per process or per call.
"""

from __future__ import annotations

import math

__all__ = ["FrameDeadlines"]


class FrameDeadlines:
    """Deadlines `start + n * period` for n = 0, 1, 2, ..."""

    __slots__ = ("frame_index", "last_lateness", "max_burst", "period", "skipped", "start")

    def __init__(self, start: float, period: float, max_burst: int = 2) -> None:
        if period <= 0 or max_burst < 1:
            raise ValueError("period must be > 0 and max_burst >= 1")
        self.start = start
        self.period = period
        self.max_burst = max_burst
        self.frame_index = 0  # the next frame to produce
        self.skipped = 0  # frames given up after stalls
        self.last_lateness = 0.0

    @property
    def next_deadline(self) -> float:
        """When the next frame is due (arm the timer for this)."""
        return self.start + self.frame_index * self.period

    def take(self, now: float) -> int:
        """Frames to produce now (0..max_burst), advancing past them.

        `last_lateness` is set to how late the first of them is (seconds, >= 0).
        """
        deadline = self.next_deadline
        if now < deadline:
            return 0
        due = math.floor((now - deadline) / self.period) + 1
        if due > self.max_burst:
            skip = due - self.max_burst
            self.skipped += skip
            self.frame_index += skip
            due = self.max_burst
        self.last_lateness = now - self.next_deadline
        self.frame_index += due
        return due

    def reset(self, start: float) -> None:
        """Restart the schedule at `start` (frame 0), keeping the counters."""
        self.start = start
        self.frame_index = 0
