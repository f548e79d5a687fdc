"""Per-call recording: a stereo WAV (caller left, bot right, aligned as the caller heard it)
and a JSONL transcript of user and assistant text and call events.

Files are written under a temporary name (`.<name>.part`) and renamed when the call ends, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


class _Channel:
    """Samples of one side, placed on the call's timeline by arrival time."""

    __slots__ = ("chunks", "written")

    def __init__(self) -> None:
        self.chunks: list[Pcm] = []
        self.written = 0

    def add(self, pcm: Pcm, at_sample: int) -> None:
        gap = at_sample - self.written
        if gap > 0:  # nothing arrived for a while: that was silence
            self.chunks.append(np.zeros(gap, dtype=np.int16))
            self.written += gap
        self.chunks.append(pcm)
        self.written += len(pcm)

    def take(self, n: int) -> Pcm:
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        out, rest = data[:n], data[n:]
        self.chunks = [rest] if len(rest) else []
        return out


class CallRecorder:
    """Writes `<dir>/<call_id>.wav` and `<dir>/<call_id>.jsonl`. Not thread-safe; loop only."""

    FLUSH_SAMPLES = 8000

    def __init__(self, directory: str | Path, call_id: str, rate: int, t0: float) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.t0 = t0
        self.wav_path = self.dir / f"{call_id}.wav"
        self.jsonl_path = self.dir / f"{call_id}.jsonl"
        self._wav_tmp = self.dir / f".{call_id}.wav.part"
        self._jsonl_tmp = self.dir / f".{call_id}.jsonl.part"
        self._wav = wave.open(str(self._wav_tmp), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._jsonl = open(self._jsonl_tmp, "w", encoding="utf-8")  # noqa: SIM115
        self._left = _Channel()
        self._right = _Channel()
        self.recording = True
        self._closed = False

    def _pos(self, now: float, n: int) -> int:
        return max(0, round((now - self.t0) * self.rate) - n)

    def caller(self, pcm: Pcm, now: float) -> None:
        """A frame the caller sent, received at `now`."""
        if self.recording:
            self._left.add(pcm, self._pos(now, len(pcm)))
            self._maybe_flush()

    def bot(self, pcm: Pcm, now: float) -> None:
        """A frame sent to the caller at `now`."""
        if self.recording:
            self._right.add(pcm, self._pos(now, len(pcm)))
            self._maybe_flush()

    def event(self, kind: str, now: float, **fields: Any) -> None:
        """One JSONL line: `{"t": seconds since start, "ts": unix time, "kind": ..., ...}`."""
        if self._closed:
            return
        line = {"t": round(now - self.t0, 3), "ts": round(time.time(), 3), "kind": kind, **fields}
        self._jsonl.write(json.dumps(line, ensure_ascii=False) + "\n")

    def _maybe_flush(self, final: bool = False) -> None:
        n = min(self._left.written, self._right.written)
        if final:
            n = max(self._left.written, self._right.written)
        pending = n - (self._wav.getnframes() if not final else 0)
        if not final and pending < self.FLUSH_SAMPLES:
            return
        self._write_aligned(final)

    def _write_aligned(self, final: bool) -> None:
        done = self._wav.getnframes()
        end = (
            max(self._left.written, self._right.written)
            if final
            else min(self._left.written, self._right.written)
        )
        n = end - done
        if n <= 0:
            return
        left = self._left.take(n)
        right = self._right.take(n)
        stereo = np.zeros((n, 2), dtype="<i2")
        stereo[: len(left), 0] = left
        stereo[: len(right), 1] = right
        self._wav.writeframesraw(stereo.tobytes())

    def close(self) -> None:
        """Finish both files and move them to their final names. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._write_aligned(final=True)
        finally:
            self._wav.close()
            self._jsonl.close()
            os.replace(self._wav_tmp, self.wav_path)
            os.replace(self._jsonl_tmp, self.jsonl_path)
