"""Built-in prompts (apology, goodbye, holding).

Prompts are spoken by espeak-ng when it is installed (made once per process, at start-up, off the
media path) and otherwise are a short tone pattern, so the gateway never depends on it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
from telcodecs import tone_pattern

from gateway.media.espeak import speak

Pcm = npt.NDArray[np.int16]

RATE = 8000  # the prompts' sample rate
APOLOGY_TEXT = "Sorry, we are having technical difficulties. Please call again later. Goodbye."
GOODBYE_TEXT = "This service is closing for maintenance. Please call again. Goodbye."
HOLDING_TEXT = "One moment, please."


def _tones(freqs: tuple[float, ...]) -> Pcm:
    """The fallback without espeak-ng: 250 ms tones, each followed by 50 ms of silence."""
    return tone_pattern([seg for f in freqs for seg in ((f, 250), (0.0, 50))], RATE, 0.3)


@cache
def apology_prompt() -> tuple[Pcm, int]:
    """The apology played when the provider is lost mid-call."""
    pcm = speak(APOLOGY_TEXT, RATE)
    return (pcm if pcm is not None else _tones((660.0, 550.0, 440.0))), RATE


@cache
def goodbye_prompt() -> tuple[Pcm, int]:
    """The goodbye played to calls still up when a drain's grace period ends."""
    pcm = speak(GOODBYE_TEXT, RATE)
    return (pcm if pcm is not None else _tones((440.0, 330.0))), RATE


@cache
def holding_prompt() -> tuple[Pcm, int]:
    """The short prompt played while a stalled provider session is re-opened."""
    pcm = speak(HOLDING_TEXT, RATE)
    return (pcm if pcm is not None else _tones((392.0, 494.0))), RATE


def warm_prompts() -> None:
    """Make the prompts now (at start-up), not when a call first needs one."""
    apology_prompt()
    goodbye_prompt()
    holding_prompt()
