"""Wideband codec micro-benchmarks (issue 16): G.722 and Opus encode and decode on PyAV, in
microseconds per 20 ms frame (median of timeit repetitions), with one call's streaming coder,
beside G.711 µ-law (telcodecs) and the per-call cost of each codec against PCMU passthrough.

    python benchmarks/bench_wideband.py [--quick]

A SIP call costs per 20 ms one decode (caller audio) and one encode (audio to the caller); a
G.711 call whose Realtime session takes its law passes bytes through (0 µs of codec work).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "codecs", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import telcodecs  # noqa: E402

from gateway.media.wideband import G722Codec, OpusCodec, WidebandCodec  # noqa: E402


def median_us(fn: object, number: int, repeat: int) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat)  # type: ignore[arg-type]
    return statistics.median(times) / number * 1e6


def speech_like(rate: int, frames: int = 50) -> list[np.ndarray]:
    t = np.arange(rate // 50 * frames) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 20))
    pcm = (6000 * sig / np.max(np.abs(sig))).astype(np.int16)
    return list(pcm.reshape(frames, -1))


def coder_us(
    make: Callable[[], WidebandCodec], rate: int, number: int, repeat: int
) -> tuple[float, float]:
    """(encode, decode) µs per frame of one call's streaming coder on speech-like frames."""
    frames = speech_like(rate)
    enc, dec = make(), make()
    payloads = [enc.encode(f) for f in frames]
    count = iter(range(10**9))
    enc_us = median_us(lambda: enc.encode(frames[next(count) % 50]), number, repeat)
    dec_us = median_us(lambda: dec.decode(payloads[next(count) % 50]), number, repeat)
    return enc_us, dec_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number, repeat = (50, 3) if args.quick else (200, 7)
    rows: list[tuple[str, float, float]] = []
    for name, make, rate in (
        ("G.722 64 kbit/s", lambda: G722Codec(20), 16000),
        ("Opus 32 kbit/s", lambda: OpusCodec(20), 48000),
    ):
        rows.append((name, *coder_us(make, rate, number, repeat)))
    frames8 = speech_like(8000)
    ulaw = [telcodecs.ulaw_encode(f) for f in frames8]
    it3 = iter(range(10**9))
    enc_u = median_us(lambda: telcodecs.ulaw_encode(frames8[next(it3) % 50]), number, repeat)
    it4 = iter(range(10**9))
    dec_u = median_us(lambda: telcodecs.ulaw_decode(ulaw[next(it4) % 50]), number, repeat)
    rows.append(("G.711 µ-law (telcodecs)", enc_u, dec_u))
    head = f"{'codec (20 ms frame)':<26}{'encode µs':>11}{'decode µs':>11}"
    print(head + f"{'per call, % of a core':>24}")
    for name, enc_us, dec_us in rows:
        share = (enc_us + dec_us) * 50 / 1e6 * 100  # 50 frames/s each way
        print(f"{name:<26}{enc_us:>11.1f}{dec_us:>11.1f}{share:>23.2f}%")
    print("PCMU passthrough (session pcmu): 0 µs of codec work per frame")


if __name__ == "__main__":
    main()
