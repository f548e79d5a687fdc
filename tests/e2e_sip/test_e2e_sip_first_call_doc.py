"""docs/first-call.md runs: its baresip `config`, `accounts` and dial command, taken from the
doc, dial a `gateway serve` started as `make run` starts it (only the ports differ), and baresip
hears the greeting and then the echo of what it said, checked by content.

The doc's sound device lines (`alsa`) become a WAV source and a recorder (this machine has no
sound card), its ports become free ones; everything else is the doc's text as written."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import wave
from pathlib import Path

import numpy as np

from gateway.media.format import AudioFormat
from gateway.realtime.local.tts import render_prompts
from tests.support.audio import read_wav_8k, windows_found
from tests.support.baresip import speech_wav
from tests.support.binaries import require_binary
from tests.support.gateway import GatewayProcess, call_summaries
from tests.support.harness import free_port_with_next, free_udp_block
from tests.support.waiting import wait_until

DOC = Path(__file__).resolve().parents[2] / "docs" / "first-call.md"


def doc_listing(name: str) -> str:
    """The fenced listing after `<!-- first-call: NAME -->` in the doc."""
    match = re.search(rf"<!-- first-call: {name} -->\n```[a-z]*\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/first-call.md has no listing {name!r}"
    return match.group(1)


def _phone_config(config: str, source: Path, recordings: Path, sip_port: int, rtp: int) -> str:
    out = []
    for line in config.splitlines():
        key, _, value = line.partition(" ")
        if line == "module alsa.so":  # no sound card here: a WAV file in, a recorder out
            out += ["module aufile.so", "module aubridge.so", "module sndfile.so"]
        elif key in ("audio_player", "audio_alert"):
            out.append(f"{key} aubridge,nil")
        elif key == "audio_source":
            out.append(f"audio_source aufile,{source}")
        elif key == "sip_listen":
            out.append(f"sip_listen {value.rpartition(':')[0]}:{sip_port}")
        elif key == "rtp_ports":
            out.append(f"rtp_ports {rtp}-{rtp + 20}")
        else:
            out.append(line)
    return "\n".join([*out, f"snd_path {recordings}", ""])


def test_the_docs_baresip_configuration_reaches_the_greeting_and_the_echo(
    tmp_path: Path,
) -> None:
    require_binary("baresip", "baresip")
    greeting_pcm = asyncio.run(render_prompts(True)).audio("greeting", AudioFormat("pcm16", 8000))
    greeting = np.frombuffer(greeting_pcm, "<i2")
    source_8k, said = speech_wav(tmp_path, len(greeting) / 8000 + 0.7, 4.0)
    # baresip's aufile wants the codec's rate: G.722 (the doc's first codec) is 16 kHz
    source = tmp_path / "input16k.wav"
    sox = require_binary("sox", "sox")
    subprocess.run([sox, str(source_8k), "-r", "16000", str(source)], check=True)
    with wave.open(str(source)) as w:
        seconds = int(w.getnframes() / w.getframerate()) + 4
    phone_dir, recordings = tmp_path / "baresip-gateway", tmp_path / "recordings"
    phone_dir.mkdir()
    recordings.mkdir()
    config = doc_listing("baresip config")
    assert "127.0.0.1" in config and "module g711.so" in config
    (phone_dir / "config").write_text(
        _phone_config(config, source, recordings, free_port_with_next(), free_udp_block(22))
    )
    (phone_dir / "accounts").write_text(doc_listing("baresip accounts"))
    # `make run` is `gateway serve` with the defaults; only the ports are the test's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "YANDEX_"))}
    gw = GatewayProcess(tmp_path, env={"GATEWAY_CONFIG": ""})
    gw.env = {k: v for k, v in env.items() if not k.startswith("GATEWAY_")}
    gw.start()
    phone: subprocess.Popen[bytes] | None = None
    try:
        dial = doc_listing("baresip dial").strip()
        assert ":5060" in dial and "~/.baresip-gateway" in dial
        dial = dial.replace(":5060", f":{gw.sip_port}").replace("~/.baresip-gateway", "DIR")
        argv = [str(phone_dir) if a == "DIR" else a for a in shlex.split(dial)]
        argv[argv.index("-t") + 1] = str(seconds)
        with (tmp_path / "baresip.log").open("wb") as log:
            phone = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            wait_until(lambda: call_summaries(gw), seconds + 10, "the call to end")
    finally:
        if phone is not None and phone.poll() is None:
            phone.terminate()
            phone.wait(5)
        assert gw.stop() == 0
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "remote_hangup", summary
    files = sorted(recordings.glob("*-dec.wav"))
    assert len(files) == 1, (tmp_path / "baresip.log").read_text(errors="replace")[-2000:]
    heard = read_wav_8k(files[0])
    # the greeting (G.722 by the doc's codec order: a lossy wideband round trip), then the echo
    # (measured here: 0.96-0.999 per 250 ms window; the greeting's one silent window scores 0)
    found = windows_found(greeting, heard)
    assert np.mean(np.array(found) >= 0.8) >= 0.8, found
    found = windows_found(said, heard[len(greeting) :])
    assert np.mean(np.array(found) >= 0.8) >= 0.8, found
