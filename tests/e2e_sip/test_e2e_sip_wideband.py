"""Wideband SIP calls with a real phone: baresip with only its G.722 module, then only Opus,
calls the whole gateway (embedded local provider, which echoes what it heard). Checked by
content: the caller's 5-7 kHz band survives the way to the model and back (an 8 kHz step
anywhere would leave nothing above 4 kHz), the echo correlates with what was said, and RFC 4733
DTMF works at the codec's clock."""

from __future__ import annotations

import asyncio
import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import telcodecs

from gateway.media.format import AudioFormat
from tests.support.audio import Pcm, resample, windows_found
from tests.support.baresip import PHRASE, Baresip, baresip_call
from tests.support.binaries import require_binary
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.harness import free_port
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for

#: baresip module -> (our codec name, the rate and channels of baresip's audio with it: its
#: aufile source must match them, Opus being opus/48000/2)
CODECS = {"g722": ("g722", 16000, 1), "opus": ("opus", 48000, 2)}


def band_share(pcm: Pcm, rate: int, low: float, high: float) -> float:
    """The share of `pcm`'s energy (300 Hz - 7.5 kHz) that lies between `low` and `high` Hz."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    total = spectrum[(freqs >= 300) & (freqs <= 7500)].sum()
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum() / max(total, 1e-9))


def lowpassed(pcm: Pcm, rate: int, cutoff: float = 4000.0) -> Pcm:
    """What an 8 kHz step would leave of `pcm`: nothing above `cutoff` (ideal low-pass)."""
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    spectrum[np.fft.rfftfreq(len(pcm), 1 / rate) > cutoff] = 0
    return np.fft.irfft(spectrum, len(pcm)).astype(np.int16)


def wideband_source(
    workdir: Path, rate: int, channels: int, lead_s: float, tail_s: float
) -> tuple[Path, Pcm]:
    """espeak-ng saying PHRASE at `rate` (the VAD's speech) with band noise at 5-7 kHz mixed
    in, padded with silence: the file baresip sends, and the test signal alone."""
    espeak = require_binary("espeak-ng", "espeak-ng")
    sox = require_binary("sox", "sox")
    raw, speech = workdir / "say.wav", workdir / "say_r.wav"
    subprocess.run([espeak, "-w", str(raw), PHRASE], check=True, capture_output=True)
    subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(speech)], check=True)
    with wave.open(str(speech)) as w:
        said = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
    rng = np.random.default_rng(7)
    noise = np.fft.rfft(rng.standard_normal(len(said)))
    freqs = np.fft.rfftfreq(len(said), 1 / rate)
    noise[(freqs < 5000) | (freqs > 7000)] = 0
    band = np.fft.irfft(noise, len(said))
    band *= 0.5 * np.sqrt(np.mean(said**2)) / np.sqrt(np.mean(band**2))  # 6 dB under the speech
    signal = np.clip(said + band, -32767, 32767).astype(np.int16)
    padded = np.concatenate(
        [np.zeros(int(lead_s * rate), np.int16), signal, np.zeros(int(tail_s * rate), np.int16)]
    )
    path = workdir / "input.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(padded, channels).tobytes())
    return path, signal


def heard_at(path: Path, rate: int) -> Pcm:
    with wave.open(str(path)) as w:
        assert w.getframerate() == rate, (path, w.getframerate())
        channels = w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm


@pytest.mark.parametrize("module", ["g722", "opus"])
async def test_a_wideband_caller_keeps_its_5_to_7_khz_band_both_ways(
    tmp_path: Path, module: str
) -> None:
    codec, rate, channels = CODECS[module]
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        greeting_s = len(greeting) / 8000
        source, signal = wideband_source(tmp_path, rate, channels, greeting_s + 0.7, 4.0)
        phone = await baresip_call(gw, log, tmp_path, source, codecs=(module,))
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert log.outcomes() == ["remote_hangup"]
        assert call.leg.native == AudioFormat("pcm16", rate)
        assert call.leg.session.codec == codec
        heard = heard_at(phone.heard_file(), rate)
    # after the greeting (plus a margin), baresip hears only the echo of what it said
    echo = heard[int((greeting_s + 1.0) * rate) :]
    said_8k = resample(signal, rate, 8000)
    found = windows_found(lowpassed(said_8k, 8000, 3400), resample(echo, rate, 8000))
    assert np.mean(np.array(found) >= 0.6) >= 0.6, found
    sent_share = band_share(signal, rate, 5000, 7000)
    heard_share = band_share(echo, rate, 5000, 7000)
    narrow_share = band_share(lowpassed(signal, rate), rate, 5000, 7000)
    # the band made it to the model and back: most of its share of the energy is still there,
    # orders of magnitude above what a 4 kHz low-pass (any 8 kHz step) would leave
    assert heard_share >= 0.4 * sent_share, (heard_share, sent_share)
    assert heard_share > 100 * narrow_share + 0.02, (heard_share, narrow_share)


async def _baresip_command(port: int, command: str, params: str) -> None:
    """One command to baresip's ctrl_tcp module (a JSON netstring)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
    writer.write(b"%d:%s," % (len(body), body))
    await writer.drain()
    await asyncio.wait_for(reader.read(1), 5)  # its response: the command ran
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("module", ["g722", "opus"])
async def test_rfc4733_dtmf_works_both_ways_on_a_wideband_call(tmp_path: Path, module: str) -> None:
    codec, rate, channels = CODECS[module]
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        source, _ = wideband_source(tmp_path, rate, channels, 0.5, 7.0)
        ctrl = free_port()
        phone = Baresip(
            tmp_path,
            source,
            f"sip:agent@127.0.0.1:{gw.sip_port}",
            10,
            codecs=(module,),
            config_extra=f"module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n",
        )
        phone.args.append("-v")  # "received event: 'D' (end=1)" is a debug line
        phone.start()
        try:
            await wait_for(lambda: bool(log.calls), 10, "the call")
            [call] = log.calls
            leg = call.leg
            await wait_for(lambda: leg.session.stats.packets_in > 10, 5, "RTP from baresip")
            session = leg.session
            assert session.codec == codec
            # baresip 1.0 offers telephone-event/8000 only, with either codec: the answer takes
            # it (G.722's RTP clock is 8000, RFC 3551 §4.5.2; with Opus at 48000 there is no
            # match, so the offered one); tests/sip/test_sip_wideband_sdp.py covers 48000
            assert session.dtmf_pt is not None
            assert session.dtmf_clock == 8000
            assert session.clock_rate == {"g722": 8000, "opus": 48000}[codec]
            # baresip -> gateway
            await _baresip_command(ctrl, "sndcode", "47*")
            await wait_for(lambda: len(log.dtmf) == 3, 5, "three digits from baresip")
            assert [(d, src) for _, d, src in log.dtmf] == [
                ("4", "rfc4733"),
                ("7", "rfc4733"),
                ("*", "rfc4733"),
            ]
            # gateway -> baresip
            leg.send_dtmf("19#")
            ends = "(end=1)"
            await wait_for(lambda: phone.trace().count(ends) >= 3, 5, "baresip to hear 3 digits")
            heard = [line for line in phone.trace().split("received event: ")[1:] if ends in line]
            assert [line.split("'")[1] for line in heard] == ["1", "9", "#"], heard
        finally:
            phone.kill()
        await wait_for(lambda: bool(log.ended), 10, "the call to end")
        await assert_nothing_leaked(gw)
