"""espeak-ng, the gateway's one speech synthesiser: text to int16 samples, in a subprocess.

Used off the media path only: the built-in call prompts are made once at start-up
(`gateway.call.prompts`), the local provider's prompts once per process
(`gateway.realtime.local.tts`). espeak-ng is optional: without it (or when it fails) `speak()`
returns None and the callers fall back to tone patterns.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import numpy.typing as npt
from telcodecs import resample_any

from gateway.media.wav import read_wav

__all__ = ["speak"]

Pcm = npt.NDArray[np.int16]


def speak(
    text: str,
    rate: int,
    *,
    voice: str | None = None,
    speed_wpm: int | None = None,
    timeout: float = 20.0,
) -> Pcm | None:
    """`text` spoken by espeak-ng (its default voice and speed unless given), as int16 samples
    at `rate`; None when espeak-ng is not installed, fails or takes longer than `timeout`."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    args = [exe, "--stdout"]
    if voice is not None:
        args += ["-v", voice]
    if speed_wpm is not None:
        args += ["-s", str(speed_wpm)]
    args.append(text)
    try:
        done = subprocess.run(args, check=True, capture_output=True, timeout=timeout)
        pcm, src_rate = read_wav(io.BytesIO(done.stdout))
        return resample_any(pcm, src_rate, rate)
    except (OSError, subprocess.SubprocessError, ValueError, EOFError, wave.Error):
        return None
