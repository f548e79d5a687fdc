"""The call recorder without an event loop (time passed in): what a killed process leaves on disk
is usable, and start-up finishes it.

- transcript lines reach the file as they are written;
- the WAV header is valid at every checkpoint (1 s of call time), also while one side is silent
  (bounded buffering), and the audio is where it was said;
- `recover_recordings` finishes orphaned `.part` files (sizes from the file length, a partial
  sample frame or transcript line cut), renames them, logs one line each, and leaves alone the
  files a live recorder holds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from gateway.call.call import CallOptions
from gateway.call.default_scenario import setup
from gateway.call.manager import CallManager
from gateway.call.recorder import FRAME_BYTES, HEADER_BYTES, CallRecorder, recover_recordings
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import best_correlation, read_stereo_wav
from tests.support.memory_call import open_call

RATE = 8000
FRAME = 160  # 20 ms


def tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def feed(rec: CallRecorder, left: np.ndarray | None, right: np.ndarray | None, t0: float) -> float:
    """Deliver 20 ms frames of each side at their arrival times from `t0`; the time after."""
    n = max(len(x) for x in (left, right) if x is not None)
    now = t0
    for at in range(0, n - FRAME + 1, FRAME):
        now = t0 + (at + FRAME) / RATE
        if left is not None:
            rec.caller(left[at : at + FRAME], now)
        if right is not None:
            rec.bot(right[at : at + FRAME], now)
    return now


def crash(rec: CallRecorder) -> None:
    """What SIGKILL leaves: the files as written so far, closed without finishing (locks gone)."""
    rec._wav.close()
    rec._jsonl.close()


def test_transcript_lines_are_on_disk_as_they_are_written(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "c1", RATE, t0=100.0)
    part = tmp_path / ".c1.jsonl.part"
    rec.event("call_started", 100.0, leg="sip")
    rec.event("dtmf", 101.5, digit="5", source="rfc4733")
    # read through another file object while the recorder is live: nothing waits in a buffer
    lines = [json.loads(x) for x in part.read_text().splitlines()]
    assert [(x["kind"], x["t"]) for x in lines] == [("call_started", 0.0), ("dtmf", 1.5)]
    rec.close()
    assert (tmp_path / "c1.jsonl").read_text().count("\n") == 2


def test_wav_part_is_valid_at_each_checkpoint(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "c2", RATE, t0=0.0)
    part = tmp_path / ".c2.wav.part"
    rate, stereo = read_stereo_wav(part)  # a header from the first moment: a valid empty WAV
    assert rate == RATE and len(stereo) == 0
    said = tone(5.0)
    feed(rec, said, said // 2, 0.0)
    rate, stereo = read_stereo_wav(part)
    # everything but the last checkpoint interval and the lateness allowance is in the file
    assert 5.0 - 1.3 <= len(stereo) / RATE <= 5.0
    assert np.array_equal(stereo[:, 0], said[: len(stereo)])
    assert np.array_equal(stereo[:, 1], (said // 2)[: len(stereo)])
    # the header's sizes match the file (what players and `wave` read)
    assert part.stat().st_size == HEADER_BYTES + len(stereo) * FRAME_BYTES
    rec.close()
    _, whole = read_stereo_wav(tmp_path / "c2.wav")
    assert len(whole) == len(said)


def test_a_silent_side_does_not_hold_the_other_in_memory(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "c3", RATE, t0=0.0)
    said = tone(10.0, 300.0)
    feed(rec, said, None, 0.0)  # the bot says nothing for 10 s
    _, stereo = read_stereo_wav(tmp_path / ".c3.wav.part")
    assert len(stereo) / RATE >= 10.0 - 1.3
    buffered = sum(len(c) for c in rec._left.chunks)
    assert buffered <= round(RATE * (rec.CHECKPOINT_S + rec.LATE_S))
    assert not stereo[:, 1].any()
    assert best_correlation(said[8000:16000], stereo[:, 0]) > 0.99
    # the bot speaks at 12 s: placed at its time, after silence
    reply = tone(1.0, 700.0)
    feed(rec, None, reply, 12.0)
    rec.close()
    _, whole = read_stereo_wav(tmp_path / "c3.wav")
    start = int(np.argmax(whole[:, 1] != 0))
    assert abs(start - 12 * RATE) <= FRAME


def test_recovery_finishes_orphans_and_logs_each(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path, "dead", RATE, t0=0.0)
    rec.event("call_started", 0.0, leg="sip")
    said = tone(3.0)
    feed(rec, said, said, 0.0)
    rec.event("dtmf", 3.0, digit="1", source="rfc4733")
    crash(rec)
    # the write that was under way when the process died: half a sample frame, half a line
    with open(tmp_path / ".dead.wav.part", "ab") as f:
        f.write(b"\x01\x02" * 2 * RATE + b"\x03\x04")  # 1 s more audio, then 2 bytes of a frame
    with open(tmp_path / ".dead.jsonl.part", "a") as f:
        f.write('{"t": 3.2, "kind": "transc')
    live = CallRecorder(tmp_path, "live", RATE, t0=0.0)  # another process's call in progress
    (tmp_path / ".junk.part").write_text("not ours")

    with capture_logs() as logs:
        recovered = recover_recordings(tmp_path)

    assert sorted(r.final for r in recovered) == ["dead.jsonl", "dead.wav"]
    assert sorted(p.name for p in tmp_path.glob(".*.part")) == [
        ".junk.part",
        ".live.jsonl.part",
        ".live.wav.part",
    ]
    rate, stereo = read_stereo_wav(tmp_path / "dead.wav")
    assert rate == RATE
    # the checkpointed audio plus the second appended after it, whole frames only
    assert len(stereo) * FRAME_BYTES == (tmp_path / "dead.wav").stat().st_size - HEADER_BYTES
    assert len(stereo) >= (3.0 - 1.3 + 1.0) * RATE
    assert best_correlation(said[:8000], stereo[:, 0]) > 0.99
    lines = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["call_started", "dtmf", "recovered"]
    lines_logged = [e for e in logs if e["event"] == "recording_recovered"]
    assert sorted(e["file"] for e in lines_logged) == [".dead.jsonl.part", ".dead.wav.part"]
    fixed = {e["file"]: e["fixed"] for e in lines_logged}
    assert "partial frame" in fixed[".dead.wav.part"] and "data size" in fixed[".dead.wav.part"]
    assert "partial last line" in fixed[".dead.jsonl.part"]
    # the live recording goes on undisturbed and finishes normally
    live.event("call_ended", 1.0, outcome="completed")
    live.close()
    assert (tmp_path / "live.wav").exists() and (tmp_path / "live.jsonl").exists()
    # nothing left to do the second time
    assert recover_recordings(tmp_path) == []


def test_recovery_of_a_missing_directory_is_nothing(tmp_path: Path) -> None:
    assert recover_recordings(tmp_path / "absent") == []


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00"])
def test_a_wav_part_without_its_header_holds_no_audio_and_is_removed(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / ".x.wav.part").write_bytes(content)
    with capture_logs() as logs:
        assert recover_recordings(tmp_path) == []
    assert [(e["event"], e["file"]) for e in logs] == [("recording_removed", ".x.wav.part")]
    assert not list(tmp_path.iterdir())


def test_a_wav_part_that_is_not_ours_is_reported_and_left(tmp_path: Path) -> None:
    (tmp_path / ".x.wav.part").write_bytes(b"ID3" + bytes(100))
    with capture_logs() as logs:
        assert recover_recordings(tmp_path) == []
    [line] = [e for e in logs if e["event"] == "recording_not_recovered"]
    assert line["file"] == ".x.wav.part" and "not a WAV" in line["reason"]
    assert (tmp_path / ".x.wav.part").exists()


def test_a_full_disk_stops_the_recording_never_the_call(tmp_path: Path) -> None:
    """ENOSPC from the kernel (/dev/full stands in for a full disk): one log line, no exception
    to the call, the transcript still closes cleanly."""
    (tmp_path / ".full.wav.part").symlink_to("/dev/full")
    with capture_logs() as logs:
        rec = CallRecorder(tmp_path, "full", RATE, 0.0)
        now = feed(rec, tone(3.0), tone(3.0, 880.0), 0.0)
        rec.event("transcript", now, role="user", text="still here")
        rec.close()
    failures = [e for e in logs if e["event"] == "recording_failed"]
    assert len(failures) == 1 and "space" in failures[0]["error"].lower()
    assert not rec.recording
    assert (tmp_path / "full.jsonl").is_file()


async def test_an_unwritable_record_directory_never_stops_the_call(tmp_path: Path) -> None:
    """A record_dir that cannot be created: one error line, the call runs and ends as usual."""
    (tmp_path / "not-a-dir").write_text("a file where the directory should be")
    provider = LocalProvider(use_espeak=False)
    await provider.start()
    try:
        options = CallOptions(record_dir=str(tmp_path / "not-a-dir" / "rec"))
        call, _m = await open_call(provider, options=options)
        with capture_logs() as logs:
            task = CallManager(2).start(call, setup)
            await asyncio.sleep(0.3)
            assert call.state == "connected" and call.recorder is None
            await call.hangup()
            await task
        assert call.outcome == "completed"
        assert [e["event"] for e in logs if e["event"] == "recording_failed"] == [
            "recording_failed"
        ]
    finally:
        await provider.stop()
