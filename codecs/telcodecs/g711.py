"""G.711 µ-law (PCMU) and A-law (PCMA), bit-exact with the reference `audioop` codec.

Everything is table driven: decoding indexes a 256-entry int16 table with the code bytes, encoding
indexes a 65,536-entry uint8 table with the samples viewed as uint16. The tables are computed once
at import from the G.711 segment rules (the same arithmetic as CPython's audioop.c), so there is no
runtime dependency on `audioop`.

Inputs may be 1-D (one call) or 2-D (calls x samples): a batch of frames from many calls is coded
with one table lookup.
"""

from __future__ import annotations

import bisect
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from telcodecs._validate import BytesLike, check_count, codes_input, pcm16_input

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "alaw_encode_array",
    "alaw_to_ulaw",
    "g711_gain_table",
    "g711_silence",
    "g711_silence_code",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_encode_array",
    "ulaw_to_alaw",
]

#: The µ-law code for zero (decodes to 0).
ULAW_SILENCE: Final = 0xFF
#: The A-law code for the smallest positive value (decodes to +8): what an encoder emits for 0.
ALAW_SILENCE: Final = 0xD5

PcmInput = NDArray[np.int16] | BytesLike
CodeInput = NDArray[np.uint8] | BytesLike


def _ulaw_decode_table() -> NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_decode_table() -> NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _segment(mag: NDArray[np.int32], seg_end: tuple[int, ...]) -> NDArray[np.int32]:
    """Index of the first segment end >= mag (len(seg_end) above all), as audioop's search()."""
    return np.searchsorted(np.asarray(seg_end, dtype=np.int32), mag, side="left").astype(np.int32)


def _ulaw_encode_table() -> NDArray[np.uint8]:
    # Index i is the uint16 view of an int16 sample; audioop codes the sample's top 14 bits.
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg = _segment(mag, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> NDArray[np.uint8]:
    # audioop codes the sample's top 13 bits.
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(mag, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> shift) & 0x0F))
    return (code ^ mask).astype(np.uint8)


_ULAW_DEC: Final = _ulaw_decode_table()
_ALAW_DEC: Final = _alaw_decode_table()
_ULAW_ENC: Final = _ulaw_encode_table()
_ALAW_ENC: Final = _alaw_encode_table()
for _table in (_ULAW_DEC, _ALAW_DEC, _ULAW_ENC, _ALAW_ENC):
    _table.flags.writeable = False

# Direct transcoding: decode to linear, re-encode (what audioop's lin2alaw(ulaw2lin()) does).
_ULAW_TO_ALAW: Final = bytes(_ALAW_ENC[_ULAW_DEC.view(np.uint16)])
_ALAW_TO_ULAW: Final = bytes(_ULAW_ENC[_ALAW_DEC.view(np.uint16)])


def _encode(table: NDArray[np.uint8], pcm: PcmInput) -> NDArray[np.uint8]:
    samples = pcm16_input(pcm, ndims=(1, 2))
    return table.take(samples.view(np.uint16))


def ulaw_encode_array(pcm: PcmInput) -> NDArray[np.uint8]:
    """µ-law encode int16 samples (1-D or 2-D, or PCM16 bytes) into a uint8 array of equal shape."""
    return _encode(_ULAW_ENC, pcm)


def alaw_encode_array(pcm: PcmInput) -> NDArray[np.uint8]:
    """A-law encode int16 samples (1-D or 2-D, or PCM16 bytes) into a uint8 array of equal shape."""
    return _encode(_ALAW_ENC, pcm)


def ulaw_encode(pcm: PcmInput) -> bytes:
    """µ-law encode int16 samples to bytes, one byte per sample.

    `pcm` is a 1-D int16 array, a 2-D (calls x samples) int16 array — the result is then the
    rows' payloads back to back, row-major — or little-endian PCM16 bytes.
    """
    return _encode(_ULAW_ENC, pcm).tobytes()


def alaw_encode(pcm: PcmInput) -> bytes:
    """A-law encode int16 samples to bytes; same input forms as `ulaw_encode`."""
    return _encode(_ALAW_ENC, pcm).tobytes()


def ulaw_decode(data: CodeInput) -> NDArray[np.int16]:
    """Decode µ-law bytes (or a 1-D/2-D uint8 array) to int16 samples of the same shape."""
    return _ULAW_DEC.take(codes_input(data))


def alaw_decode(data: CodeInput) -> NDArray[np.int16]:
    """Decode A-law bytes (or a 1-D/2-D uint8 array) to int16 samples of the same shape."""
    return _ALAW_DEC.take(codes_input(data))


def _transcode(table: bytes, array_table: NDArray[np.uint8], data: CodeInput) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data).translate(table)
    return array_table.take(codes_input(data, ndims=(1,))).tobytes()


_ULAW_TO_ALAW_ARRAY: Final = np.frombuffer(_ULAW_TO_ALAW, dtype=np.uint8)
_ALAW_TO_ULAW_ARRAY: Final = np.frombuffer(_ALAW_TO_ULAW, dtype=np.uint8)


def ulaw_to_alaw(data: CodeInput) -> bytes:
    """Transcode µ-law bytes to A-law bytes (equal to alaw_encode(ulaw_decode(data)))."""
    return _transcode(_ULAW_TO_ALAW, _ULAW_TO_ALAW_ARRAY, data)


def alaw_to_ulaw(data: CodeInput) -> bytes:
    """Transcode A-law bytes to µ-law bytes (equal to ulaw_encode(alaw_decode(data)))."""
    return _transcode(_ALAW_TO_ULAW, _ALAW_TO_ULAW_ARRAY, data)


_SILENCE_CODES: Final[dict[str, int]] = {
    "ulaw": ULAW_SILENCE,
    "pcmu": ULAW_SILENCE,
    "alaw": ALAW_SILENCE,
    "pcma": ALAW_SILENCE,
}

G711Name = Literal["ulaw", "pcmu", "alaw", "pcma"]


def g711_silence_code(codec: str) -> int:
    """The code of silence (what an encoder emits for 0): 0xFF in µ-law, 0xD5 in A-law;
    `codec` is "ulaw"/"pcmu" or "alaw"/"pcma"."""
    code = _SILENCE_CODES.get(codec) if isinstance(codec, str) else None
    if code is None:
        raise ValueError(f"unknown G.711 codec {codec!r}: expected ulaw, pcmu, alaw or pcma")
    return code


def g711_silence(codec: str, nsamples: int) -> bytes:
    """`nsamples` bytes of G.711 silence; `codec` is "ulaw"/"pcmu" or "alaw"/"pcma"."""
    return bytes((g711_silence_code(codec),)) * check_count(nsamples)


def g711_gain_table(codec: str, gain: float) -> bytes:
    """A `bytes.translate` table that scales G.711 codes by `gain` in the code domain: each code
    maps to the code whose value is nearest its value times `gain` (the lower on a tie).

    Made once, off the media path (a jitter buffer's fading concealment uses a few); applying it
    is one `bytes.translate` per frame, with no decode or encode."""
    _ = g711_silence_code(codec)  # the codec's name is checked
    decode = (_ULAW_DEC if codec in ("ulaw", "pcmu") else _ALAW_DEC).tolist()
    by_value = sorted((v, c) for c, v in enumerate(decode))
    values = [v for v, _ in by_value]
    out = bytearray(256)
    for code, value in enumerate(decode):
        target = value * gain
        i = bisect.bisect_left(values, target)
        candidates = [j for j in (i - 1, i) if 0 <= j < 256]
        best = min(candidates, key=lambda j: abs(values[j] - target))
        out[code] = by_value[best][1]
    return bytes(out)
