"""Graceful overload (issue 20): refuse new calls while the media clock runs late.

Sans-I/O: no asyncio, no clock of its own; `now` is passed in (seconds, any monotonic base).

`LatenessWindow` estimates the send lateness p99 over the last `slices * slice_s` seconds (2 s by
default). Each slice is a fixed-bucket histogram; a slice that has aged out is zeroed and reused,
so `observe()` is O(1) (a bisect over a short tuple and a list increment) and the quantile walks
`slices * buckets` counters, only when asked.

`CpuShareWindow` estimates the share of one core the process used over the last `span_s`
seconds, from (now, process CPU seconds) samples the caller passes in.

`OverloadGate` turns the estimates into a verdict with hysteresis: overloaded once the p99 passes
`threshold_s` (with at least `min_packets` in the window, so one late slot of a lone call is not
an overload), or once the projected CPU share passes `cpu_threshold`; admitting again only after
the p99 has stayed below half its threshold and the projection `CPU_HYSTERESIS` below its own for
`hold_s`. Entering and leaving are reported to the caller (one log line each).

The projection: the share is an average over the last 2 s, and a call's cost grows for a moment
after it is admitted (SIP and the provider session first, then the media), so during a burst of
admissions the share trails what the admitted calls cost. The gate keeps the admission times
within `young_s` (4 s: the window's span and the growth), counts a call admitted `t` s ago as
`t / young_s` of its cost in the share (at least `MIN_YOUNG_WEIGHT`, so one just admitted does not
make a lone sample enormous), estimates the average call's cost as `share / (those weights + the
older calls)` and compares it times the calls in progress with the threshold. With calls
arriving one a second the projection is 1-2 % above the share; with 100 calls in progress, 80 of
them admitted at 20 a second over the last 4 s, it is about 60 % above it. Measured at 400
transcoding calls offered at 20/s: the plain share admitted 142 calls, past what the core
carries; see docs/performance.md.

Why both: lateness is a lagging signal. With the calls in phase it stays low until the core
saturates and then jumps (p99 from under 5 ms to 60 ms within one window, at 231 passthrough
calls), so a lateness gate alone admits calls until every call's audio breaks, and a threshold
low enough to trip earlier also trips on the ramp's own set-up bursts (docs/performance.md,
"The overload gate at 600 offered calls"). The core's busy share rises with each admitted call.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

#: upper bounds (seconds) of the lateness buckets; the last bucket is everything above 160 ms
LATENESS_BOUNDS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.06,
    0.08,
    0.16,
)


class LatenessWindow:
    """Send lateness over a sliding window of `slices` fixed-width slices."""

    __slots__ = ("_bounds", "_counts", "_slice_s", "_starts", "_top")

    def __init__(
        self,
        slice_s: float = 0.25,
        slices: int = 8,
        bounds: tuple[float, ...] = LATENESS_BOUNDS,
    ) -> None:
        if slice_s <= 0 or slices <= 0:
            raise ValueError("slice_s and slices must be positive")
        self._slice_s = slice_s
        self._bounds = bounds
        # the slice index (now // slice_s) each ring entry holds counts for; -1: empty
        self._starts = [-1] * slices
        self._counts = [[0] * (len(bounds) + 1) for _ in range(slices)]
        self._top = 2 * bounds[-1]  # what the open last bucket reports

    @property
    def span_s(self) -> float:
        """How far back the window reaches."""
        return self._slice_s * len(self._starts)

    def observe(self, now: float, lateness_s: float, count: int = 1) -> None:
        """Record `count` packets that left `lateness_s` late at `now`."""
        index = int(now // self._slice_s)
        ring = index % len(self._starts)
        counts = self._counts[ring]
        if self._starts[ring] != index:  # a slice that aged out: start it afresh
            self._starts[ring] = index
            for i in range(len(counts)):
                counts[i] = 0
        counts[bisect_left(self._bounds, lateness_s)] += count

    def packets(self, now: float) -> int:
        """Packets observed within the window ending at `now`."""
        return sum(sum(c) for c in self._live(now))

    def quantile(self, now: float, q: float) -> float:
        """The `q` quantile (0..1) of lateness within the window, as its bucket's upper bound
        (conservative: rounds up); 0.0 when the window is empty."""
        live = self._live(now)
        if not live:
            return 0.0
        merged = [sum(column) for column in zip(*live, strict=True)]
        total = sum(merged)
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for i, n in enumerate(merged):
            seen += n
            if seen >= rank and n:
                return self._bounds[i] if i < len(self._bounds) else self._top
        return self._top

    def _live(self, now: float) -> list[list[int]]:
        current = int(now // self._slice_s)
        oldest = current - len(self._starts) + 1
        return [
            counts
            for start, counts in zip(self._starts, self._counts, strict=True)
            if oldest <= start <= current
        ]


#: the CPU share must fall this far below `cpu_threshold` to count as calm (hysteresis)
CPU_HYSTERESIS = 0.1
#: the least a call admitted within `young_s` counts for in the share (of its whole cost)
MIN_YOUNG_WEIGHT = 0.25


class CpuShareWindow:
    """The share of one core used over about the last `span_s` seconds, from cumulative
    process CPU seconds sampled by the caller (`observe`)."""

    __slots__ = ("_min_span_s", "_samples", "span_s")

    def __init__(self, span_s: float = 2.0, min_span_s: float = 0.5) -> None:
        if span_s <= 0 or not 0 < min_span_s <= span_s:
            raise ValueError("need 0 < min_span_s <= span_s")
        self.span_s = span_s
        self._min_span_s = min_span_s
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, now: float, cpu_s: float) -> None:
        """Record the process's cumulative CPU seconds at `now`."""
        samples = self._samples
        if samples and now <= samples[-1][0]:
            return  # the same instant (or time going back): nothing new
        samples.append((now, cpu_s))
        # keep one sample at or before the window's start, so the span stays whole
        while len(samples) > 2 and samples[1][0] <= now - self.span_s:
            samples.popleft()

    def share(self) -> float | None:
        """CPU seconds per wall second across the samples (1.0: one core busy); None until they
        span `min_span_s`."""
        samples = self._samples
        if len(samples) < 2:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        if t1 - t0 < self._min_span_s:
            return None
        return max(0.0, (c1 - c0) / (t1 - t0))


