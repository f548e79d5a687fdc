"""`DeadlineGrid`: the absolute deadlines of a paced sender, `t0 + n·step` (sans-I/O).

Step n is due at `t0 + n * step` on a monotonic clock, however late the steps before it ran:
pacing against the grid, not `sleep(step)` after each step, never drifts. After a stall (a
blocked loop) more than `max_behind` steps overdue, the grid skips ahead instead of bursting
every missed step out late: `resume_behind` of them are still run (a short catch-up), the rest
are skipped. A phone plays late audio worse than a short gap, and the RTP session moves its
timestamps over the gap (`RtpSession.packetize`).

Used by the shared media clock (`gateway.media.clock`, one grid per clock, sub-ticks of
`ptime / slots`) and by the WebRTC leg's outbound track (one grid per call, 20 ms frames).
"""

from __future__ import annotations

__all__ = ["DeadlineGrid"]


class DeadlineGrid:
    """Deadlines `t0 + n * step` for n = 0, 1, 2, ...; `n` is the next step to run and
    `deadline` when it is due (arm the timer for this). Move them with the methods only."""

    __slots__ = (
        "_on_time",
        "deadline",
        "max_behind",
        "n",
        "resume_behind",
        "skipped",
        "stalls",
        "step",
        "t0",
    )

    def __init__(
        self, step: float, max_behind: int, resume_behind: int | None = None, t0: float = 0.0
    ) -> None:
        """`max_behind`: overdue steps (beyond the one due) still caught up; more is a stall.
        `resume_behind`: overdue steps still run after a stall (default `max_behind`)."""
        resume = max_behind if resume_behind is None else resume_behind
        if step <= 0 or not 0 <= resume <= max_behind:
            raise ValueError("step must be > 0 and 0 <= resume_behind <= max_behind")
        self.step = step
        self.max_behind = max_behind
        self.resume_behind = resume
        # less late than this is never a stall: due() then skips its division (the media
        # clock runs it every sub-tick)
        self._on_time = max_behind * step
        self.t0 = t0
        self.n = 0
        self.deadline = t0
        self.stalls = 0  # stalls skipped over
        self.skipped = 0  # steps given up in them

    def start(self, t0: float) -> None:
        """Restart the grid at `t0` (step 0 is due then), keeping the counters."""
        self.t0 = t0
        self.n = 0
        self.deadline = t0

    def due(self, now: float) -> float:
        """The deadline of the step to run at `now`: step n's, or after a stall, a later one's
        (the steps in between are skipped). Call `advance()` once the step has run."""
        deadline = self.deadline
        if now - deadline < self._on_time:
            return deadline
        step = self.step
        behind = int((now - deadline) / step)
        if behind > self.max_behind:
            skip = behind - self.resume_behind
            self.stalls += 1
            self.skipped += skip
            self.n += skip
            deadline = self.deadline = self.t0 + self.n * step
        return deadline

    def advance(self) -> float:
        """Step n has run: move to the next one and return its deadline."""
        n = self.n = self.n + 1
        deadline = self.deadline = self.t0 + n * self.step
        return deadline
