"""The package root exports the stable names other parts of the gateway rely on."""

from __future__ import annotations

import inspect

import numpy as np
import telcodecs

STABLE = {
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "ulaw_to_alaw",
    "alaw_to_ulaw",
    "ULAW_SILENCE",
    "ALAW_SILENCE",
    "g711_silence",
    "Resampler",
    "DtmfDetector",
    "SUPPORTED_RATES",
    "rms_dbfs",
    "peak_dbfs",
    "silence",
    "ComfortNoiseSource",
}


def test_stable_names_are_exported() -> None:
    assert set(telcodecs.__all__) >= STABLE
    for name in telcodecs.__all__:
        assert hasattr(telcodecs, name), name


def test_supported_rates() -> None:
    assert telcodecs.SUPPORTED_RATES == (8000, 16000, 24000, 44100, 48000)


def test_signatures_of_the_contracts() -> None:
    assert list(inspect.signature(telcodecs.Resampler).parameters) == ["src_rate", "dst_rate"]
    assert list(inspect.signature(telcodecs.DtmfDetector).parameters) == ["rate"]
    assert inspect.signature(telcodecs.DtmfDetector).parameters["rate"].default == 8000
    for name in ("ulaw_encode", "alaw_encode"):
        assert list(inspect.signature(getattr(telcodecs, name)).parameters) == ["pcm"]
    for name in ("ulaw_decode", "alaw_decode"):
        assert list(inspect.signature(getattr(telcodecs, name)).parameters) == ["data"]


def test_public_api_round_trip() -> None:
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    payload = telcodecs.ulaw_encode(pcm)
    assert isinstance(payload, bytes) and len(payload) == 160
    up = telcodecs.Resampler(8000, 24000).process(telcodecs.ulaw_decode(payload))
    assert up.dtype == np.int16 and up.shape == (480,)
    assert telcodecs.DtmfDetector().process(pcm) == []
