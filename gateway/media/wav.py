"""WAV files as int16 samples: what `Call.play()` plays and espeak-ng writes."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


def read_wav(path: str | Path | BinaryIO) -> tuple[Pcm, int]:
    """A mono int16 WAV file (a path, or a binary file object) as (samples, rate); stereo is
    averaged. ValueError otherwise. A streamed WAV's placeholder sizes are fine: what is there
    is read."""
    with wave.open(str(path) if isinstance(path, str | Path) else path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        if wav.getnchannels() == 2:
            data = (data.reshape(-1, 2).astype(np.int32).sum(axis=1) // 2).astype(np.int16)
        elif wav.getnchannels() != 1:
            raise ValueError(f"{path}: only mono or stereo WAV is supported")
    return data.astype(np.int16), rate
