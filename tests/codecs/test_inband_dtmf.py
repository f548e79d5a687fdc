"""In-band DTMF: generated digits in noise at many levels and chunkings, and no talk-off."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telcodecs import DtmfDetector, dtmf_digit_frequencies, ulaw_decode, ulaw_encode

from tests.support.signals import (
    chunks,
    dtmf_sequence,
    dtmf_tone,
    frames,
    music_chords,
    note_hz,
    pink_noise,
    to_int16,
    voiced_speech,
    white_noise,
)

ALL_DIGITS = "0123456789*#ABCD"
ODD_CHUNKS = (1, 37, 101, 333, 7, 160, 59, 1000, 2)


def detect(pcm: np.ndarray, chunk_sizes: Iterable[int] = (160,)) -> str:
    d = DtmfDetector()
    found: list[str] = []
    for part in chunks(pcm, list(chunk_sizes)):
        found += d.process(part)
    return "".join(found + d.flush())


def test_full_digit_sequence_decodes_exactly() -> None:
    assert detect(dtmf_sequence(ALL_DIGITS)) == ALL_DIGITS


@pytest.mark.parametrize("peak_dbfs", [-3.0, -6.0, -10.0, -15.0, -20.0, -25.0])
@pytest.mark.parametrize("snr_db", [None, 20.0, 15.0])
def test_digits_at_every_level_with_and_without_noise(
    peak_dbfs: float, snr_db: float | None
) -> None:
    x = dtmf_sequence(ALL_DIGITS, peak_dbfs=peak_dbfs, snr_db=snr_db, seed=int(-peak_dbfs))
    assert detect(x) == ALL_DIGITS
    assert detect(x, ODD_CHUNKS) == ALL_DIGITS


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12),
    digits=st.text(alphabet=ALL_DIGITS, min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_decodes_the_same(sizes: list[int], digits: str, seed: int) -> None:
    x = dtmf_sequence(digits, peak_dbfs=-12.0, snr_db=18.0, seed=seed)
    assert detect(x, sizes) == digits


def test_digits_survive_g711() -> None:
    x = dtmf_sequence(ALL_DIGITS, peak_dbfs=-20.0, snr_db=20.0, seed=3)
    assert detect(ulaw_decode(ulaw_encode(x))) == ALL_DIGITS


def test_each_digit_is_reported_once_after_its_tone_ends() -> None:
    tone = to_int16(dtmf_tone("7", 200, -10.0))  # 200 ms = frames 5..14
    x = np.concatenate([np.zeros(800, np.int16), tone, np.zeros(1600, np.int16)])
    d = DtmfDetector()
    reports = [d.process(f) for f in frames(x, 160)]
    hits = [(i, r) for i, r in enumerate(reports) if r]
    assert hits, "the digit was never reported"
    (index, digits), *rest = hits
    assert digits == ["7"] and not rest
    end_frame = (800 + tone.shape[0]) // 160  # the first frame after the tone
    assert end_frame <= index <= end_frame + 2  # reported within 40 ms of the end
    assert d.flush() == []


@pytest.mark.parametrize("offset", range(0, 102, 11))
def test_report_latency_is_under_35ms(offset: int) -> None:
    # Fed one sample at a time, the digit comes out 26-34 ms after its tone stops, never before.
    x = dtmf_sequence("8", on_ms=100, off_ms=200, lead_ms=100 + offset / 8, snr_db=15, seed=offset)
    tone_end = 800 + offset + 800
    d = DtmfDetector()
    reported_at = next(i + 1 for i in range(x.shape[0]) if d.process(x[i : i + 1]))
    assert 0.020 <= (reported_at - tone_end) / 8000 <= 0.035


def test_tone_still_sounding_is_reported_by_flush_only() -> None:
    d = DtmfDetector()
    assert d.process(to_int16(dtmf_tone("#", 300, -10.0))) == []
    assert d.flush() == ["#"]
    assert d.flush() == []


def test_digit_sequence_without_pauses() -> None:
    x = np.concatenate([to_int16(dtmf_tone(c, 80, -10.0)) for c in "1397"])
    assert detect(np.concatenate([np.zeros(400, np.int16), x, np.zeros(800, np.int16)])) == "1397"


# --- robustness checks -----------------------------------------------------------------------


@pytest.mark.parametrize("lead", range(0, 102, 17))
def test_minimum_duration(lead: int) -> None:
    # lead shifts the tone against the detector's block grid.
    for ms, expected in ((40, "55"), (50, "55"), (23, ""), (20, ""), (15, "")):
        x = dtmf_sequence("55", on_ms=ms, off_ms=100, lead_ms=50 + lead / 8, seed=lead)
        assert detect(x) == expected, f"{ms} ms tone"


@pytest.mark.parametrize("lead", range(0, 102, 17))
def test_inter_digit_pause(lead: int) -> None:
    # The same digit twice around a pause of 40 ms is two digits; a 10 ms dropout is not a pause.
    for gap_ms, expected in ((40, "55"), (60, "55"), (10, "5"), (5, "5")):
        for snr in (None, 15.0):
            x = dtmf_sequence("55", on_ms=60, off_ms=gap_ms, lead_ms=50 + lead / 8, snr_db=snr)
            assert detect(x) == expected, f"{gap_ms} ms gap, snr {snr}"


@pytest.mark.parametrize(
    ("twist_db", "expected"),
    [(0.0, "159D"), (6.0, "159D"), (-3.0, "159D"), (10.0, ""), (-6.0, "")],
    ids=["none", "normal-6dB", "reverse-3dB", "normal-10dB", "reverse-6dB"],
)
def test_twist_limits(twist_db: float, expected: str) -> None:
    # Normal twist: the low (row) tone louder, accepted up to 8 dB; reverse twist: the high
    # (column) tone louder, accepted up to 4 dB.
    x = dtmf_sequence("159D", twist_db=twist_db, peak_dbfs=-10.0)
    assert detect(x) == expected


@pytest.mark.parametrize(("peak_dbfs", "expected"), [(-25.0, "42"), (-50.0, ""), (-60.0, "")])
def test_energy_threshold(peak_dbfs: float, expected: str) -> None:
    assert detect(dtmf_sequence("42", peak_dbfs=peak_dbfs)) == expected


def test_third_tone_in_the_row_group_is_rejected() -> None:
    # Two row tones of equal level: the relative-peak check fails, no digit.
    n = np.arange(800) / 8000
    x = 6000 * (np.sin(2 * np.pi * 697 * n) + np.sin(2 * np.pi * 852 * n))
    x += 6000 * np.sin(2 * np.pi * 1336 * n)
    assert detect(to_int16(x)) == ""


@pytest.mark.parametrize("deviation", [-0.015, 0.015])
def test_frequency_deviation_of_1_5_percent_is_accepted(deviation: float) -> None:
    n = np.arange(800) / 8000
    for digit in ALL_DIGITS:
        row, col = dtmf_digit_frequencies(digit)
        f = 1 + deviation
        x = 7000 * (np.sin(2 * np.pi * row * f * n) + np.sin(2 * np.pi * col * f * n))
        assert detect(to_int16(x)) == digit


@pytest.mark.parametrize("deviation", [-0.035, 0.035, -0.05, 0.05])
def test_frequency_deviation_of_3_5_percent_is_rejected(deviation: float) -> None:
    n = np.arange(800) / 8000
    for digit in ALL_DIGITS:
        row, col = dtmf_digit_frequencies(digit)
        f = 1 + deviation
        x = 7000 * (np.sin(2 * np.pi * row * f * n) + np.sin(2 * np.pi * col * f * n))
        assert detect(to_int16(x)) == "", digit


# --- talk-off: nothing but digits may be detected -----------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_voiced_speech_gives_no_digits(seed: int) -> None:
    for f0, level in (((90, 250), -20.0), ((95, 110), -12.0), ((180, 250), -6.0)):
        x = voiced_speech(8.0, seed, rms_dbfs=level, f0=f0)
        assert detect(x) == "", f"f0 {f0}"
        assert detect(x, ODD_CHUNKS) == ""


def test_speech_with_harmonics_on_dtmf_frequencies_gives_no_digits() -> None:
    # Steady 100 Hz pitch: harmonics at 700 and 1200 Hz, right on the '1' pair, through an
    # /uh/-like vowel whose F1/F2 boost exactly them.
    for seed in range(4):
        x = voiced_speech(6.0, seed, rms_dbfs=-10.0, f0=(99.0, 101.0), vowels=("uh", "a"))
        assert detect(x) == ""


@pytest.mark.parametrize("seed", range(6))
def test_music_chords_give_no_digits(seed: int) -> None:
    assert detect(music_chords(8.0, seed)) == ""


def test_chords_built_on_dtmf_like_notes_give_no_digits() -> None:
    # F5 (698 Hz) with F#6 (1480 Hz) is the '3' pair; G5/E6, A#5/D6 are close to '5' and '*'.
    f5, fs6, g5, e6, as5, d6 = 8, 21, 10, 19, 13, 17
    assert abs(note_hz(f5) - dtmf_digit_frequencies("3")[0]) < 3
    chords = [(f5, fs6), (g5, e6), (as5, d6), (f5, fs6, f5 + 12), (g5, e6, g5 - 12)]
    assert detect(music_chords(6.0, 1, chords=chords)) == ""


@pytest.mark.parametrize("level", [-40.0, -20.0, -6.0])
def test_noise_gives_no_digits(level: float) -> None:
    for seed in range(3):
        assert detect(white_noise(5.0, level, seed)) == ""
        assert detect(pink_noise(5.0, level, seed)) == ""


def test_speech_then_digit_then_speech() -> None:
    speech = voiced_speech(2.0, 5, rms_dbfs=-20.0)
    digit = dtmf_sequence("9", peak_dbfs=-10.0, lead_ms=0, off_ms=0)
    x = np.concatenate([speech, np.zeros(400, np.int16), digit, np.zeros(400, np.int16), speech])
    assert detect(x) == "9"


# --- API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000, 8000.0, "8000", True])
def test_only_8k_is_supported(rate: object) -> None:
    with pytest.raises(ValueError, match="8000"):
        DtmfDetector(rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [np.zeros(160, np.float64), np.zeros(160, np.int32), np.zeros((1, 160), np.int16), b"\0\0"],
    ids=["float64", "int32", "2-D", "bytes"],
)
def test_process_rejects_bad_pcm(bad: object) -> None:
    with pytest.raises(ValueError, match=r"int16|1-D|array"):
        DtmfDetector().process(bad)  # type: ignore[arg-type]


def test_digit_frequencies() -> None:
    assert dtmf_digit_frequencies("1") == (697.0, 1209.0)
    assert dtmf_digit_frequencies("D") == (941.0, 1633.0)
    assert dtmf_digit_frequencies("#") == (941.0, 1477.0)
    with pytest.raises(ValueError, match="DTMF digit"):
        dtmf_digit_frequencies("E")
