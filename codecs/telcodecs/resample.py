"""Streaming polyphase resampler between the telephony and media rates.

Design (see docs/codecs.md for the measured figures):

* One linear-phase FIR prototype per rate pair, designed at the up-sampled rate L*src (L/M is the
  reduced rate ratio) as a Kaiser-windowed sinc. The transition band runs from 0.43 to 0.57 of the
  lower of the two rates, so it is centred on the lower Nyquist frequency: whatever aliases lands
  above 0.43*fmin (above 3.4 kHz at 8 kHz), and everything beyond 0.57*fmin is attenuated by the
  stopband (80 dB by design, 78.9 dB measured at worst). Passband ripple is below 0.002 dB.
* The prototype is split into L phases of K taps. Output sample k is the dot product of phase
  (k*M mod L) with the K inputs ending at input index floor(k*M/L), so the filter is causal and
  output k can be produced as soon as input floor(k*M/L) has arrived. Hence the steady output law:
  after n_total input samples exactly floor(n_total*dst/src) samples have come out, from the very
  first frame. The price is the filter's group delay, (K*L - 1) / (2*L*src) seconds: about 2.25 ms
  for any pair involving 8 kHz, well under 1 ms between 44.1/48 kHz.
* Three kernels, each one vectorised product per call. Whole periods (the call starts on a
  period boundary and n is a multiple of M: always true for 20 ms frames, and for every
  up-ratio): each M inputs give L outputs, one strided window view times a
  (K + floor((L-1)M/L), L) period matrix. Integer down-ratios (L == 1), any chunking: a strided
  window view times the K taps. Anything else: windows and per-output taps gathered with index
  plans cached per (start phase, chunk length) on the shared design. A long chunk off the period
  grid is split at period boundaries, so the gather only ever covers less than M inputs at each
  end, and a plan over 64 KiB is used once, not kept. Arithmetic is float32; the output is
  rounded to nearest and clipped to int16 (saturating, never wrapping).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from telcodecs._validate import SUPPORTED_RATES, check_rate, pcm16_array

__all__ = ["STOPBAND_DB", "Resampler", "resample", "resample_any"]

#: Stopband attenuation the prototype filters are designed for (Kaiser's formula).
STOPBAND_DB: Final = 80.0
#: Passband and stopband edges as fractions of the lower of the two rates.
PASSBAND_EDGE: Final = 0.43
STOPBAND_EDGE: Final = 0.57

_PLAN_CACHE_LIMIT: Final = 256
#: plans bigger than this are used once and not kept: their size grows with the chunk
_PLAN_CACHE_MAX_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where each output of one call reads its window (buffer start) and which taps it uses."""

    starts: NDArray[np.intp]
    taps: NDArray[np.float32]


