"""baresip (Debian package baresip), headless, as a SIP phone in tests: `Baresip` dials once,
sends a WAV file and records what it hears; `baresip_call` runs one call to an in-process
gateway; `speech_wav` makes its input (espeak-ng and sox)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import wave
from pathlib import Path

from gateway.app import Gateway
from tests.support.audio import Pcm, read_wav_8k
from tests.support.binaries import require_binary
from tests.support.harness import free_port_with_next, free_udp_block
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for

PHRASE = "Testing the echo agent, one two three."


def speech_wav(workdir: Path, lead_silence_s: float, tail_silence_s: float) -> tuple[Path, Pcm]:
    """espeak-ng saying `PHRASE` at 8 kHz mono, padded with silence (baresip hangs up at end of
    file): the padded file to send, and the speech alone as PCM."""
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
    """One headless baresip that dials `target` once (or, with no target, answers), sends
    `source` and records what it hears; started by PID, killed in `kill()`."""

    def __init__(
        self,
        workdir: Path,
        source: Path,
        target: str,
        seconds: int,
        *,
        config_extra: str = "",
        account: str = "<sip:gw@127.0.0.1>;regint=0;answermode=auto",
        codecs: tuple[str, ...] = ("g711",),
    ) -> None:
        self.binary = require_binary("baresip", "baresip")
        self.dir = workdir / "baresip"
        self.recordings = workdir / "recordings"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        rtp = free_udp_block(22)
        #: its SIP port (UDP and TCP); with `sip_certificate` it takes TLS on the next one
        self.sip_port = free_port_with_next()
        (self.dir / "config").write_text(
            f"sip_listen 127.0.0.1:{self.sip_port}\n"
            "net_interface 127.0.0.1\n"
            "audio_player aubridge,nil\n"
            "audio_alert aubridge,nil\n"
            f"audio_source aufile,{source}\n"
            "module_path /usr/lib/baresip/modules\n"
            + "".join(f"module {codec}.so\n" for codec in codecs)
            + "module aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
            "module_app account.so\nmodule_app menu.so\n"
            f"snd_path {self.recordings}\n"
            f"rtp_ports {rtp}-{rtp + 20}\n"
            f"{config_extra}"
        )
        (self.dir / "accounts").write_text(f"{account}\n")
        # no target: it dials nobody and answers (answermode=auto) the calls it gets
        dial = ["-e", f"/dial {target}"] if target else []
        self.args = [self.binary, "-f", str(self.dir), "-t", str(seconds), *dial]
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

    def trace(self) -> str:
        """Its log so far (with `-s`: every SIP message, "TLS a -> b" before each)."""
        return self.log.read_text(errors="replace")

    def heard(self) -> Pcm:
        """What baresip heard (sndfile's decoder-side dump), 8 kHz mono."""
        return read_wav_8k(self.heard_file())

    def heard_file(self) -> Path:
        """sndfile's decoder-side dump (at the codec's rate: 16 kHz for G.722, 48 for Opus)."""
        files = sorted(self.recordings.glob("*-dec.wav"))
        assert len(files) == 1, (files, self.log.read_text(errors="replace")[-2000:])
        return files[0]


async def baresip_call(
    gw: Gateway, log: CallLog, workdir: Path, source: Path, codecs: tuple[str, ...] = ("g711",)
) -> Baresip:
    """baresip dials the gateway and hangs up at the end of `source`; it lingers until its `-t`,
    so it is stopped once the gateway has seen the call end (the recording is closed then)."""
    with wave.open(str(source)) as w:
        seconds = int(w.getnframes() / w.getframerate()) + 4
    target = f"sip:agent@127.0.0.1:{gw.sip_port}"
    phone = Baresip(workdir, source, target, seconds, codecs=codecs).start()
    try:
        waiter = asyncio.create_task(phone.wait_async())
        await wait_for(lambda: bool(log.ended) or waiter.done(), seconds + 5, "the call to end")
        assert log.ended, phone.log.read_text(errors="replace")[-2000:]
        await asyncio.sleep(0.5)
    finally:
        phone.kill()
    await waiter
    return phone
