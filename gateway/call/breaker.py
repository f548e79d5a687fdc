"""The provider circuit breaker: not ready after N consecutive connect failures, ready again on
the next success.

Theory of operation (sans-I/O: time is passed in; `CallService` holds one and feeds it the
outcome of every Realtime connect it makes for a new call):

    state      attempt allowed?                       outcome → next state
    closed     yes                                    success → closed (count reset);
                                                      failure → closed, or open at the Nth in a row
    open       no, until `retry_at` (the cool-down);  calls fail fast (503); a late success of
               then the first attempt becomes the     an attempt begun before → closed
               trial                                  → half_open
    half_open  no (one trial in flight)               success → closed; failure → open, new
                                                      cool-down; abandoned → open, retry at once

While not closed the gateway is not ready: `/readyz` answers 503 and OPTIONS 503, so Kubernetes
and Kamailio send new calls to other instances. The trial after a cool-down is whichever comes
first: a call that still arrives, or the gateway's own probe (a session opened and closed),
which `CallService` runs so an instance nobody routes to can still come back.
"""

from __future__ import annotations

import enum


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


B = BreakerState
# (state, outcome) → state; `failure` in CLOSED is decided by the count, below
_OUTCOMES: dict[tuple[BreakerState, str], BreakerState] = {
    (B.CLOSED, "success"): B.CLOSED,
    (B.CLOSED, "abandoned"): B.CLOSED,
    (B.OPEN, "success"): B.CLOSED,  # an attempt begun before the breaker opened got through
    (B.OPEN, "failure"): B.OPEN,
    (B.OPEN, "abandoned"): B.OPEN,
    (B.HALF_OPEN, "success"): B.CLOSED,
    (B.HALF_OPEN, "failure"): B.OPEN,
    (B.HALF_OPEN, "abandoned"): B.OPEN,
}


class ProviderBreaker:
    """Counts provider connect outcomes; `threshold` 0 turns the breaker off (always closed)."""

    def __init__(self, threshold: int = 3, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = B.CLOSED
        self.failures = 0
        self.retry_at = 0.0

    @property
    def ready(self) -> bool:
        return self.state is B.CLOSED

    def refusing(self, now: float) -> bool:
        """True if an attempt now would be refused (nothing changes): for cheap early checks."""
        return self.state is B.HALF_OPEN or (self.state is B.OPEN and now < self.retry_at)

    def try_acquire(self, now: float) -> bool:
        """May a connect be attempted now? After the cool-down the first caller gets the trial."""
        if self.state is B.CLOSED:
            return True
        if self.state is B.OPEN and now >= self.retry_at:
            self.state = B.HALF_OPEN
            return True
        return False

    def succeeded(self, now: float) -> bool:
        """A connect succeeded; True if this made the gateway ready again."""
        return self._outcome("success", now)

    def failed(self, now: float) -> bool:
        """A connect failed; True if this made the gateway not ready."""
        if self.state is B.CLOSED:
            self.failures += 1
            if not self.threshold or self.failures < self.threshold:
                return False
            self.state = B.OPEN
            self.retry_at = now + self.cooldown
            return True
        return self._outcome("failure", now)

    def abandoned(self, now: float) -> bool:
        """An attempt ended with no outcome (the caller left): the trial goes to the next one."""
        return self._outcome("abandoned", now)

    def _outcome(self, outcome: str, now: float) -> bool:
        before = self.state
        self.state = _OUTCOMES[(before, outcome)]
        if self.state is B.CLOSED and outcome == "success":
            self.failures = 0
        elif before is B.HALF_OPEN:  # the trial failed (cool down again) or was abandoned
            self.retry_at = now + (self.cooldown if outcome == "failure" else 0.0)
        return (before is B.CLOSED) != (self.state is B.CLOSED)
