"""Audio in an `AudioFormat`: decode, encode, and conversion between formats.

G.711 and resampling are telcodecs'; this module only picks the right one for a format. The
bridge holds one streaming `AudioConverter` per direction per call (it keeps the resampler's
state, so frames of any size flow through without clicks); `convert()` converts a whole signal
at once (the local provider's echo and prompts). Identity and G.711 law-to-law paths do no numpy
work.
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


def silence_byte(fmt: AudioFormat) -> int:
    """The byte that repeated is silence in `fmt` (0 for PCM16; G.711's from telcodecs)."""
    return 0 if fmt.encoding == "pcm16" else telcodecs.g711_silence_code(fmt.encoding)


def _law_to_law(src: AudioFormat, dst: AudioFormat) -> Callable[[bytes], bytes] | None:
    """The direct G.711 transcoder from `src` to `dst`, when that is all there is to do."""
    if src.rate == dst.rate and {src.encoding, dst.encoding} == {"pcmu", "pcma"}:
        return telcodecs.ulaw_to_alaw if src.encoding == "pcmu" else telcodecs.alaw_to_ulaw
    return None


def convert(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """A whole signal in `src` re-encoded (and resampled, tail included) into `dst`."""
    if src == dst:
        return data
    law = _law_to_law(src, dst)
    if law is not None:
        return law(data)
    pcm = decode(data, src)
    if src.rate != dst.rate:
        pcm = telcodecs.resample(pcm, src.rate, dst.rate)
    return encode(pcm, dst)


class AudioConverter:
    """Streaming conversion from `src` to `dst` format (decode, resample, encode)."""

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self._resampler = telcodecs.Resampler(src.rate, dst.rate) if src.rate != dst.rate else None
        self._law = _law_to_law(src, dst)
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
