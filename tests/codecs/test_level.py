"""Levels in dBFS, silence and comfort noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from telcodecs import DBFS_FLOOR, ComfortNoiseSource, peak_dbfs, rms_dbfs, silence

from tests.support.signals import sine


def test_rms_of_full_scale_square_and_sine() -> None:
    square = np.where(np.arange(160) % 20 < 10, 32767, -32768).astype(np.int16)
    assert rms_dbfs(square) == pytest.approx(0.0, abs=0.001)
    # A full-scale sine reads -3.01 dBFS rms and 0 dBFS peak (full scale is 32768).
    s = sine(1000, 8000, 8000, 32767)
    assert rms_dbfs(s) == pytest.approx(-3.01, abs=0.01)
    assert peak_dbfs(s) == pytest.approx(0.0, abs=0.001)


def test_levels_scale_with_amplitude() -> None:
    for level in (-6.0, -20.0, -40.0, -60.0):
        amp = 32768 * math.sqrt(2) * 10 ** (level / 20)
        assert rms_dbfs(sine(440, 8000, 8000, amp)) == pytest.approx(level, abs=0.05)


def test_digital_silence_reads_the_floor() -> None:
    assert DBFS_FLOOR == -120.0
    zeros = np.zeros(160, dtype=np.int16)
    assert rms_dbfs(zeros) == DBFS_FLOOR
    assert peak_dbfs(zeros) == DBFS_FLOOR
    # One LSB in 160 samples is -112 dBFS rms: above the floor.
    one = zeros.copy()
    one[5] = 1
    assert DBFS_FLOOR < rms_dbfs(one) == pytest.approx(20 * math.log10(1 / math.sqrt(160) / 32768))
    assert peak_dbfs(one) == pytest.approx(-90.31, abs=0.01)


def test_peak_counts_the_negative_rail() -> None:
    x = np.array([0, 100, -32768], dtype=np.int16)
    assert peak_dbfs(x) == 0.0
    assert peak_dbfs(np.array([-16384, 100], dtype=np.int16)) == pytest.approx(-6.02, abs=0.01)


def test_levels_accept_2d_batches() -> None:
    x = np.full((4, 160), 16384, dtype=np.int16)
    assert rms_dbfs(x) == pytest.approx(-6.02, abs=0.01)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(0, np.int16), np.zeros(160, np.float32), np.zeros(160, np.int32), b"\0\0", [0, 1]],
    ids=["empty", "float32", "int32", "bytes", "list"],
)
def test_levels_reject_bad_input(bad: object) -> None:
    for f in (rms_dbfs, peak_dbfs):
        with pytest.raises(ValueError, match=r"empty|int16|array"):
            f(bad)  # type: ignore[arg-type]


def test_silence() -> None:
    s = silence(160)
    assert s.dtype == np.int16 and s.shape == (160,) and not s.any()
    assert silence(0).shape == (0,)
    for bad in (-1, 2.0, True, "160"):
        with pytest.raises(ValueError, match="nsamples"):
            silence(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [-70.0, -50.0, -30.0])
def test_comfort_noise_has_the_requested_level(level: float) -> None:
    src = ComfortNoiseSource(8000, level_dbfs=level, seed=1)
    frames = [src.frame(160) for _ in range(50)]
    assert all(f.dtype == np.int16 and f.shape == (160,) for f in frames)
    assert rms_dbfs(np.concatenate(frames)) == pytest.approx(level, abs=0.5)
    # Every 20 ms frame is near the level too: steady, not bursty.
    assert all(abs(rms_dbfs(f) - level) < 1.5 for f in frames)


def test_comfort_noise_is_noise() -> None:
    src = ComfortNoiseSource(48000, seed=3)
    a, b = src.frame(), src.frame()
    assert a.shape == (960,)  # default: one 20 ms frame at the source's rate
    assert not np.array_equal(a, b)
    # White: neighbouring samples are uncorrelated, mean is ~0.
    x = np.concatenate([src.frame() for _ in range(50)]).astype(np.float64)
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.05
    assert abs(x.mean()) < 0.5


def test_comfort_noise_is_reproducible_with_a_seed() -> None:
    a = ComfortNoiseSource(8000, seed=42)
    b = ComfortNoiseSource(8000, seed=42)
    for _ in range(3):
        np.testing.assert_array_equal(a.frame(160), b.frame(160))
    assert not np.array_equal(ComfortNoiseSource(8000, seed=43).frame(160), a.frame(160))


def test_comfort_noise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        ComfortNoiseSource(11025)
    for bad_level in (5.0, -200.0, "loud", True):
        with pytest.raises(ValueError, match="level_dbfs"):
            ComfortNoiseSource(8000, level_dbfs=bad_level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nsamples"):
        ComfortNoiseSource(8000).frame(-1)
