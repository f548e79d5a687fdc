"""Audio format conversion between a leg's native format and the Realtime session's format.

One `AudioConverter` per direction per call: it holds the resampler's state, so frames of any
size flow through without clicks. Identity and G.711 law-to-law paths do no numpy work.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import telcodecs

from gateway.media.format import AudioFormat

Pcm = npt.NDArray[np.int16]

_DECODE: dict[str, Callable[[bytes], Pcm]] = {
    "pcmu": telcodecs.ulaw_decode,
    "pcma": telcodecs.alaw_decode,
}
_ENCODE: dict[str, Callable[[Pcm], bytes]] = {
    "pcmu": telcodecs.ulaw_encode,
    "pcma": telcodecs.alaw_encode,
}


def decode(data: bytes, fmt: AudioFormat) -> Pcm:
    """Bytes in `fmt` to int16 samples."""
    if fmt.encoding == "pcm16":
        if len(data) % 2:
            raise ValueError("PCM16 data has an odd number of bytes")
        return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
    return _DECODE[fmt.encoding](data)


def encode(pcm: Pcm, fmt: AudioFormat) -> bytes:
    """int16 samples to bytes in `fmt`."""
    if fmt.encoding == "pcm16":
        return pcm.astype("<i2", copy=False).tobytes()
    return _ENCODE[fmt.encoding](pcm)


class AudioConverter:
    """Streaming conversion from `src` to `dst` format (decode, resample, encode)."""

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self._resampler = telcodecs.Resampler(src.rate, dst.rate) if src.rate != dst.rate else None
        self._law: Callable[[bytes], bytes] | None = None
        if src.rate == dst.rate and {src.encoding, dst.encoding} == {"pcmu", "pcma"}:
            self._law = (
                telcodecs.ulaw_to_alaw if src.encoding == "pcmu" else (telcodecs.alaw_to_ulaw)
            )
        self.identity = src == dst

    def convert(self, data: bytes) -> bytes:
        """Convert one chunk; output length follows the rate ratio over the whole stream."""
        if self.identity:
            return data
        if self._law is not None:
            return self._law(data)
        pcm = decode(data, self.src)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return encode(pcm, self.dst)

    def flush(self) -> bytes:
        """The resampler's tail (its group delay), encoded; empty when there is no resampler."""
        if self._resampler is None:
            return b""
        return encode(self._resampler.flush(), self.dst)

    def convert_pcm(self, pcm: Pcm) -> bytes:
        """Convert int16 samples already at the source rate."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return encode(pcm, self.dst)


def resample_any(pcm: Pcm, src_rate: int, dst_rate: int) -> Pcm:
    """Resample a whole signal; rates outside telcodecs' set (espeak-ng's 22050 Hz) are first
    doubled by linear interpolation, whose images the following anti-alias filter removes."""
    if src_rate == dst_rate:
        return pcm
    if src_rate not in telcodecs.SUPPORTED_RATES and src_rate * 2 in telcodecs.SUPPORTED_RATES:
        n = len(pcm)
        pcm = np.interp(np.arange(2 * n) / 2.0, np.arange(n), pcm).astype(np.int16)
        src_rate *= 2
    return telcodecs.resample(pcm, src_rate, dst_rate)
