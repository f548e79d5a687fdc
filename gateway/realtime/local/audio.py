"""Audio conversions for the local provider: G.711 <-> PCM16 and rate changes.

Uses the C `audioop` module (audioop-lts on Python >= 3.13): per-append work stays in C and numpy.
"""

from __future__ import annotations

import audioop

import numpy as np
from numpy.typing import NDArray

from gateway.media.port import AudioFormat

__all__ = ["bytes_per_ms", "convert", "from_pcm16", "pcm16_array", "to_pcm16"]


def bytes_per_ms(fmt: AudioFormat) -> float:
    """Bytes of `fmt` audio per millisecond (8.0 for G.711, 48.0 for PCM16 24 kHz)."""
    return fmt.rate * fmt.bytes_per_sample / 1000


def to_pcm16(data: bytes, fmt: AudioFormat) -> bytes:
    """Little-endian PCM16 bytes at `fmt.rate` for audio in `fmt`."""
    if fmt.encoding == "pcmu":
        return audioop.ulaw2lin(data, 2)
    if fmt.encoding == "pcma":
        return audioop.alaw2lin(data, 2)
    return data


def from_pcm16(pcm: bytes, fmt: AudioFormat) -> bytes:
    """Audio in `fmt` for little-endian PCM16 bytes already at `fmt.rate`."""
    if fmt.encoding == "pcmu":
        return audioop.lin2ulaw(pcm, 2)
    if fmt.encoding == "pcma":
        return audioop.lin2alaw(pcm, 2)
    return pcm


def pcm16_array(data: bytes, fmt: AudioFormat) -> NDArray[np.int16]:
    """Samples of `data` (in `fmt`) as an int16 array (a view when `fmt` is PCM16)."""
    return np.frombuffer(to_pcm16(data, fmt), dtype="<i2")


def convert(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """`data` in `src` re-encoded (and resampled) into `dst`."""
    if src == dst:
        return data
    pcm = to_pcm16(data, src)
    if src.rate != dst.rate:
        pcm, _ = audioop.ratecv(pcm, 2, 1, src.rate, dst.rate, None)
    return from_pcm16(pcm, dst)
