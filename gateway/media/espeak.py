"""espeak-ng, the gateway's one speech synthesiser: text to int16 samples, in a subprocess.

Used off the media path only: the built-in call prompts are made once at start-up
(`gateway.call.prompts`), the local provider's prompts once per process
(`gateway.realtime.local.tts`). espeak-ng is optional: without it (or when it fails) `speak()`
returns None and the callers fall back to tone patterns.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import numpy.typing as npt
from telcodecs import resample_any

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
        pcm, src_rate = _read_stream_wav(done.stdout)
        return resample_any(pcm, src_rate, rate)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _read_stream_wav(wav: bytes) -> tuple[Pcm, int]:
    """The samples and rate of the WAV espeak-ng streams to stdout: 16-bit mono, with
    placeholder sizes (so not for the `wave` module); ValueError when it is not one."""
    pos = wav.find(b"data")
    if wav[:4] != b"RIFF" or pos < 0 or len(wav) < 44:
        raise ValueError("espeak-ng wrote no WAV")
    rate = int.from_bytes(wav[24:28], "little")
    data = wav[pos + 8 :]
    data = data[: len(data) - len(data) % 2]
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate
