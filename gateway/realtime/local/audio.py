"""Audio conversions for the local provider: G.711 <-> PCM16 and rate changes, with telcodecs."""

from __future__ import annotations

import numpy as np
import telcodecs
from numpy.typing import NDArray

from gateway.media.convert import resample_any
from gateway.media.format import AudioFormat

__all__ = ["bytes_per_ms", "convert", "from_pcm16", "pcm16_array", "resample_bytes", "to_pcm16"]


def bytes_per_ms(fmt: AudioFormat) -> float:
    """Bytes of `fmt` audio per millisecond (8.0 for G.711, 48.0 for PCM16 24 kHz)."""
    return fmt.rate * fmt.bytes_per_sample / 1000


def pcm16_array(data: bytes, fmt: AudioFormat) -> NDArray[np.int16]:
    """Samples of `data` (in `fmt`) as an int16 array (a view when `fmt` is PCM16)."""
    if fmt.encoding == "pcmu":
        return telcodecs.ulaw_decode(data)
    if fmt.encoding == "pcma":
        return telcodecs.alaw_decode(data)
    return telcodecs.pcm16_from_bytes(data)


def to_pcm16(data: bytes, fmt: AudioFormat) -> bytes:
    """Little-endian PCM16 bytes at `fmt.rate` for audio in `fmt`."""
    if fmt.encoding == "pcm16":
        return data
    return pcm16_array(data, fmt).astype("<i2").tobytes()


def _encode(pcm: NDArray[np.int16], fmt: AudioFormat) -> bytes:
    if fmt.encoding == "pcmu":
        return telcodecs.ulaw_encode(pcm)
    if fmt.encoding == "pcma":
        return telcodecs.alaw_encode(pcm)
    return pcm.astype("<i2").tobytes()


def from_pcm16(pcm: bytes, fmt: AudioFormat) -> bytes:
    """Audio in `fmt` for little-endian PCM16 bytes already at `fmt.rate`."""
    if fmt.encoding == "pcm16":
        return pcm
    return _encode(telcodecs.pcm16_from_bytes(pcm), fmt)


def convert(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """`data` in `src` re-encoded (and resampled, tail included) into `dst`."""
    if src == dst:
        return data
    if src.rate == dst.rate and {src.encoding, dst.encoding} == {"pcmu", "pcma"}:
        return (
            telcodecs.ulaw_to_alaw(data) if src.encoding == "pcmu" else telcodecs.alaw_to_ulaw(data)
        )
    pcm = pcm16_array(data, src)
    if src.rate != dst.rate:
        pcm = telcodecs.resample(pcm, src.rate, dst.rate)
    return _encode(pcm, dst)


def resample_bytes(pcm: bytes, src: int, dst: int) -> bytes:
    """PCM16 bytes at `src` Hz resampled to `dst` Hz (any rate `resample_any` takes)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
    return resample_any(samples, src, dst).astype("<i2").tobytes()
