"""Test signals and measurements for the telcodecs tests (and the codec benchmark's quality table).

Measurement method used throughout: least-squares fit of a sine at a known frequency (plus DC)
to the settled part of the signal; the fitted amplitude is the tone's level and the residual is
everything else (noise, distortion, images, aliases).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from telcodecs import Resampler
from telcodecs.dtmf import dtmf_digit_frequencies

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference only; audioop-lts provides it on Python >= 3.13

FULL_SCALE = 32768.0
FRAME_MS = 20


def to_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def sine(
    freq: float, rate: int, nsamples: int, amp: float, phase: float = 0.0
) -> NDArray[np.int16]:
    n = np.arange(nsamples, dtype=np.float64)
    return to_int16(amp * np.sin(2 * np.pi * freq * n / rate + phase))


def frames(pcm: NDArray[np.int16], size: int) -> Iterable[NDArray[np.int16]]:
    for i in range(0, pcm.shape[0], size):
        yield pcm[i : i + size]


def chunks(pcm: NDArray[np.int16], sizes: Sequence[int]) -> Iterable[NDArray[np.int16]]:
    """Split pcm into chunks of the given sizes, cycling through them."""
    pos = i = 0
    while pos < pcm.shape[0]:
        size = sizes[i % len(sizes)]
        yield pcm[pos : pos + size]
        pos += size
        i += 1


def resample_framed(
    pcm: NDArray[np.int16], src: int, dst: int, frame_ms: int = FRAME_MS
) -> NDArray[np.int16]:
    """Resample through a fresh Resampler in frame_ms frames (no flush)."""
    r = Resampler(src, dst)
    parts = [r.process(f) for f in frames(pcm, src * frame_ms // 1000)]
    return np.concatenate(parts)


def fit_sine(y: NDArray[np.float64], freq: float, rate: int) -> tuple[float, NDArray[np.float64]]:
    """Least-squares fit of a*cos + b*sin + c at freq; returns (amplitude, residual)."""
    n = np.arange(y.shape[0], dtype=np.float64)
    w = 2 * np.pi * freq * n / rate
    design = np.stack([np.cos(w), np.sin(w), np.ones_like(w)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.hypot(coef[0], coef[1])), y - design @ coef


def settle(y: NDArray[np.int16], rate: int, ms: int = 100) -> NDArray[np.float64]:
    """Drop the first `ms` of a signal (filter start-up) and return it as float64."""
    return y[rate * ms // 1000 :].astype(np.float64)


Resample = Callable[[NDArray[np.int16], int, int], NDArray[np.int16]]


def tone_snr_db(resample: Resample, src: int, dst: int, freq: float, amp: float = 16000.0) -> float:
    """SNR (dB) of a tone after resampling: fitted tone power over residual power."""
    y = settle(resample(sine(freq, src, src, amp), src, dst), dst)
    a, res = fit_sine(y, freq, dst)
    return float(10 * np.log10((a * a / 2) / np.mean(res * res)))


def alias_level_db(
    resample: Resample, src: int, dst: int, freq: float, amp: float = 16000.0
) -> float:
    """Output rms relative to input rms (dB) for a tone the output rate cannot carry."""
    x = sine(freq, src, src, amp)
    y = settle(resample(x, src, dst), dst)
    y = y - y.mean()
    rms_in = amp / np.sqrt(2)
    rms_out = max(float(np.sqrt(np.mean(y * y))), 1e-3)
    return float(20 * np.log10(rms_out / rms_in))


def image_rejection_db(
    resample: Resample, src: int, dst: int, freq: float, amp: float = 16000.0
) -> float:
    """How far (dB) the image at src - freq lies below the tone at freq after up-sampling."""
    y = settle(resample(sine(freq, src, src, amp), src, dst), dst)
    a, _ = fit_sine(y, freq, dst)
    img, _ = fit_sine(y, src - freq, dst)
    return float(20 * np.log10(a / max(img, 1e-6)))


def passband_gains_db(
    resample: Resample, src: int, dst: int, freqs: Sequence[float], amp: float = 16000.0
) -> NDArray[np.float64]:
    """Gain (dB) of the resampler at each frequency, by sine fit."""
    gains = []
    for f in freqs:
        y = settle(resample(sine(f, src, src, amp), src, dst), dst)
        a, _ = fit_sine(y, f, dst)
        gains.append(20 * np.log10(a / amp))
    return np.asarray(gains)


def ours(pcm: NDArray[np.int16], src: int, dst: int) -> NDArray[np.int16]:
    """telcodecs.Resampler fed in 20 ms frames."""
    return resample_framed(pcm, src, dst)


def audioop_ratecv(pcm: NDArray[np.int16], src: int, dst: int) -> NDArray[np.int16]:
    """audioop.ratecv fed in 20 ms frames, state carried across."""
    state = None
    out = []
    for f in frames(pcm, src * FRAME_MS // 1000):
        chunk, state = audioop.ratecv(f.tobytes(), 2, 1, src, dst, state)
        out.append(chunk)
    return np.frombuffer(b"".join(out), dtype=np.int16)


def bandlimited_pulse(rate: int, nsamples: int, at: float, cutoff_hz: float) -> NDArray[np.int16]:
    """A Hann-windowed sinc pulse (peak 20000) centred at time `at` seconds, band-limited to
    cutoff_hz; sampled at any rate it describes the same continuous-time pulse."""
    t = np.arange(nsamples, dtype=np.float64) / rate - at
    width = 4.0 / cutoff_hz
    window = np.where(np.abs(t) < width, 0.5 + 0.5 * np.cos(np.pi * t / width), 0.0)
    return to_int16(20000 * np.sinc(2 * cutoff_hz * t) * window)


def peak_time(y: NDArray[np.int16], rate: int) -> float:
    """Time (s) of the largest sample, refined by a parabola through its neighbours."""
    v = y.astype(np.float64)
    i = int(np.argmax(v))
    a, b, c = v[i - 1], v[i], v[i + 1]
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((i + offset) / rate)


# --- DTMF signals -----------------------------------------------------------------------------


def dtmf_tone(
    digit: str,
    ms: float,
    peak_dbfs: float = -6.0,
    twist_db: float = 0.0,
    rate: int = 8000,
    rng: np.random.Generator | None = None,
) -> NDArray[np.float64]:
    """A DTMF digit whose composite peak is peak_dbfs (before twist). twist_db > 0 makes the row
    (low) tone louder than the column tone by that much; < 0 makes the column tone louder."""
    row, col = dtmf_digit_frequencies(digit)
    n = np.arange(round(rate * ms / 1000), dtype=np.float64)
    amp = FULL_SCALE * 10 ** (peak_dbfs / 20) / 2
    g = 10 ** (twist_db / 40)
    rng = rng or np.random.default_rng(0)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    low: NDArray[np.float64] = amp * g * np.sin(2 * np.pi * row * n / rate + p1)
    high: NDArray[np.float64] = amp / g * np.sin(2 * np.pi * col * n / rate + p2)
    return low + high


def dtmf_sequence(
    digits: str,
    *,
    on_ms: float = 70,
    off_ms: float = 60,
    peak_dbfs: float = -6.0,
    twist_db: float = 0.0,
    snr_db: float | None = None,
    lead_ms: float = 100,
    seed: int = 0,
) -> NDArray[np.int16]:
    """Digits separated by pauses, with optional white noise at snr_db below the tones' rms."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(round(8 * lead_ms))]
    for d in digits:
        parts.append(dtmf_tone(d, on_ms, peak_dbfs, twist_db, rng=rng))
        parts.append(np.zeros(round(8 * off_ms)))
    parts.append(np.zeros(round(8 * lead_ms)))
    x = np.concatenate(parts)
    if snr_db is not None:
        tone_rms = FULL_SCALE * 10 ** (peak_dbfs / 20) / 2  # two tones of amplitude A: rms A
        x = x + rng.standard_normal(x.shape[0]) * tone_rms * 10 ** (-snr_db / 20)
    return to_int16(x)


