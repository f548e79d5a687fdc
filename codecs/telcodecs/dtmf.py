"""In-band DTMF detection over 8 kHz PCM.

Blocks of 102 samples (12.75 ms) are taken every 51 samples (half-overlapping). For each block
the eight DTMF frequencies are measured with single-bin DFTs at the exact tone frequencies — what
a bank of Goertzel filters computes, done here as one matrix product for all blocks of a chunk.
A block is a *hit* for a digit when all of these hold (thresholds are module constants):

* energy: the strongest row tone and the strongest column tone are each at least
  MIN_TONE_DBFS (rms, relative to full scale 32768);
* twist: the row (low group) tone is at most NORMAL_TWIST_DB above the column tone, and the
  column (high group) tone at most REVERSE_TWIST_DB above the row tone;
* relative peak: every other tone of the same group is at least RELATIVE_PEAK_DB below the
  strongest one;
* purity: the two tones carry at least MIN_TONE_FRACTION of the block's energy. Speech, music and
  noise spread their energy and fail this; so does a block only partly covered by a tone, which
  sets the duration limits below.

A digit starts after CONFIRM_HITS consecutive hits of the same digit (a tone of 40 ms or more
always gives them; one of 23 ms or less never does) and ends after END_MISSES consecutive blocks
without it (a pause of 40 ms always gives them; a dropout of 10 ms never does). It is reported
once, by the `process()` call in which its end is recognised — about 20-30 ms after the tone
stops.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
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
MIN_TONE_FRACTION: Final = 0.85
CONFIRM_HITS: Final = 4
END_MISSES: Final = 5


def dtmf_digit_frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies in Hz of a DTMF digit: 0-9, *, #, A-D."""
    for r, keys in enumerate(_KEYS):
        c = keys.find(digit) if isinstance(digit, str) and len(digit) == 1 else -1
        if c >= 0:
            return DTMF_ROWS_HZ[r], DTMF_COLS_HZ[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def _basis() -> NDArray[np.float64]:
    n = np.arange(BLOCK, dtype=np.float64)[:, None]
    freqs = np.asarray(DTMF_ROWS_HZ + DTMF_COLS_HZ, dtype=np.float64)[None, :]
    w = 2 * np.pi * freqs / RATE
    basis = np.concatenate([np.cos(w * n), np.sin(w * n)], axis=1)
    basis.flags.writeable = False
    return basis


_BASIS: Final = _basis()
# A tone of amplitude A gives |X|^2 = (A*BLOCK/2)^2; scale to its mean square A^2/2.
_POWER_SCALE: Final = 2.0 / BLOCK**2
_MIN_TONE_POWER: Final = 32768.0**2 * 10 ** (MIN_TONE_DBFS / 10)
_DIGIT_TABLE: Final = np.array([list(k) for k in _KEYS])


def _db(x: float) -> float:
    return float(10 ** (x / 10))


def classify_blocks(blocks: NDArray[np.float64]) -> list[str | None]:
    """The hit (digit or None) of each row of a (n, BLOCK) array of samples."""
    spec = blocks @ _BASIS
    power = (spec[:, :8] ** 2 + spec[:, 8:] ** 2) * _POWER_SCALE
    total = np.einsum("ij,ij->i", blocks, blocks) / BLOCK
    rows, cols = power[:, :4], power[:, 4:]
    ri = rows.argmax(axis=1)
    ci = cols.argmax(axis=1)
    idx = np.arange(blocks.shape[0])
    rp = rows[idx, ri]
    cp = cols[idx, ci]
    # Second strongest of each group, for the relative-peak check.
    r2 = np.sort(rows, axis=1)[:, -2]
    c2 = np.sort(cols, axis=1)[:, -2]
    ok = (
        (rp >= _MIN_TONE_POWER)
        & (cp >= _MIN_TONE_POWER)
        & (rp <= cp * _db(NORMAL_TWIST_DB))
        & (cp <= rp * _db(REVERSE_TWIST_DB))
        & (r2 * _db(RELATIVE_PEAK_DB) <= rp)
        & (c2 * _db(RELATIVE_PEAK_DB) <= cp)
        & (rp + cp >= MIN_TONE_FRACTION * total)
    )
    return [str(_DIGIT_TABLE[r, c]) if hit else None for r, c, hit in zip(ri, ci, ok, strict=True)]


class DtmfDetector:
    """Streaming in-band DTMF detector for 8 kHz int16 PCM.

    `process(pcm)` accepts chunks of any length and returns the digits whose tone ended in this
    chunk (recognised with a short lag, see the module doc), each digit once.
    """

    __slots__ = ("_hits", "_last", "_misses", "_pending", "_present")

    def __init__(self, rate: int = RATE) -> None:
        if isinstance(rate, bool) or rate != RATE:
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
        blocks = sliding_window_view(buf, BLOCK)[: (nblocks - 1) * HOP + 1 : HOP]
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