@dataclass(eq=False, slots=True)
class _Design:
    """A rate pair's polyphase filter, shared (read-only) by every Resampler of that pair."""

    up: int  # L
    down: int  # M
    ntaps: int  # K, taps per phase
    phases: NDArray[np.float32]  # (L, K): phases[p, i] weighs x[q - (K - 1) + i]
    group_taps: NDArray[np.float32]  # (K + off[L-1], L): one period of L outputs per row of input
    history: int  # input samples kept between calls
    delay_in: float  # group delay in input samples
    plans: dict[tuple[int, int], _Plan] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, phase0: int, n: int) -> _Plan:
        """Gather plan for a call that starts at input phase `phase0` (total % M) with n inputs."""
        key = (phase0, n)
        found = self.plans.get(key)
        if found is not None:
            return found
        up, down = self.up, self.down
        k = np.arange(phase0 * up // down, (phase0 + n) * up // down, dtype=np.int64)
        q = k * down // up - phase0  # last input of each window, relative to this call's start
        starts = (q + self.history - (self.ntaps - 1)).astype(np.intp)
        taps = np.ascontiguousarray(self.phases[(k * down) % up])
        taps.flags.writeable = False
        new = _Plan(starts=starts, taps=taps)
        if taps.nbytes > _PLAN_CACHE_MAX_BYTES:
            return new
        with self.lock:
            if len(self.plans) >= _PLAN_CACHE_LIMIT:
                self.plans.clear()
            self.plans[key] = new
        return new


def _readonly(a: NDArray[np.float32]) -> NDArray[np.float32]:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@cache
def _design(src_rate: int, dst_rate: int) -> _Design:
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    fmin = min(src_rate, dst_rate)
    fs_hi = up * src_rate
    width_hz = (STOPBAND_EDGE - PASSBAND_EDGE) * fmin
    # Kaiser's estimate of the order for STOPBAND_DB over a transition of width_hz at fs_hi.
    order = (STOPBAND_DB - 7.95) / (2.285 * 2 * math.pi * width_hz / fs_hi)
    ntaps = math.ceil((order + 1) / up)
    length = ntaps * up
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    cutoff = 0.5 * fmin / fs_hi  # cycles per high-rate sample: centre of the transition band
    t = np.arange(length, dtype=np.float64) - (length - 1) / 2
    proto = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(length, beta)
    proto *= up / proto.sum()  # unity gain at DC through the average phase
    # Phase p, tap i weighs x[q - i] with proto[p + L*i]; stored reversed in i (oldest first).
    phases = proto.reshape(ntaps, up).T[:, ::-1].astype(np.float32)
    # One period: output j of L reads K inputs from offset floor(j*M/L), group g starts at g*M.
    offsets = np.arange(up) * down // up
    group_taps = np.zeros((ntaps + int(offsets[-1]), up), dtype=np.float32)
    for j, off in enumerate(offsets):
        group_taps[off : off + ntaps, j] = phases[(j * down) % up]
    return _Design(
        up=up,
        down=down,
        ntaps=ntaps,
        phases=_readonly(phases),
        group_taps=_readonly(group_taps),
        history=ntaps - 1 + math.ceil(down / up),
        delay_in=(length - 1) / (2 * up),
    )


class Resampler:
    """Streaming int16 resampler between two of SUPPORTED_RATES.

    `process()` takes any number of samples and returns exactly
    floor(total_in * dst / src) - floor(previous_total_in * dst / src) samples, so every 20 ms
    frame in gives a 20 ms frame out, from the first frame on. State carries across calls, so
    frame edges are seamless. `flush()` returns the tail held back by the filter delay and
    resets the stream. Equal rates are an identity copy with no delay. Not thread-safe: one
    instance per stream direction.
    """

    __slots__ = ("_buf", "_design", "_dst", "_group_windows", "_phase", "_src", "_windows")

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self._src = check_rate(src_rate, "source rate")
        self._dst = check_rate(dst_rate, "destination rate")
        self._design: _Design | None = None
        self._phase = 0  # total input samples so far, modulo M
        self._buf = np.zeros(0, dtype=np.float32)
        self._windows = self._group_windows = self._buf.reshape(0, 0)
        if self._src != self._dst:
            self._design = _design(self._src, self._dst)
            self._alloc(self._design, self._src // 50)

    @property
    def src_rate(self) -> int:
        return self._src

    @property
    def dst_rate(self) -> int:
        return self._dst

    @property
    def delay(self) -> float:
        """Group delay added by the filter, in seconds (0.0 for equal rates)."""
        if self._design is None:
            return 0.0
        return self._design.delay_in / self._src

    def output_length(self, n: int) -> int:
        """How many samples the next `process()` of n samples will return."""
        d = self._design
        if d is None:
            return n
        return (self._phase + n) * d.up // d.down - self._phase * d.up // d.down

    def process(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        """Resample one chunk (1-D int16, any length); returns a new int16 array."""
        pcm = pcm16_array(pcm)
        d = self._design
        if d is None:
            return pcm.copy()
        n = pcm.shape[0]
        if d.up > 1 and n > d.down and not (self._phase == 0 and n % d.down == 0):
            # A long chunk off the period grid (a whole prompt of any length): the inputs up to
            # the next period boundary, the whole periods (the period kernel), then the rest.
            # In one go the gather kernel's taps would be (outputs, K) floats: 19 MB and 90 ms
            # for 3 s of espeak's 22050 Hz doubled to 44.1 kHz, then to 24 kHz.
            lead = (d.down - self._phase) % d.down
            cut = lead + (n - lead) // d.down * d.down
            return np.concatenate(
                [self._run(d, pcm[:lead]), self._run(d, pcm[lead:cut]), self._run(d, pcm[cut:])]
            )
        return self._run(d, pcm)

    def flush(self) -> NDArray[np.int16]:
        """Emit the samples still inside the filter (one group delay's worth) and reset."""
        d = self._design
        if d is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._run(d, np.zeros(math.ceil(d.delay_in), dtype=np.int16))
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget all state, as if newly constructed."""
        self._phase = 0
        self._buf[:] = 0.0

    def _alloc(self, d: _Design, n: int) -> None:
        """(Re)size the work buffer for n new samples, keeping the history in front."""
        buf = np.zeros(d.history + n, dtype=np.float32)
        keep = min(d.history, self._buf.shape[0])
        buf[:keep] = self._buf[:keep]
        self._buf = buf
        self._windows = sliding_window_view(buf, d.ntaps)
        span = d.group_taps.shape[0]
        # The period path only runs for n >= M, when the buffer is always at least `span` long.
        self._group_windows = sliding_window_view(buf, min(span, buf.shape[0]))

    def _run(self, d: _Design, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        n = pcm.shape[0]
        hist = d.history
        if self._buf.shape[0] != hist + n:
            self._alloc(d, n)
        buf = self._buf
        buf[hist:] = pcm
        phase0 = self._phase
        up, down = d.up, d.down
        count = (phase0 + n) * up // down - phase0 * up // down
        first = hist - (d.ntaps - 1)  # window start of an output whose last input is index 0
        if count == 0:
            out = np.zeros(0, dtype=np.float32)
        elif up == 1:
            # Output k reads the window ending at input k*M - phase0 (relative to this call).
            first -= phase0
            out = np.dot(self._windows[first : first + (count - 1) * down + 1 : down], d.phases[0])
        elif phase0 == 0 and n % down == 0:
            # Whole periods: each M inputs give L outputs from one row of the period matrix.
            rows = self._group_windows[first : first + n - down + 1 : down]
            out = np.dot(rows, d.group_taps).reshape(-1)
        else:
            plan = d.plan(phase0, n)
            out = np.einsum("ij,ij->i", self._windows[plan.starts], plan.taps)
        buf[:hist] = buf[n : n + hist]
        self._phase = (phase0 + n) % down
        np.rint(out, out=out)
        np.minimum(out, 32767.0, out=out)
        np.maximum(out, -32768.0, out=out)
        return out.astype(np.int16)


def resample(pcm: NDArray[np.int16], src_rate: int, dst_rate: int) -> NDArray[np.int16]:
    """Resample a whole signal in one go, tail included (a fresh Resampler, process + flush)."""
    r = Resampler(src_rate, dst_rate)
    head = r.process(pcm)
    return np.concatenate([head, r.flush()])


def resample_any(pcm: NDArray[np.int16], src_rate: int, dst_rate: int) -> NDArray[np.int16]:
    """`resample`, also from a source rate outside SUPPORTED_RATES whose double is in it
    (espeak-ng's 22050 Hz): such a signal is first doubled by linear interpolation, whose images
    the following anti-alias filter removes. Equal rates return `pcm` itself."""
    if src_rate == dst_rate:
        return pcm
    if src_rate not in SUPPORTED_RATES and src_rate * 2 in SUPPORTED_RATES:
        n = len(pcm)
        pcm = np.interp(np.arange(2 * n) / 2.0, np.arange(n), pcm).astype(np.int16)
        src_rate *= 2
    return resample(pcm, src_rate, dst_rate)