def white_noise(seconds: float, rms_dbfs: float, seed: int) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return to_int16(rng.standard_normal(int(8000 * seconds)) * FULL_SCALE * 10 ** (rms_dbfs / 20))


def pink_noise(seconds: float, rms_dbfs: float, seed: int) -> NDArray[np.int16]:
    """1/f noise by spectral shaping of white noise."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 8000)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    x *= FULL_SCALE * 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(x * x))
    return to_int16(x)


# Vowel formants (F1..F4 Hz) and bandwidths (Hz). /ʌ/ and /ɑ/ put F1/F2 near DTMF row/column
# frequencies on purpose: with a 100 Hz pitch their harmonics sit at 700 and 1200 Hz.
VOWELS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "a": ((730, 1090, 2440, 3400), (80, 90, 120, 150)),
    "i": ((270, 2290, 3010, 3500), (60, 90, 150, 200)),
    "u": ((300, 870, 2240, 3300), (60, 80, 120, 150)),
    "e": ((530, 1840, 2480, 3500), (60, 90, 120, 150)),
    "o": ((570, 840, 2410, 3300), (70, 80, 120, 150)),
    "uh": ((640, 1190, 2390, 3400), (70, 80, 120, 150)),
    "ae": ((660, 1720, 2410, 3400), (80, 90, 120, 150)),
    "er": ((490, 1350, 1690, 3300), (70, 80, 100, 150)),
}


def _resonator_ir(freq: float, bw: float, rate: int, length: int = 1024) -> NDArray[np.float64]:
    r = np.exp(-np.pi * bw / rate)
    theta = 2 * np.pi * freq / rate
    n = np.arange(length, dtype=np.float64)
    h: NDArray[np.float64] = r**n * np.sin(theta * (n + 1)) / np.sin(theta)
    return h * float(1 - r)  # roughly unity peak gain


def glottal_excitation(
    seconds: float, f0_lo: float, f0_hi: float, rng: np.random.Generator, rate: int = 8000
) -> NDArray[np.float64]:
    """Differentiated Rosenberg pulses with a wandering pitch between f0_lo and f0_hi (Hz)."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    # Smooth random pitch contour: sum of slow sinusoids, mapped into [f0_lo, f0_hi].
    contour = np.zeros(n)
    for _ in range(3):
        contour += rng.uniform(0.3, 1.0) * np.sin(
            2 * np.pi * rng.uniform(0.2, 3.0) * t + rng.uniform(0, 6)
        )
    contour = (contour - contour.min()) / (np.ptp(contour) + 1e-12)
    f0 = f0_lo + (f0_hi - f0_lo) * contour
    phase = np.cumsum(f0 / rate)
    frac = phase % 1.0
    open_q, close_q = 0.4, 0.16  # opening and closing fractions of the period
    flow = np.where(
        frac < open_q,
        0.5 * (1 - np.cos(np.pi * frac / open_q)),
        np.where(frac < open_q + close_q, np.cos(0.5 * np.pi * (frac - open_q) / close_q), 0.0),
    )
    return np.diff(flow, prepend=0.0) * (1 + 0.05 * rng.standard_normal(n))


