"""A gateway killed mid-call (SIGKILL) leaves a usable recording, and the next start finishes it.

A real `gateway serve` process records (`--record-dir`, input transcription on); sipp calls it
and plays its PCMA speech capture, then RFC 4733 digits 1, 2, 3. Once the digits are in the
transcript, the gateway gets SIGKILL in the middle of the call. Then:
- `.<call>.jsonl.part` holds the lines written so far (call_started, the bot's and the caller's
  transcripts, the three digits);
- `.<call>.wav.part` is a valid WAV (`wave` reads it) with seconds of audio: the caller's
  speech, found by content, on the left, the bot on the right;
- a new gateway started on the same directory finishes both (final names, WAV sizes equal to
  the data in the file) and logs one `recording_recovered` line for each.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import telcodecs

from tests.support.audio import read_stereo_wav, windows_found
from tests.support.gateway import GatewayProcess
from tests.support.pcap import SIPP_SHARE, pcap_rtp_payloads
from tests.support.sipp import Sipp


def transcript(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sigkill_mid_call_leaves_a_usable_recording_finished_at_next_start(
    tmp_path: Path,
) -> None:
    rec_dir = tmp_path / "recordings"
    args = ("--record-dir", str(rec_dir), "--transcription-model", "whisper-1")
    gw = GatewayProcess(tmp_path, *args).start()
    caller = Sipp(
        tmp_path,
        f"127.0.0.1:{gw.sip_port}",
        scenario="e2e_pcap_dtmf.xml",
        extra=["-m", "1"],
        timeout=40,
    ).start()
    try:
        deadline = time.monotonic() + 30
        parts: list[Path] = []
        digits: list[str] = []
        while digits != ["1", "2", "3"]:
            assert time.monotonic() < deadline, f"digits seen: {digits}"
            assert caller.proc is not None and caller.proc.poll() is None, (
                f"the call ended before its digits were in the transcript: {digits}"
            )
            time.sleep(0.1)
            parts = sorted(rec_dir.glob(".*.jsonl.part"))
            if parts:
                digits = [x["digit"] for x in transcript(parts[0]) if x["kind"] == "dtmf"]
        gw.signal(signal.SIGKILL)
        assert gw.wait(10) == -signal.SIGKILL
    finally:
        caller.kill()
        gw.stop()

    # --- what the killed process left
    [jsonl_part] = parts
    call_id = jsonl_part.name[1:].removesuffix(".jsonl.part")
    wav_part = rec_dir / f".{call_id}.wav.part"
    assert sorted(p.name for p in rec_dir.iterdir()) == sorted([jsonl_part.name, wav_part.name])
    lines = transcript(jsonl_part)
    kinds = [x["kind"] for x in lines]
    assert kinds[0] == "call_started" and lines[0]["codec"] == "pcma/8000"
    assert "call_ended" not in kinds
    said = [x for x in lines if x["kind"] == "transcript"]
    # the bot's words (its greeting, which the caller's speech may cut short, or its replies to
    # the digits) and the caller's turn (the local provider transcribes it as its length)
    assert any(x["role"] == "assistant" and x["text"] for x in said), said
    assert any(x["role"] == "user" and x["text"].startswith("[caller: ") for x in said), said
    rate, stereo = read_stereo_wav(wav_part)
    assert rate == 8000
    # the digits came after the 7 s of speech: all but the last checkpoint second is on disk
    assert len(stereo) / rate >= 6.0, len(stereo) / rate
    speech = telcodecs.alaw_decode(
        b"".join(p for _pt, _seq, p in pcap_rtp_payloads(SIPP_SHARE / "g711a.pcap"))
    )
    heard = stereo[:, 0]
    found = windows_found(speech[: 4 * 8000], heard)
    assert np.mean(np.array(found) >= 0.9) >= 0.8, found
    assert np.sqrt(np.mean(stereo[:, 1].astype(np.float64) ** 2)) > 100  # the bot spoke

    # --- the next start on the same directory finishes both files
    again = GatewayProcess(tmp_path, *args).start()
    try:
        recovered = [x for x in again.log_lines() if x.get("event") == "recording_recovered"]
    finally:
        assert again.stop() == 0
    assert sorted(x["file"] for x in recovered) == sorted([jsonl_part.name, wav_part.name])
    assert all(x["fixed"] for x in recovered)
    assert sorted(p.name for p in rec_dir.iterdir()) == [f"{call_id}.jsonl", f"{call_id}.wav"]
    final_wav = rec_dir / f"{call_id}.wav"
    rate, whole = read_stereo_wav(final_wav)
    assert len(whole) * 4 == final_wav.stat().st_size - 44  # header sizes = the data there
    assert len(whole) >= len(stereo)
    assert np.array_equal(whole[: len(stereo)], stereo)
    final_lines = transcript(rec_dir / f"{call_id}.jsonl")
    assert final_lines[: len(lines)] == lines and final_lines[-1]["kind"] == "recovered"
