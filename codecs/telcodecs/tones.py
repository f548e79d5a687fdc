"""Tone patterns: sine tones with soft edges and pauses, for prompts and chimes without speech."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from telcodecs._validate import check_rate

__all__ = ["tone_pattern"]

_RAMP_S: Final = 0.01  # each tone fades in and out over 10 ms: no click at its edges


def tone_pattern(
    segments: Sequence[tuple[float, int]], rate: int, amplitude: float
) -> NDArray[np.int16]:
    """Tones and pauses back to back, as int16 samples at `rate`.

    Each segment is `(hz, ms)`; 0 Hz is a pause. Every tone ramps linearly in and out over
    10 ms; `amplitude` is its peak as a fraction of full scale (0..1)."""
    check_rate(rate)
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude!r}")
    parts: list[NDArray[np.float64]] = [np.zeros(0)]
    for hz, ms in segments:
        if hz < 0 or ms < 0:
            raise ValueError(f"a segment needs hz >= 0 and ms >= 0, got {(hz, ms)!r}")
        n = rate * ms // 1000
        if hz == 0:
            parts.append(np.zeros(n))
            continue
        k = np.arange(n)
        ramp = np.minimum(1.0, np.minimum(k, k[::-1]) / (rate * _RAMP_S))
        parts.append(np.sin(2 * np.pi * hz * (k / rate)) * ramp)
    return (np.concatenate(parts) * (32767 * amplitude)).astype(np.int16)