def voiced_speech(
    seconds: float,
    seed: int,
    rms_dbfs: float = -20.0,
    f0: tuple[float, float] = (90, 250),
    vowels: Sequence[str] = tuple(VOWELS),
) -> NDArray[np.int16]:
    """Synthetic voiced speech: glottal pulses through 4 formant resonators, a new vowel (drawn
    from `vowels`) every 120-350 ms, overlap-added, with syllable-like amplitude modulation."""
    rate = 8000
    rng = np.random.default_rng(seed)
    exc = glottal_excitation(seconds, f0[0], f0[1], rng)
    n = exc.shape[0]
    out = np.zeros(n + 1024)
    pos = 0
    names = list(vowels)
    while pos < n:
        seg = int(rate * rng.uniform(0.12, 0.35))
        formants, bws = VOWELS[names[rng.integers(len(names))]]
        # Jitter the formants a little so every vowel instance differs.
        jitter = rng.uniform(0.93, 1.07, len(formants))
        h = np.zeros(1)
        h[0] = 1.0
        for f, b in zip(formants, bws, strict=True):
            h = np.convolve(h, _resonator_ir(f * jitter[0], b, rate))[:1024]
            jitter = np.roll(jitter, -1)
        piece = exc[pos : pos + seg] * np.hanning(min(seg, n - pos)) ** 0.3
        y = np.convolve(piece, h)
        out[pos : pos + y.shape[0]] += y[: out.shape[0] - pos]
        pos += seg
    y = out[:n]
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * np.arange(n) / rate + rng.uniform(0, 6))
    y = y * envelope
    y *= FULL_SCALE * 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(y * y))
    return to_int16(y)


def note_hz(semitones_from_a4: int) -> float:
    return 440.0 * 2 ** (semitones_from_a4 / 12)


def music_chords(
    seconds: float,
    seed: int,
    rms_dbfs: float = -18.0,
    chords: Sequence[Sequence[int]] | None = None,
) -> NDArray[np.int16]:
    """Chords of harmonic notes (partials 1..6 at 1/k, with decay), 250-500 ms each.

    `chords` lists chords as semitone offsets from A4; by default random triads and
    seventh chords in the 200-1700 Hz range, including notes next to DTMF frequencies."""
    rate = 8000
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    out = np.zeros(n)
    pos = i = 0
    while pos < n:
        seg = min(int(rate * rng.uniform(0.25, 0.5)), n - pos)
        if chords is not None:
            chord = list(chords[i % len(chords)])
        else:
            root = int(rng.integers(-14, 12))
            shape = [(0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 5, 9), (0, 7, 16)][
                int(rng.integers(5))
            ]
            chord = [root + s for s in shape]
        t = np.arange(seg) / rate
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 4.0))
        for semis in chord:
            f = note_hz(semis)
            for k in range(1, 7):
                if k * f < rate / 2:
                    partial = np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6))
                    out[pos : pos + seg] += env * partial / k
        pos += seg
        i += 1
    out *= FULL_SCALE * 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(out * out))
    return to_int16(out)
