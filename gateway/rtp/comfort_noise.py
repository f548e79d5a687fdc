"""Comfort noise (RFC 3389) rendered from a shared noise table: pure functions, no state.

A CN packet's first payload byte is the noise level in -dBov (§3: 0-127, the top bit unused);
the spectral coefficients after it may be ignored (§4), so the noise played is white. dBov is
relative to the overload point, the same full scale as telcodecs' dBFS: level 40 renders noise
whose rms is -40 dBFS.

No random numbers per frame: one unit-rms white-noise table is made at import (fixed seed) and
read at an offset that the caller carries from frame to frame (`next_offset`), wrapping at its
end. `noise_pcm16` gives int16 samples at any rate (white noise has no rate of its own; the
caller asks for a frame's worth of samples); `noise_g711` gives the same noise G.711-coded,
from a per-(codec, level) coded table made once and shared by every call, so a frame of noise
costs one bytes slice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray
from telcodecs import alaw_encode, ulaw_encode

__all__ = [
    "CN_LEVEL_MAX",
    "NOISE_TABLE_SAMPLES",
    "cn_level",
    "next_offset",
    "noise_g711",
    "noise_pcm16",
]

#: the quietest level (-127 dBov): renders as digital silence
CN_LEVEL_MAX: Final = 127
#: table length: 4 s at 8 kHz, 0.68 s at 48 kHz before the noise repeats
NOISE_TABLE_SAMPLES: Final = 1 << 15
_FULL_SCALE: Final = 32768.0


def _unit_table() -> NDArray[np.float64]:
    table = np.random.default_rng(3389).standard_normal(NOISE_TABLE_SAMPLES)
    table -= table.mean()
    table /= np.sqrt(np.mean(table * table))  # rms exactly 1 over the table
    table.setflags(write=False)
    return table


_UNIT: Final = _unit_table()


def cn_level(payload: bytes) -> int | None:
    """The noise level of a CN payload in -dBov (RFC 3389 §3), None for an empty payload."""
    return payload[0] & 0x7F if payload else None


def next_offset(offset: int, nsamples: int) -> int:
    """The table offset after reading `nsamples` at `offset`."""
    return (offset + nsamples) % NOISE_TABLE_SAMPLES


@lru_cache(maxsize=128)
def _scaled(level: int) -> NDArray[np.int16]:
    """The whole table at `level` -dBov as int16 (made once per level, shared)."""
    amplitude = _FULL_SCALE * 10 ** (-level / 20)
    out = np.clip(np.rint(_UNIT * amplitude), -32768, 32767).astype(np.int16)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def _coded(codec: str, level: int) -> bytes:
    """The whole table at `level` G.711-coded in `codec` (made once per codec and level)."""
    scaled = _scaled(level)
    return ulaw_encode(scaled) if codec == "pcmu" else alaw_encode(scaled)


def _check(level: int, nsamples: int, offset: int) -> None:
    if not 0 <= level <= CN_LEVEL_MAX:
        raise ValueError(f"CN level {level}: 0-{CN_LEVEL_MAX} (-dBov)")
    if not 0 <= nsamples <= NOISE_TABLE_SAMPLES or not 0 <= offset < NOISE_TABLE_SAMPLES:
        raise ValueError(f"noise read of {nsamples} samples at {offset}")


def noise_pcm16(level: int, nsamples: int, offset: int) -> NDArray[np.int16]:
    """`nsamples` of white noise whose rms is `level` dB below full scale (int16), read from
    the shared table at `offset` (see `next_offset`)."""
    _check(level, nsamples, offset)
    table = _scaled(level)
    end = offset + nsamples
    if end <= NOISE_TABLE_SAMPLES:
        return table[offset:end]
    return np.concatenate((table[offset:], table[: end - NOISE_TABLE_SAMPLES]))


def noise_g711(codec: str, level: int, nsamples: int, offset: int) -> bytes:
    """`noise_pcm16(level, nsamples, offset)` coded in G.711 `codec` ("pcmu" or "pcma")."""
    if codec not in ("pcmu", "pcma"):
        raise ValueError(f"codec {codec!r}: pcmu or pcma")
    _check(level, nsamples, offset)
    table = _coded(codec, level)
    end = offset + nsamples
    if end <= NOISE_TABLE_SAMPLES:
        return table[offset:end]
    return table[offset:] + table[: end - NOISE_TABLE_SAMPLES]
