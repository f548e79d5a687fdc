"""Test audio for the call, RTP, SIP and WebRTC tests, and checks by content (cross-correlation).

Signals: `speech_like` (voiced, 8 kHz by default), `chirp` (48 kHz), `sine_wave`. Checks:
`best_correlation(needle, haystack)` (signed peak), `windows_found` (per 250 ms window),
`find_correlation(received, reference)` / `best_abs_correlation` (either polarity, with the
offset), `best_lag` (a short lag search), `tone_share` (how much of a signal is given tones).
Conversion and files: `resample`, `read_wav_8k`, `read_mono_wav`, `read_stereo_wav`. The codec
measurements (tone fits, SNR, aliasing) are in `signals.py`.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import telcodecs

Pcm = npt.NDArray[np.int16]


# --- signals ------------------------------------------------------------------------------------


def speech_like(seconds: float, rate: int = 8000, seed: int = 1) -> Pcm:
    """A voiced, speech-like test signal: harmonics of a gliding pitch, syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    out = 0.25 * 32767 * sig / np.max(np.abs(sig)) * env
    return out.astype(np.int16)


def chirp(seconds: float = 1.0, f0: float = 300.0, f1: float = 3000.0, rate: int = 48000) -> Pcm:
    """A linear chirp, -10 dBFS, with 10 ms fades: unmistakable by correlation."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    signal = 0.3 * np.sin(phase)
    fade = int(0.01 * rate)
    ramp = np.linspace(0.0, 1.0, fade)
    signal[:fade] *= ramp
    signal[-fade:] *= ramp[::-1]
    return (signal * 32767).astype(np.int16)


def sine_wave(freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> Pcm:
    """A sine of `seconds` at `rate`, truncated to int16."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --- checks by content --------------------------------------------------------------------------


def best_correlation(needle: Pcm, haystack: Pcm) -> float:
    """Peak normalised cross-correlation of `needle` anywhere in `haystack` (FFT)."""
    a = needle.astype(np.float64)
    b = haystack.astype(np.float64)
    if len(b) < len(a) or not len(a):
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: len(b) - len(a) + 1]
    cum = np.concatenate(([0.0], np.cumsum(b**2)))
    energy = cum[len(a) :] - cum[: len(b) - len(a) + 1]
    norm = np.sqrt(np.maximum(energy, 0.0) * np.sum(a**2)) + 1e-9
    return float(np.max(corr / norm))


def tone_share(pcm: Pcm, freqs: tuple[float, ...], rate: int = 8000, width: float = 20.0) -> float:
    """The share (0..1) of `pcm`'s energy within `width` Hz of the `freqs` (a Hann-windowed
    FFT), e.g. ringback's 440 + 480 Hz."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    power = np.abs(np.fft.rfft(x)) ** 2
    hz = np.fft.rfftfreq(len(pcm), 1 / rate)
    near = np.zeros(len(hz), bool)
    for f in freqs:
        near |= np.abs(hz - f) <= width
    total = float(np.sum(power))
    return float(np.sum(power[near])) / total if total > 0 else 0.0


def windows_found(needle: Pcm, haystack: Pcm, window: int = 2000) -> list[float]:
    """Best correlation of each 250 ms window of `needle` anywhere in `haystack`: robust to
    the odd frame a phone's jitter buffer drops or repeats under load, still a check by content
    (an unrelated signal scores well under 0.5)."""
    return [
        round(best_correlation(needle[at : at + window], haystack), 3)
        for at in range(0, len(needle) - window + 1, window)
    ]


def find_correlation(received: Pcm, reference: Pcm) -> tuple[int, float]:
    """Where `reference` best matches within `received` (sample offset) and how well (0..1,
    either polarity)."""
    x = received.astype(np.float64)
    r = reference.astype(np.float64)
    if len(x) < len(r) or not np.any(r):
        return 0, 0.0
    n = 1 << int(np.ceil(np.log2(len(x) + len(r))))
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(r, n)), n)[: len(x) - len(r) + 1]
    power = np.concatenate([[0.0], np.cumsum(x * x)])
    energy = power[len(r) :] - power[: len(x) - len(r) + 1]  # sliding window energy
    norm = np.sqrt(np.maximum(energy, 1e-9) * float(np.dot(r, r)))
    scores = np.abs(corr) / norm
    best = int(np.argmax(scores))
    return best, float(scores[best])


def best_abs_correlation(received: Pcm, reference: Pcm) -> float:
    """Peak normalised cross-correlation of `reference` within `received` (0..1, either
    polarity)."""
    return find_correlation(received, reference)[1]


def best_lag(
    reference: npt.NDArray[np.float64], signal: npt.NDArray[np.float64], max_lag: int
) -> tuple[int, float]:
    """The lag of `signal` against `reference` with the highest normalised correlation."""
    best = (0, -1.0)
    n = len(reference)
    for lag in range(max_lag + 1):
        seg = signal[lag : lag + n]
        if len(seg) < n:
            break
        denom = float(np.linalg.norm(seg) * np.linalg.norm(reference)) or 1.0
        corr = float(np.dot(seg, reference)) / denom
        if corr > best[1]:
            best = (lag, corr)
    return best


# --- conversion and files -----------------------------------------------------------------------


def resample(pcm: Pcm, src: int, dst: int) -> Pcm:
    """`pcm` at `dst` Hz (telcodecs, whole signal)."""
    if src == dst:
        return pcm
    resampler = telcodecs.Resampler(src, dst)
    out = np.concatenate([resampler.process(pcm), resampler.flush()])
    return np.asarray(out, dtype=np.int16)


def read_wav_8k(path: Path) -> Pcm:
    """A WAV file as 8 kHz mono int16 (mixed down and resampled if it is not)."""
    with wave.open(str(path)) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        assert width == 2, f"{path}: {width * 8}-bit samples"
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != 8000:
        resampler = telcodecs.Resampler(rate, 8000)
        pcm = np.concatenate([resampler.process(pcm), resampler.flush()]).astype(np.int16)
    return pcm


def read_mono_wav(path: Path, rate: int = 48000) -> Pcm:
    """The samples of a 16-bit mono WAV at `rate` Hz."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == rate and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def read_stereo_wav(path: Path) -> tuple[int, npt.NDArray[np.int16]]:
    """(rate, samples as rows of [left, right]) of a 16-bit stereo WAV (a call recording)."""
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        frames = w.readframes(w.getnframes())
        return w.getframerate(), np.frombuffer(frames, "<i2").reshape(-1, 2)
