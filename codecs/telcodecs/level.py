"""Levels in dBFS, silence and comfort noise.

dBFS here is relative to full scale 32768 for both rms and peak, so a full-scale square wave
reads 0 dBFS and a full-scale sine reads -3.01 dBFS rms (0 dBFS peak). Digital silence (all
zeros) reads DBFS_FLOOR (-120.0) rather than -inf, and so does anything quieter, so that levels
can be averaged and compared without special cases.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from telcodecs._validate import check_count, check_rate, pcm16_array

__all__ = ["DBFS_FLOOR", "ComfortNoiseSource", "peak_dbfs", "rms_dbfs", "silence"]

#: The level reported for digital silence and anything below it.
DBFS_FLOOR: Final = -120.0
_FULL_SCALE: Final = 32768.0


def _to_dbfs(value: float) -> float:
    if value <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(value / _FULL_SCALE))


def _nonempty(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    pcm = pcm16_array(pcm, ndims=(1, 2))
    if pcm.size == 0:
        raise ValueError("cannot measure the level of an empty array")
    return pcm


def rms_dbfs(pcm: NDArray[np.int16]) -> float:
    """RMS level of int16 samples in dBFS (full scale 32768); DBFS_FLOOR for digital silence."""
    x = _nonempty(pcm).astype(np.float64)
    return _to_dbfs(math.sqrt(float(np.dot(x.reshape(-1), x.reshape(-1))) / x.size))


def peak_dbfs(pcm: NDArray[np.int16]) -> float:
    """Peak level of int16 samples in dBFS (|-32768| is 0.0); DBFS_FLOOR for digital silence."""
    x = _nonempty(pcm)
    return _to_dbfs(float(max(-int(x.min()), int(x.max()))))


def silence(nsamples: int) -> NDArray[np.int16]:
    """`nsamples` of digital silence (int16 zeros)."""
    return np.zeros(check_count(nsamples), dtype=np.int16)


class ComfortNoiseSource:
    """Low-level white Gaussian noise frames, for playing out when there is nothing to send.

    `frame(nsamples)` returns int16 noise whose rms is `level_dbfs` (within a fraction of a dB
    over a 20 ms frame at the default level). With a seed the sequence is reproducible.
    """

    __slots__ = ("_rate", "_rng", "_scale")

    def __init__(self, rate: int, level_dbfs: float = -70.0, seed: int | None = None) -> None:
        self._rate = check_rate(rate)
        if (
            isinstance(level_dbfs, bool)
            or not isinstance(level_dbfs, int | float)
            or not -120.0 <= level_dbfs <= 0.0
        ):
            raise ValueError(f"level_dbfs must be a number in [-120, 0], got {level_dbfs!r}")
        self._scale = _FULL_SCALE * 10 ** (level_dbfs / 20)
        self._rng = np.random.default_rng(seed)

    @property
    def rate(self) -> int:
        return self._rate

    def frame(self, nsamples: int | None = None) -> NDArray[np.int16]:
        """The next `nsamples` of noise (default: one 20 ms frame at the source's rate)."""
        n = self._rate // 50 if nsamples is None else check_count(nsamples)
        noise = self._rng.standard_normal(n) * self._scale
        np.rint(noise, out=noise)
        return np.clip(noise, -32768, 32767).astype(np.int16)