class OverloadGate:
    """Overloaded above `threshold_s` of lateness p99 or `cpu_threshold` of projected CPU
    share; admitting again after `hold_s` below half the first and `CPU_HYSTERESIS` below the
    second. A threshold of 0 turns its half of the gate off."""

    __slots__ = (
        "_admitted",
        "_calm_since",
        "cpu",
        "cpu_projected",
        "cpu_share",
        "cpu_threshold",
        "hold_s",
        "min_packets",
        "overloaded",
        "p99",
        "reason",
        "threshold_s",
        "window",
        "young_s",
    )

    def __init__(
        self,
        threshold_s: float,
        hold_s: float = 5.0,
        min_packets: int = 500,
        window: LatenessWindow | None = None,
        cpu_threshold: float = 0.0,
        cpu: CpuShareWindow | None = None,
        young_s: float = 4.0,
    ) -> None:
        self.threshold_s = threshold_s
        self.hold_s = hold_s
        self.min_packets = min_packets
        self.window = window or LatenessWindow()
        self.cpu_threshold = cpu_threshold
        self.cpu = cpu or CpuShareWindow()
        self.overloaded = False
        self.p99 = 0.0  # the estimate at the last update
        self.cpu_share = 0.0  # likewise (0.0 until the samples span enough)
        #: the share with the young calls' whole cost projected (what the CPU half compares)
        self.cpu_projected = 0.0
        #: how long after its admission a call's cost is not yet wholly in the share
        self.young_s = young_s
        self._admitted: deque[float] = deque()  # admission times within young_s
        #: why the gate last entered overload: "lateness" or "cpu"
        self.reason = ""
        self._calm_since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.threshold_s > 0 or self.cpu_threshold > 0

    def observe_cpu(self, now: float, cpu_s: float) -> None:
        """Record the process's cumulative CPU seconds at `now` (before `update`)."""
        if self.cpu_threshold > 0:
            self.cpu.observe(now, cpu_s)

    def observe(self, now: float, lateness_s: float, count: int = 1) -> None:
        """Record one clock slot's send lateness (every packet it sent)."""
        self.window.observe(now, lateness_s, count)

    def admitted(self, now: float) -> None:
        """A call was admitted at `now` (its cost is still to come)."""
        if self.cpu_threshold > 0:
            self._admitted.append(now)

    def young_weight(self, now: float) -> tuple[int, float]:
        """The calls admitted within `young_s`, and how much of their whole cost the share
        holds (summed over them: a call `t` s old counts `t / young_s`)."""
        admitted = self._admitted
        young_s = self.young_s
        while admitted and admitted[0] <= now - young_s:
            admitted.popleft()
        weight = sum(max(MIN_YOUNG_WEIGHT, (now - t) / young_s) for t in admitted)
        return len(admitted), weight

    def update(self, now: float, calls: int = 0) -> bool:
        """Re-estimate at `now` with `calls` in progress; True when the verdict changed
        (entered or left overload)."""
        if not self.enabled:
            return False
        window = self.window
        p99 = self.p99 = window.quantile(now, 0.99)
        share = self.cpu.share() if self.cpu_threshold > 0 else None
        self.cpu_share = share or 0.0
        if share is not None and calls > 0:
            young, weight = self.young_weight(now)
            if young > calls:  # some of them ended already: weigh the rest alike
                weight, young = weight * calls / young, calls
            share = share * calls / (calls - young + weight)
        self.cpu_projected = share or 0.0
        if not self.overloaded:
            late = (
                self.threshold_s > 0
                and p99 > self.threshold_s
                and window.packets(now) >= self.min_packets
            )
            busy = share is not None and share > self.cpu_threshold
            if late or busy:
                self.overloaded = True
                self.reason = "lateness" if late else "cpu"
                self._calm_since = None
                return True
            return False
        if (self.threshold_s > 0 and p99 >= self.threshold_s / 2) or (
            share is not None and share >= self.cpu_threshold - CPU_HYSTERESIS
        ):
            self._calm_since = None
            return False
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since >= self.hold_s:
            self.overloaded = False
            self._calm_since = None
            return True
        return False
