"""The espeak-ng wrapper against the real espeak-ng: speech at the asked rate, or None."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from telcodecs import rms_dbfs

from gateway.media.espeak import speak


@pytest.fixture(autouse=True)
def _espeak_installed() -> None:
    assert shutil.which("espeak-ng"), "espeak-ng is missing: tools/install-peers installs it"


def test_speech_comes_back_at_the_asked_rate() -> None:
    at8k = speak("One moment, please.", 8000)
    at24k = speak("One moment, please.", 24000)
    assert at8k is not None and at24k is not None
    assert at8k.dtype == np.int16 and at24k.dtype == np.int16
    assert 0.8 < len(at8k) / 8000 < 3.0  # about a second and a half of speech
    # the same speech at 3x the rate (the resamplers' tails differ by a few ms)
    assert len(at24k) == pytest.approx(3 * len(at8k), abs=120)
    assert rms_dbfs(at8k) > -35  # speech, not silence


def test_voice_and_speed_are_passed_on() -> None:
    normal = speak("This is a longer sentence to say.", 8000)
    slow = speak("This is a longer sentence to say.", 8000, voice="en", speed_wpm=100)
    assert normal is not None and slow is not None
    assert len(slow) > 1.4 * len(normal)  # 100 words a minute against espeak-ng's 175


def test_none_without_espeak_or_on_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert speak("Hello.", 8000, timeout=0.0001) is None
    monkeypatch.setenv("PATH", "/nonexistent")
    assert speak("Hello.", 8000) is None
