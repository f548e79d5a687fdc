"""baresip (Debian package baresip), headless, calls the whole gateway (embedded local provider)
and records what it hears. Checked by content: the greeting and the echo of what baresip said
are in the recording (cross-correlation), and speech during the greeting is a barge-in that
stops bot audio within 40 ms and truncates the greeting at what was actually played."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import wave
from pathlib import Path

import numpy as np
import telcodecs

from gateway.app import Gateway
from gateway.media.format import AudioFormat
from tests.e2e_sip.e2e_sip_helpers import (
    CallLog,
    Pcm,
    assert_nothing_leaked,
    best_correlation,
    client_events,
    provider_sessions,
    wait_for,
    windows_found,
)
from tests.gateway_harness import running_gateway
from tests.sipp_harness import free_port_with_next, free_udp_port, require_binary

PHRASE = "Testing the echo agent, one two three."


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


def speech_wav(workdir: Path, lead_silence_s: float, tail_silence_s: float) -> tuple[Path, Pcm]:
    """espeak-ng speech at 8 kHz mono, padded with silence (baresip hangs up at end of file)."""
    espeak = require_binary("espeak-ng", "espeak-ng")
    sox = require_binary("sox", "sox")
    raw, speech, padded = workdir / "say.wav", workdir / "say8k.wav", workdir / "input.wav"
    subprocess.run([espeak, "-w", str(raw), PHRASE], check=True, capture_output=True)
    subprocess.run([sox, str(raw), "-r", "8000", "-c", "1", "-b", "16", str(speech)], check=True)
    subprocess.run(
        [sox, str(speech), str(padded), "pad", str(lead_silence_s), str(tail_silence_s)],
        check=True,
    )
    return padded, read_wav_8k(speech)


class Baresip:
    """One headless baresip that dials `target` once, sends `source` and records what it hears;
    started by PID, killed in `kill()`."""

    def __init__(
        self,
        workdir: Path,
        source: Path,
        target: str,
        seconds: int,
        *,
        config_extra: str = "",
        account: str = "<sip:gw@127.0.0.1>;regint=0;answermode=auto",
    ) -> None:
        self.binary = require_binary("baresip", "baresip")
        self.dir = workdir / "baresip"
        self.recordings = workdir / "recordings"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        rtp = free_udp_port() & ~1
        (self.dir / "config").write_text(
            f"sip_listen 127.0.0.1:{free_port_with_next()}\n"
            "net_interface 127.0.0.1\n"
            "audio_player aubridge,nil\n"
            "audio_alert aubridge,nil\n"
            f"audio_source aufile,{source}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
            "module_app account.so\nmodule_app menu.so\n"
            f"snd_path {self.recordings}\n"
            f"rtp_ports {rtp}-{rtp + 20}\n"
            f"{config_extra}"
        )
        (self.dir / "accounts").write_text(f"{account}\n")
        self.args = [self.binary, "-f", str(self.dir), "-t", str(seconds), "-e", f"/dial {target}"]
        self.seconds = seconds
        self.log = workdir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Baresip:
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    async def wait_async(self) -> int:
        assert self.proc is not None
        try:
            return await asyncio.to_thread(self.proc.wait, self.seconds + 10)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(3)

    def heard(self) -> Pcm:
        """What baresip heard (sndfile's decoder-side dump), 8 kHz mono."""
        files = sorted(self.recordings.glob("*-dec.wav"))
        assert len(files) == 1, (files, self.log.read_text(errors="replace")[-2000:])
        return read_wav_8k(files[0])


async def _call(gw: Gateway, log: CallLog, workdir: Path, source: Path) -> Baresip:
    """baresip dials the gateway and hangs up at the end of `source`; it lingers until its `-t`,
    so it is stopped once the gateway has seen the call end (the recording is closed then)."""
    with wave.open(str(source)) as w:
        seconds = int(w.getnframes() / w.getframerate()) + 4
    phone = Baresip(workdir, source, f"sip:agent@127.0.0.1:{gw.sip_port}", seconds).start()
    try:
        waiter = asyncio.create_task(phone.wait_async())
        await wait_for(lambda: bool(log.ended) or waiter.done(), seconds + 5, "the call to end")
        assert log.ended, phone.log.read_text(errors="replace")[-2000:]
        await asyncio.sleep(0.5)
    finally:
        phone.kill()
    await waiter
    return phone


async def test_baresip_hears_the_greeting_then_the_echo_of_what_it_said(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        # silence while the whole greeting plays, then the phrase, then time for its echo
        source, said = speech_wav(tmp_path, len(greeting) / 8000 + 0.7, 4.0)
        phone = await _call(gw, log, tmp_path, source)
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert log.outcomes() == ["remote_hangup"]
        assert call.stats["barge_ins"] == 0
        heard = phone.heard()
        # the greeting, start to end (G.711 both ways: sample for sample)
        found = windows_found(greeting, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.85, found
        # the echo of what baresip said, after the greeting
        found = windows_found(said, heard[len(greeting) :])
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found


async def test_barge_in_over_sip_stops_the_greeting_within_40ms(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        # speak 1.5 s into the greeting (which is longer than that)
        assert len(greeting) / 8000 > 3.0
        source, said = speech_wav(tmp_path, 1.5, 3.5)
        phone = await _call(gw, log, tmp_path, source)
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert call.stats["barge_ins"] == 1
        started = call.bridge.speech_started_at
        assert started is not None
        greeting_id = next(iter(call.playout.items))
        played = call.playout.items[greeting_id]
        # bot audio toward the caller stopped within 40 ms of speech_started reaching the gateway
        assert played.last_played_at is not None
        assert played.last_played_at - started <= 0.04, played.last_played_at - started
        # the truncate carried the milliseconds actually sent (PCMU: 8 bytes per ms)
        [engine] = provider_sessions(gw)
        [truncate] = client_events(engine, "conversation.item.truncate")
        assert truncate["item_id"] == greeting_id
        assert truncate["audio_end_ms"] == played.played_bytes // 8
        assert 0 < truncate["audio_end_ms"] < len(greeting) // 8
        await wait_for(lambda: engine.stats["truncated"] == 1, 2, "truncated")
        assert engine.stats["errors"] == 0
        # by content: baresip heard the greeting's start, not its end, then the echo
        heard = phone.heard()
        assert np.mean(np.array(windows_found(greeting[:8000], heard)) >= 0.9) >= 0.75
        assert best_correlation(greeting[-8000:], heard) < 0.5
        found = windows_found(said, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found
