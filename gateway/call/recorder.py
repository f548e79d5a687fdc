"""Per-call recording: a stereo WAV (caller left, bot right, aligned as the caller heard it)
and a JSONL transcript of user and assistant text and call events.

Files are written under a temporary name (`.<name>.part`) and renamed when the call ends, so a
finished file under the final name is always complete. What a crash (SIGKILL, OOM kill, power
cut of the process) leaves behind is still usable:

* each transcript line is handed to the OS as it is written (a line-buffered file: one
  `write` per line). No fsync: the page cache survives the death of the process, and an fsync
  per line would block the event loop on the disk; a crash of the machine itself may lose the
  last lines.
* the WAV data is buffered in memory for at most `CHECKPOINT_S` (+ `LATE_S`) of call time,
  then written with one `write`, and the RIFF and data sizes in the header are rewritten with
  one `pwrite`: two syscalls per second per call, none per frame. A killed process leaves a
  playable WAV up to its last checkpoint.
* each live `.part` file is held under an exclusive `flock`; `recover_recordings()`, run at
  start-up, finishes the `.part` files no live process holds (WAV sizes from the file length,
  a partial last transcript line dropped, a `recovered` line added), renames them to their final
  names and logs one `recording_recovered` line per file.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from gateway.logs import get_logger

Pcm = npt.NDArray[np.int16]

log = get_logger("recorder")

CHANNELS = 2
SAMPLE_BYTES = 2
FRAME_BYTES = CHANNELS * SAMPLE_BYTES  # one stereo sample frame
# RIFF header of a PCM WAV with the data chunk right after `fmt ` (what we write): 44 bytes
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
HEADER_BYTES = _HEADER.size
_MAX_CHUNK = 0xFFFFFFFF


def wav_header(rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit stereo PCM WAV holding `data_bytes` of samples."""
    data_bytes = min(data_bytes, _MAX_CHUNK - 36)
    return _HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        CHANNELS,
        rate,
        rate * FRAME_BYTES,
        FRAME_BYTES,
        8 * SAMPLE_BYTES,
        b"data",
        data_bytes,
    )


def _lock(fh: IO[Any]) -> None:
    """Mark the file as live: recovery skips files another process holds locked."""
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


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

    def pad_to(self, at_sample: int) -> None:
        """Silence up to `at_sample` (this side sent nothing until then)."""
        gap = at_sample - self.written
        if gap > 0:
            self.chunks.append(np.zeros(gap, dtype=np.int16))
            self.written += gap

    def take(self, n: int) -> Pcm:
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        out, rest = data[:n], data[n:]
        self.chunks = [rest] if len(rest) else []
        return out


