"""In-band DTMF detection over 8 kHz PCM.

Blocks of 102 samples (12.75 ms) are taken every 51 samples (half-overlapping). For each block
the eight DTMF frequencies are measured with single-bin DFTs — what a bank of Goertzel filters
computes, done here as one matrix product for all blocks of a chunk. Each tone is probed at its
nominal frequency and PROBE_SPREAD (1.2%) either side, and the strongest probe counts, so tones
up to 1.5% off frequency measure at full power. The chosen row and column probes are then fitted
jointly by least squares (941 and 1209 Hz are only 3.4 DFT bins apart, so single-bin powers leak
into each other by up to ~20%). A block is a *hit* for a digit when all of these hold
(thresholds are module constants):

* energy: the fitted row tone and column tone are each at least MIN_TONE_DBFS (-45 dBFS rms,
  relative to full scale 32768);
* twist: the row (low group) tone is at most NORMAL_TWIST_DB (8 dB) above the column tone, and
  the column (high group) tone at most REVERSE_TWIST_DB (4 dB) above the row tone;
* relative peak: every other tone of the same group, measured at its nominal frequency, is at
  least RELATIVE_PEAK_DB (8 dB) below the strongest one;
* purity: the fitted dual tone carries at least MIN_TONE_FRACTION (90%) of the block's energy.
  Speech, music and noise spread their energy and fail this (synthetic voiced speech peaks at
  about 84% in single blocks); so does a tone 3% or more off frequency, and so does a block only
  partly covered by a tone, which sets the duration limits below.

A digit starts after CONFIRM_HITS (4) consecutive hits of the same digit (a tone of 40 ms or
more always gives them; one of 23 ms or less never does) and ends after END_MISSES (5)
consecutive blocks without it (a pause of 40 ms always gives them; a dropout of 10 ms never
does). It is reported once, by the `process()` call in which its end is recognised: 26-34 ms
after the tone stops. A cheap screen on the single-bin powers skips the rest for the blocks
that cannot pass (nearly all speech and noise).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from telcodecs._validate import pcm16_array

__all__ = ["DTMF_COLS_HZ", "DTMF_ROWS_HZ", "DtmfDetector", "dtmf_digit_frequencies"]

DTMF_ROWS_HZ: Final = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS_HZ: Final = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYS: Final = ("123A", "456B", "789C", "*0#D")

RATE: Final = 8000
BLOCK: Final = 102
HOP: Final = 51

MIN_TONE_DBFS: Final = -45.0
NORMAL_TWIST_DB: Final = 8.0
REVERSE_TWIST_DB: Final = 4.0
RELATIVE_PEAK_DB: Final = 8.0
MIN_TONE_FRACTION: Final = 0.9
PROBE_SPREAD: Final = 0.012
CONFIRM_HITS: Final = 4
END_MISSES: Final = 5


def dtmf_digit_frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies in Hz of a DTMF digit: 0-9, *, #, A-D."""
    for r, keys in enumerate(_KEYS):
        c = keys.find(digit) if isinstance(digit, str) and len(digit) == 1 else -1
        if c >= 0:
            return DTMF_ROWS_HZ[r], DTMF_COLS_HZ[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


_NPROBES: Final = 3


def _basis() -> NDArray[np.float64]:
    n = np.arange(BLOCK, dtype=np.float64)[:, None]
    nominal = np.asarray(DTMF_ROWS_HZ + DTMF_COLS_HZ, dtype=np.float64)[:, None]
    spread = 1.0 + PROBE_SPREAD * np.array([-1.0, 0.0, 1.0])[None, :]
    freqs = (nominal * spread).reshape(1, 8 * _NPROBES)  # tone-major: 3 probes per tone
    w = 2 * np.pi * freqs / RATE
    basis = np.concatenate([np.cos(w * n), np.sin(w * n)], axis=1)
    basis.flags.writeable = False
    return basis


_BASIS: Final = _basis()
_NCOLS: Final = 8 * _NPROBES  # cosine columns; the sine columns follow
# A tone of amplitude A gives |X|^2 = (A*BLOCK/2)^2; scale to its mean square A^2/2.
_POWER_SCALE: Final = 2.0 / BLOCK**2
_MIN_TONE_POWER: Final = 32768.0**2 * 10 ** (MIN_TONE_DBFS / 10)
_DIGIT_TABLE: Final = np.array([list(k) for k in _KEYS])


def _pair_fits() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Least-squares fit of a row probe and a column probe together, for every combination.

    Returns pinv (R*C, 4, BLOCK) and gram (R*C, 4, 4), R = C = 4 * _NPROBES. Fitting the two tones
    jointly removes their mutual leakage (941 and 1209 Hz are only 3.4 DFT bins apart), so the
    fitted energy over the block energy is an exact measure of how pure the dual tone is.
    """
    nprobe = 4 * _NPROBES
    pinv = np.empty((nprobe * nprobe, 4, BLOCK))
    gram = np.empty((nprobe * nprobe, 4, 4))
    for a in range(nprobe):
        for b in range(nprobe):
            cols = [a, _NCOLS + a, nprobe + b, _NCOLS + nprobe + b]
            basis = _BASIS[:, cols]
            g = basis.T @ basis
            pinv[a * nprobe + b] = np.linalg.solve(g, basis.T)
            gram[a * nprobe + b] = g
    pinv.flags.writeable = gram.flags.writeable = False
    return pinv, gram


_PAIR_PINV, _PAIR_GRAM = _pair_fits()


def _db(x: float) -> float:
    return float(10 ** (x / 10))


_SCREEN_FRACTION: Final = 0.6  # loose purity screen on single-probe powers (they leak ~20%)


def classify_blocks(blocks: NDArray[np.float64]) -> list[str | None]:
    """The hit (digit or None) of each row of a (n, BLOCK) array of samples."""
    nb = blocks.shape[0]
    hits: list[str | None] = [None] * nb
    spec = blocks @ _BASIS
    sq = spec * spec
    probes = (sq[:, :_NCOLS] + sq[:, _NCOLS:]) * _POWER_SCALE  # (n, 8 tones * 3 probes)
    half = 4 * _NPROBES
    energy = np.einsum("ij,ij->i", blocks, blocks)
    # Cheap screen: speech, music and noise blocks almost all fail here.
    screen = (probes[:, :half].max(axis=1) + probes[:, half:].max(axis=1)) * BLOCK
    sel = np.flatnonzero(screen >= _SCREEN_FRACTION * MIN_TONE_FRACTION * energy)
    if sel.shape[0] == 0:
        return hits
    blocks, energy = blocks[sel], energy[sel]
    probes3 = probes[sel].reshape(-1, 8, _NPROBES)
    best_probe = probes3.argmax(axis=2)  # (k, 8)
    power = probes3.max(axis=2)
    rows, cols = power[:, :4], power[:, 4:]
    ri = rows.argmax(axis=1)
    ci = cols.argmax(axis=1)
    idx = np.arange(sel.shape[0])
    # Relative peak: the other tones of each group (at their nominal frequency, so that the
    # off-frequency probes of a neighbour do not count) against the strongest.
    nominal = probes3[:, :, _NPROBES // 2].copy()
    nominal[idx, ri] = 0.0
    nominal[idx, 4 + ci] = 0.0
    relative = _db(RELATIVE_PEAK_DB)
    peaks_ok = (nominal[:, :4].max(axis=1) * relative <= rows[idx, ri]) & (
        nominal[:, 4:].max(axis=1) * relative <= cols[idx, ci]
    )
    # Joint fit of the chosen row and column probes: exact tone powers and purity.
    combo = (ri * _NPROBES + best_probe[idx, ri]) * half + ci * _NPROBES + best_probe[idx, 4 + ci]
    coef = np.einsum("bkn,bn->bk", _PAIR_PINV[combo], blocks)
    rp = (coef[:, 0] ** 2 + coef[:, 1] ** 2) / 2
    cp = (coef[:, 2] ** 2 + coef[:, 3] ** 2) / 2
    fitted = np.einsum("bi,bij,bj->b", coef, _PAIR_GRAM[combo], coef)
    ok = (
        peaks_ok
        & (rp >= _MIN_TONE_POWER)
        & (cp >= _MIN_TONE_POWER)
        & (rp <= cp * _db(NORMAL_TWIST_DB))
        & (cp <= rp * _db(REVERSE_TWIST_DB))
        & (fitted >= MIN_TONE_FRACTION * energy)
    )
    for i in np.flatnonzero(ok):
        hits[sel[i]] = str(_DIGIT_TABLE[ri[i], ci[i]])
    return hits


class DtmfDetector:
    """Streaming in-band DTMF detector for 8 kHz int16 PCM.

    `process(pcm)` accepts chunks of any length and returns the digits whose tone ended in this
    chunk (recognised with a short lag, see the module doc), each digit once.
    """

    __slots__ = ("_hits", "_last", "_misses", "_pending", "_present")

    def __init__(self, rate: int = RATE) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate != RATE:
            raise ValueError(f"DtmfDetector supports rate {RATE} Hz only, got {rate!r}")
        self._pending = np.zeros(0, dtype=np.float64)
        self._last: str | None = None  # hit of the previous block
        self._hits = 0  # consecutive blocks with hit == _last
        self._present: str | None = None  # confirmed digit still sounding
        self._misses = 0  # consecutive blocks without _present

    def process(self, pcm: NDArray[np.int16]) -> list[str]:
        """Feed a chunk of 1-D int16 samples; return the digits that ended in it."""
        pcm = pcm16_array(pcm)
        buf = np.concatenate([self._pending, pcm.astype(np.float64)])
        nblocks = (buf.shape[0] - BLOCK) // HOP + 1 if buf.shape[0] >= BLOCK else 0
        self._pending = buf[nblocks * HOP :]
        if nblocks == 0:
            return []
        step = buf.strides[0]  # buf is a fresh contiguous array: a read-only strided view is safe
        blocks: NDArray[np.float64] = np.ndarray(
            (nblocks, BLOCK), dtype=np.float64, buffer=buf, strides=(HOP * step, step)
        )
        ended: list[str] = []
        for hit in classify_blocks(blocks):
            self._step(hit, ended)
        return ended

    def flush(self) -> list[str]:
        """End of stream: report a digit still sounding (if confirmed) and reset."""
        ended = [self._present] if self._present is not None else []
        self.reset()
        return ended

    def reset(self) -> None:
        """Forget all state."""
        self._pending = np.zeros(0, dtype=np.float64)
        self._last = self._present = None
        self._hits = self._misses = 0

    def _step(self, hit: str | None, ended: list[str]) -> None:
        self._hits = self._hits + 1 if hit is not None and hit == self._last else 1
        self._last = hit
        if self._present is not None:
            if hit == self._present:
                self._misses = 0
                return
            self._misses += 1
            if self._misses < END_MISSES:
                return
            ended.append(self._present)
            self._present = None
            self._misses = 0
        if hit is not None and self._hits >= CONFIRM_HITS:
            self._present = hit
