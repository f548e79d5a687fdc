"""Built-in prompts (apology, goodbye, holding) and reading WAV files for `Call.play()`.

Prompts are spoken by espeak-ng when it is installed (made once per process, at start-up, off the
media path) and otherwise are a short tone pattern, so the gateway never depends on it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.media.convert import resample_any
from gateway.media.wav import read_wav

Pcm = npt.NDArray[np.int16]

APOLOGY_TEXT = "Sorry, we are having technical difficulties. Please call again later. Goodbye."
GOODBYE_TEXT = "This service is closing for maintenance. Please call again. Goodbye."
HOLDING_TEXT = "One moment, please."


def _tones(freqs: tuple[float, ...], rate: int = 8000) -> Pcm:
    parts = []
    t = np.arange(int(0.25 * rate)) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    for f in freqs:
        parts.append(0.3 * 32767 * env * np.sin(2 * np.pi * f * t))
        parts.append(np.zeros(int(0.05 * rate)))
    return np.concatenate(parts).astype(np.int16)


def speak(text: str, rate: int = 8000) -> Pcm | None:
    """`text` spoken by espeak-ng at `rate`, or None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.wav"
        try:
            subprocess.run([exe, "-w", str(out), text], check=True, capture_output=True, timeout=20)
            pcm, src_rate = read_wav(out)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    return resample_any(pcm, src_rate, rate)


@cache
def apology_prompt() -> tuple[Pcm, int]:
    """The apology played when the provider is lost mid-call."""
    pcm = speak(APOLOGY_TEXT)
    return (pcm if pcm is not None else _tones((660.0, 550.0, 440.0))), 8000


@cache
def goodbye_prompt() -> tuple[Pcm, int]:
    """The goodbye played to calls still up when a drain's grace period ends."""
    pcm = speak(GOODBYE_TEXT)
    return (pcm if pcm is not None else _tones((440.0, 330.0))), 8000


@cache
def holding_prompt() -> tuple[Pcm, int]:
    """The short prompt played while a stalled provider session is re-opened."""
    pcm = speak(HOLDING_TEXT)
    return (pcm if pcm is not None else _tones((392.0, 494.0))), 8000


def warm_prompts() -> None:
    """Make the prompts now (at start-up), not when a call first needs one."""
    apology_prompt()
    goodbye_prompt()
    holding_prompt()