class CallRecorder:
    """Writes `<dir>/<call_id>.wav` and `<dir>/<call_id>.jsonl`. Not thread-safe; loop only."""

    #: WAV data is written, and the header's sizes rewritten, at least this often (call time)
    CHECKPOINT_S = 1.0
    #: at a checkpoint, a side that sent nothing for this long is written as silence so far
    #: (frames are placed by arrival; one arriving later than this lands a little late)
    LATE_S = 0.25

    def __init__(self, directory: str | Path, call_id: str, rate: int, t0: float) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.t0 = t0
        self.wav_path = self.dir / f"{call_id}.wav"
        self.jsonl_path = self.dir / f"{call_id}.jsonl"
        self._wav_tmp = self.dir / f".{call_id}.wav.part"
        self._jsonl_tmp = self.dir / f".{call_id}.jsonl.part"
        # unbuffered: each write() below is one syscall, made only at a checkpoint
        self._wav = open(self._wav_tmp, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        # line-buffered text: every transcript line reaches the OS when it is written
        self._jsonl = open(self._jsonl_tmp, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        _lock(self._wav)
        _lock(self._jsonl)
        self._frames = 0  # stereo frames in the file
        self._left = _Channel()
        self._right = _Channel()
        self._every = max(1, round(rate * self.CHECKPOINT_S))
        self._late = round(rate * self.LATE_S)
        self._next_checkpoint = self._every + self._late
        self.recording = True
        self._closed = False
        self._failed = False
        try:
            self._wav.write(wav_header(rate, 0))
        except OSError as exc:  # a full disk from the start: no recording, the call goes on
            self._fail(exc)

    def _pos(self, now: float, n: int) -> int:
        return max(0, round((now - self.t0) * self.rate) - n)

    def caller(self, pcm: Pcm, now: float) -> None:
        """A frame the caller sent, received at `now`."""
        if self.recording:
            at = self._pos(now, len(pcm))
            self._left.add(pcm, at)
            if at >= self._next_checkpoint:
                self._checkpoint(at)

    def bot(self, pcm: Pcm, now: float) -> None:
        """A frame sent to the caller at `now`."""
        if self.recording:
            at = self._pos(now, len(pcm))
            self._right.add(pcm, at)
            if at >= self._next_checkpoint:
                self._checkpoint(at)

    def event(self, kind: str, now: float, **fields: Any) -> None:
        """One JSONL line: `{"t": seconds since start, "ts": unix time, "kind": ..., ...}`."""
        if self._closed or self._failed:
            return
        line = {"t": round(now - self.t0, 3), "ts": round(time.time(), 3), "kind": kind, **fields}
        try:
            self._jsonl.write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError as exc:
            self._fail(exc)

    def _checkpoint(self, at: int) -> None:
        """Write what both sides have up to `at - LATE_S` and make the header say so."""
        horizon = at - self._late
        self._left.pad_to(horizon)
        self._right.pad_to(horizon)
        self._next_checkpoint = at + self._every
        try:
            self._write_aligned(final=False)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """A full or broken disk stops this recording, never the call."""
        if not self._failed:
            self._failed = True
            self.recording = False
            log.error("recording_failed", file=self._wav_tmp.name, error=exc.strerror or str(exc))

    def _write_aligned(self, final: bool) -> None:
        end = (
            max(self._left.written, self._right.written)
            if final
            else min(self._left.written, self._right.written)
        )
        n = end - self._frames
        if n <= 0:
            return
        left = self._left.take(n)
        right = self._right.take(n)
        stereo = np.zeros((n, 2), dtype="<i2")
        stereo[: len(left), 0] = left
        stereo[: len(right), 1] = right
        data = memoryview(stereo.tobytes())
        while data:
            data = data[self._wav.write(data) or 0 :]
        self._frames += n
        os.pwrite(self._wav.fileno(), wav_header(self.rate, self._frames * FRAME_BYTES), 0)

    def close(self) -> None:
        """Finish both files and move them to their final names. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._failed:
                self._write_aligned(final=True)
        finally:
            self._wav.close()
            self._jsonl.close()
            os.replace(self._wav_tmp, self.wav_path)
            os.replace(self._jsonl_tmp, self.jsonl_path)


# --- start-up: recordings a dead process left behind ---------------------------------------


@dataclass(frozen=True, slots=True)
class RecoveredFile:
    """One orphaned `.part` file finished at start-up: where it went and what was fixed."""

    part: str
    final: str
    fixed: str


def recover_recordings(directory: str | Path) -> list[RecoveredFile]:
    """Finish the `.<call>.wav.part` / `.<call>.jsonl.part` files in `directory` that no live
    process holds: set the WAV's sizes from the file length, drop a partial last transcript line
    and add a `recovered` line, rename each to its final name. One log line per file."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    done: list[RecoveredFile] = []
    for part in sorted(folder.glob(".*.part")):
        final_name = part.name[1:].removesuffix(".part")
        if not final_name.endswith((".wav", ".jsonl")) or not part.is_file():
            continue
        final = folder / final_name
        try:
            with open(part, "r+b") as fh:
                try:
                    _lock(fh)
                except BlockingIOError:
                    continue  # a live recording of another gateway process on this directory
                if final.exists():
                    log.warning(
                        "recording_not_recovered",
                        file=part.name,
                        reason=f"{final_name} already exists",
                    )
                    continue
                if final_name.endswith(".wav") and _size(fh) < HEADER_BYTES:
                    # killed between creating the file and writing its header: no audio
                    os.unlink(part)
                    log.warning("recording_removed", file=part.name, reason="no audio in it")
                    continue
                fixed = _finish_wav(fh) if final_name.endswith(".wav") else _finish_jsonl(fh)
                os.replace(part, final)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("recording_not_recovered", file=part.name, reason=reason)
            continue
        log.warning("recording_recovered", file=part.name, renamed_to=final_name, fixed=fixed)
        done.append(RecoveredFile(part.name, final_name, fixed))
    return done


def _size(fh: IO[bytes]) -> int:
    return os.fstat(fh.fileno()).st_size


def _finish_wav(fh: IO[bytes]) -> str:
    header = fh.read(HEADER_BYTES)
    riff, _, wave_id, fmt, _, _, channels, rate, _, align, bits, data_id, declared = _HEADER.unpack(
        header
    )
    if (riff, wave_id, fmt, data_id) != (b"RIFF", b"WAVE", b"fmt ", b"data") or (
        channels,
        align,
        bits,
    ) != (CHANNELS, FRAME_BYTES, 8 * SAMPLE_BYTES):
        raise ValueError("not a WAV file written by the recorder")
    data = _size(fh) - HEADER_BYTES
    whole = data - data % FRAME_BYTES
    if whole != data:  # killed in the middle of a sample frame
        fh.truncate(HEADER_BYTES + whole)
    fh.seek(0)
    fh.write(wav_header(rate, whole))
    seconds = whole / FRAME_BYTES / rate
    sizes = (
        f"data size {declared} -> {whole} bytes"
        if declared != whole
        else f"data size {whole} bytes was right"
    )
    return f"{sizes} ({seconds:.2f} s at {rate} Hz)" + (
        f", {data - whole} bytes of a partial frame cut" if whole != data else ""
    )


NEWLINE = b"\n"


def _finish_jsonl(fh: IO[bytes]) -> str:
    text = fh.read()
    complete = text[: text.rfind(NEWLINE) + 1]
    notes = [f"{complete.count(NEWLINE)} lines kept"]
    if len(complete) != len(text):  # killed in the middle of a line
        fh.truncate(len(complete))
        notes.append(f"a partial last line ({len(text) - len(complete)} bytes) dropped")
    fh.seek(len(complete))
    line = {
        "ts": round(time.time(), 3),
        "kind": "recovered",
        "reason": "the gateway process ended without closing the recording",
    }
    fh.write((json.dumps(line) + "\n").encode())
    notes.append("a 'recovered' line added")
    return ", ".join(notes)
