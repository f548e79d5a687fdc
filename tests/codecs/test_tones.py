"""tone_pattern: tones and pauses at their frequencies, lengths and level, with soft edges."""

from __future__ import annotations

import numpy as np
import pytest
from telcodecs import peak_dbfs, tone_pattern

from tests.support.signals import fit_sine


def test_segments_have_their_length_frequency_and_level() -> None:
    pcm = tone_pattern([(660.0, 250), (0.0, 50), (440.0, 250)], 8000, 0.3)
    assert pcm.dtype == np.int16 and len(pcm) == 2000 + 400 + 2000
    first, pause, second = pcm[:2000], pcm[2000:2400], pcm[2400:]
    assert not pause.any()
    for tone, hz in ((first, 660.0), (second, 440.0)):
        body = tone[80:-80].astype(np.float64)  # inside the 10 ms ramps
        amplitude, residual = fit_sine(body, hz, 8000)
        assert amplitude == pytest.approx(0.3 * 32767, rel=0.01)
        assert np.sqrt(np.mean(residual**2)) < 2.0  # a pure tone: only rounding is left
    assert peak_dbfs(pcm) == pytest.approx(20 * np.log10(0.3 * 32767 / 32768), abs=0.05)


def test_tones_ramp_in_and_out_over_10ms() -> None:
    pcm = tone_pattern([(1000.0, 100)], 24000, 0.5).astype(np.float64)
    envelope = np.abs(pcm)
    assert envelope[0] == 0 and envelope[-1] == 0
    peak = 0.5 * 32767
    assert envelope[:24].max() <= 0.1 * peak  # 1 ms into the 10 ms ramp: at most a tenth
    assert envelope[:240].max() < envelope[240:-240].max()
    assert envelope[240:-240].max() == pytest.approx(peak, rel=0.01)


def test_empty_and_bad_patterns() -> None:
    assert tone_pattern([], 8000, 0.3).shape == (0,)
    for bad_rate in (11025, 0):
        with pytest.raises(ValueError, match="rate"):
            tone_pattern([(440.0, 100)], bad_rate, 0.3)
    with pytest.raises(ValueError, match="amplitude"):
        tone_pattern([(440.0, 100)], 8000, 1.5)
    with pytest.raises(ValueError, match="segment"):
        tone_pattern([(440.0, -1)], 8000, 0.3)
