"""Codec micro-benchmarks: telcodecs against audioop (and soxr, if installed).

    python benchmarks/bench_codecs.py [--quick]

Prints two tables. Speed: microseconds per 20 ms frame, median over many timeit repetitions,
for G.711 µ-law decode+encode (single frame and a 500-call batch), resampling, and DTMF
detection, each with its ratio to the yardsticks (>1 means telcodecs is slower). Quality: the
resampler figures the tests assert (SNR, alias and image rejection, passband ripple, delay,
output regularity), for telcodecs, audioop.ratecv and soxr's HQ stream, all fed 20 ms frames.
The figures print; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "codecs", ROOT):  # run from a checkout without installing
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import telcodecs  # noqa: E402

from tests.support import signals as sig  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

try:
    import soxr
except ImportError:  # soxr is in the dev extra only
    soxr = None

RESAMPLE_PAIRS = [(8000, 24000), (24000, 8000), (44100, 8000), (8000, 48000), (48000, 8000)]
BATCH_CALLS = 500


def per_call_us(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Median over `repeat` runs of the mean time of `number` calls, in microseconds."""
    runs = timeit.Timer(fn).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def frames_of(rate: int, count: int = 50) -> list[NDArray[np.int16]]:
    rng = np.random.default_rng(rate)
    x = sig.to_int16(rng.standard_normal(rate * count // 50) * 4000)
    return list(sig.frames(x, rate // 50))


class Cycle:
    """Calls fn on successive frames, so state and caches see a real stream."""

    def __init__(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        self.fn, self.items, self.i = fn, items, 0

    def __call__(self) -> None:
        self.fn(self.items[self.i])
        self.i = (self.i + 1) % len(self.items)


def speed_rows(number: int, repeat: int) -> list[tuple[str, float, float | None, float | None]]:
    rows: list[tuple[str, float, float | None, float | None]] = []

    payload = telcodecs.ulaw_encode(frames_of(8000)[0])
    ours = per_call_us(
        lambda: telcodecs.ulaw_encode(telcodecs.ulaw_decode(payload)), number, repeat
    )
    ref = per_call_us(lambda: audioop.lin2ulaw(audioop.ulaw2lin(payload, 2), 2), number, repeat)
    rows.append(("G.711 µ-law decode+encode, 1 call", ours, ref, None))

    codes = telcodecs.ulaw_encode_array(np.stack(frames_of(8000, BATCH_CALLS)))
    batch = per_call_us(
        lambda: telcodecs.ulaw_encode_array(telcodecs.ulaw_decode(codes)),
        max(1, number // 50),
        repeat,
    )
    rows.append(
        (
            f"G.711 µ-law decode+encode, {BATCH_CALLS}x160 batch, per call",
            batch / BATCH_CALLS,
            ref,
            None,
        )
    )

    for src, dst in RESAMPLE_PAIRS:
        fr = frames_of(src)
        r = telcodecs.Resampler(src, dst)
        ours = per_call_us(Cycle(r.process, fr), number, repeat)
        blobs = [f.tobytes() for f in fr]
        state: list[Any] = [None]

        def ratecv(b: bytes, src: int = src, dst: int = dst, state: list[Any] = state) -> None:
            _, state[0] = audioop.ratecv(b, 2, 1, src, dst, state[0])

        ref = per_call_us(Cycle(ratecv, blobs), number, repeat)
        sox = None
        if soxr is not None:
            stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
            sox = per_call_us(Cycle(stream.resample_chunk, fr), number, repeat)
        rows.append((f"resample {src / 1000:g}k -> {dst / 1000:g}k", ours, ref, sox))

    det = telcodecs.DtmfDetector()
    speech = sig.voiced_speech(1.0, 1)
    ours = per_call_us(Cycle(det.process, list(sig.frames(speech, 160))), number, repeat)
    rows.append(("DTMF detect, 8 kHz speech", ours, None, None))
    return rows


def print_speed(rows: list[tuple[str, float, float | None, float | None]]) -> None:
    print("Speed: µs per 20 ms frame (median of timeit repetitions); ratio = ours / yardstick")
    head = f"{'operation':<48} {'ours':>8} {'audioop':>8} {'ratio':>6} {'soxr HQ':>8} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for name, ours, ref, sox in rows:
        line = f"{name:<48} {ours:8.2f}"
        line += f" {ref:8.2f} {ours / ref:6.2f}" if ref else f" {'-':>8} {'':>6}"
        line += f" {sox:8.2f} {ours / sox:6.2f}" if sox else f" {'-':>8} {'':>6}"
        print(line)


def soxr_framed(pcm: NDArray[np.int16], src: int, dst: int) -> NDArray[np.int16]:
    assert soxr is not None
    stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
    parts = [stream.resample_chunk(f) for f in sig.frames(pcm, src // 50)]
    return np.concatenate(parts).astype(np.int16)


def frame_lengths(resample: sig.Resample, src: int, dst: int) -> list[int]:
    """Output samples returned for each of 50 consecutive 20 ms input frames."""
    x = sig.sine(1000, src, src, 10000)
    if resample is sig.ours:
        r = telcodecs.Resampler(src, dst)
        return [r.process(f).shape[0] for f in sig.frames(x, src // 50)]
    if resample is sig.audioop_ratecv:
        state = None
        lengths = []
        for f in sig.frames(x, src // 50):
            out, state = audioop.ratecv(f.tobytes(), 2, 1, src, dst, state)
            lengths.append(len(out) // 2)
        return lengths
    assert soxr is not None
    stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
    return [stream.resample_chunk(f).shape[0] for f in sig.frames(x, src // 50)]


def latency_ms(resample: sig.Resample, src: int, dst: int) -> float:
    """Worst-case latency: the delay of a pulse within the output stream, plus the most output
    held back at any frame (what a streaming resampler owes: floor(n_in * dst / src) minus what
    it has returned)."""
    x = sig.bandlimited_pulse(src, src // 10, 0.05, cutoff_hz=0.3 * min(src, dst))
    in_stream = sig.peak_time(resample(x, src, dst), dst) - 0.05
    returned = np.cumsum(frame_lengths(resample, src, dst))
    owed = (np.arange(1, returned.shape[0] + 1) * (src // 50)) * dst // src
    return (in_stream + float(np.max(owed - returned)) / dst) * 1000


def print_quality() -> None:
    contenders: list[tuple[str, sig.Resample]] = [("telcodecs", sig.ours)]
    contenders.append(("audioop.ratecv", sig.audioop_ratecv))
    if soxr is not None:
        contenders.append(("soxr HQ stream", soxr_framed))
    print()
    print("Resampler quality, 20 ms frames, tone at -6.2 dBFS, first 100 ms dropped, sine fit")
    head = (
        f"{'':<16} {'SNR 1k':>8} {'6k alias':>9} {'image 5k':>9} {'ripple':>7} {'ripple':>7}"
        f" {'latency':>8} {'irregular':>10}"
    )
    print(head)
    print(
        f"{'':<16} {'8->24':>8} {'24->8':>9} {'8->24':>9} {'8->24':>7} {'24->8':>7}"
        f" {'8->24':>8} {'frames':>10}"
    )
    print("-" * len(head))
    band = [300.0 + 100.0 * i for i in range(32)]
    for name, fn in contenders:
        snr = sig.tone_snr_db(fn, 8000, 24000, 1000.0)
        alias = sig.alias_level_db(fn, 24000, 8000, 6000.0)
        image = sig.image_rejection_db(fn, 8000, 24000, 3000.0)
        up = float(np.ptp(sig.passband_gains_db(fn, 8000, 24000, band)))
        down = float(np.ptp(sig.passband_gains_db(fn, 24000, 8000, band)))
        latency = latency_ms(fn, 8000, 24000)
        irregular = sum(
            sum(n != d // 50 for n in frame_lengths(fn, s, d)) for s, d in RESAMPLE_PAIRS
        )
        alias_text = f"{alias:7.1f}dB" if alias > -100 else f"{'silent':>9}"
        print(
            f"{name:<16} {snr:6.1f}dB {alias_text} {image:7.1f}dB {up:5.3f}dB {down:5.3f}dB"
            f" {latency:6.2f}ms {irregular:5d}/{50 * len(RESAMPLE_PAIRS)}"
        )
    print(
        "6k alias: output rms relative to input rms ('silent': every output sample is 0, i.e.\n"
        "below -87 dB); irregular frames: 20 ms in, not 20 ms out, over the five pairs timed."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    number, repeat = (200, 5) if args.quick else (2000, 15)
    print_speed(speed_rows(number, repeat))
    print_quality()


if __name__ == "__main__":
    main()
