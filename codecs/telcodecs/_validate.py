"""Input checks shared by the telcodecs modules; every failure is a ValueError naming it."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

#: Sample rates every telcodecs component accepts.
SUPPORTED_RATES: tuple[int, ...] = (8000, 16000, 24000, 44100, 48000)

BytesLike: TypeAlias = bytes | bytearray | memoryview


def _describe(obj: object) -> str:
    if isinstance(obj, np.ndarray):
        return f"ndarray of dtype {obj.dtype} and shape {obj.shape}"
    return type(obj).__name__


def check_rate(rate: object, what: str = "rate") -> int:
    """Return `rate` if it is one of SUPPORTED_RATES, else raise ValueError."""
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer):
        raise ValueError(f"{what} must be an int in Hz, got {rate!r}")
    if rate not in SUPPORTED_RATES:
        rates = ", ".join(map(str, SUPPORTED_RATES))
        raise ValueError(f"unsupported {what} {rate!r} Hz: expected one of {rates}")
    return int(rate)


def check_count(n: object, what: str = "nsamples") -> int:
    """Return `n` if it is a non-negative int, else raise ValueError."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n!r}")
    return int(n)


def pcm16_array(pcm: object, *, ndims: tuple[int, ...] = (1,)) -> NDArray[np.int16]:
    """Check that `pcm` is a native int16 ndarray with an allowed number of dimensions."""
    if not isinstance(pcm, np.ndarray):
        raise ValueError(f"expected an int16 numpy array, got {_describe(pcm)}")
    if pcm.dtype != np.dtype(np.int16):
        raise ValueError(f"expected int16 samples, got dtype {pcm.dtype} (nothing is coerced)")
    if pcm.ndim not in ndims:
        allowed = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"expected a {allowed} int16 array, got a {pcm.ndim}-D array")
    return pcm


def pcm16_from_bytes(data: BytesLike) -> NDArray[np.int16]:
    """View little-endian PCM16 bytes as a read-only 1-D int16 array (no copy where possible).

    Raises ValueError for an odd byte count or a non-bytes argument.
    """
    raw = _contiguous_bytes(data, "PCM16 bytes")
    if len(raw) % 2:
        raise ValueError(f"PCM16 data must have an even byte count, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16, copy=False)


def pcm16_input(pcm: object, *, ndims: tuple[int, ...] = (1,)) -> NDArray[np.int16]:
    """An int16 ndarray as is, or little-endian PCM16 bytes as a 1-D int16 array."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        return pcm16_from_bytes(pcm)
    return pcm16_array(pcm, ndims=ndims)


def codes_input(data: object, *, ndims: tuple[int, ...] = (1, 2)) -> NDArray[np.uint8]:
    """G.711 code bytes as a uint8 array: bytes-like (1-D) or a uint8 ndarray (1-D or 2-D)."""
    if type(data) is bytes:  # the common case first
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(_contiguous_bytes(data, "G.711 data"), dtype=np.uint8)
    if not isinstance(data, np.ndarray):
        raise ValueError(f"expected G.711 bytes or a uint8 array, got {_describe(data)}")
    if data.dtype != np.dtype(np.uint8):
        raise ValueError(f"expected uint8 G.711 codes, got dtype {data.dtype}")
    if data.ndim not in ndims:
        allowed = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"expected a {allowed} uint8 array, got a {data.ndim}-D array")
    return data


def _contiguous_bytes(data: Any, what: str) -> bytes | bytearray | memoryview:
    if isinstance(data, bytes | bytearray):
        return data
    if isinstance(data, memoryview):
        if not data.c_contiguous:
            raise ValueError(f"{what}: memoryview must be C-contiguous")
        return data.cast("B") if data.format != "B" or data.ndim != 1 else data
    raise ValueError(f"expected {what} as bytes, bytearray or memoryview, got {_describe(data)}")
