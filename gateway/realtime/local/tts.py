"""Spoken prompts of the local provider: espeak-ng when installed, else two-tone chimes.

`render_prompts()` runs espeak-ng once per process (asyncio subprocess, outside the sans-I/O
engine) and caches the result; `Prompts.audio(name, fmt)` gives a prompt in any session output
format, converted once per format and cached.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field

import numpy as np

from gateway.logs import get_logger
from gateway.media.convert import resample_any
from gateway.media.format import AudioFormat
from gateway.realtime.local.audio import from_pcm16

__all__ = ["PROMPT_TEXTS", "Prompt", "Prompts", "chime", "render_prompts"]

log = get_logger("local_provider")

RATE = 24000
PROMPT_TEXTS: dict[str, str] = {
    "greeting": "Hello. This is the local test provider. Say something and I will repeat it.",
    "reply": "Done.",
    "idle": "Are you still there?",
    "dtmf": "You pressed a key.",
}
_CHIMES: dict[str, tuple[float, float]] = {
    "greeting": (660.0, 880.0),
    "reply": (880.0, 660.0),
    "idle": (523.0, 523.0),
    "dtmf": (784.0, 988.0),
}


def chime(first_hz: float, second_hz: float, tone_ms: int = 250, rate: int = RATE) -> bytes:
    """Two tones with soft edges, -12 dBFS, as PCM16 bytes at `rate`."""
    n = rate * tone_ms // 1000
    t = np.arange(n) / rate
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (rate * 0.01))
    tones = [np.sin(2 * np.pi * f * t) * ramp for f in (first_hz, second_hz)]
    pcm = np.concatenate([*tones, np.zeros(rate // 10)]) * (32767 * 0.25)
    return pcm.astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    text: str
    pcm: bytes  # PCM16 at 24 kHz
    spoken: bool


@dataclass
class Prompts:
    """The provider's canned prompts; audio in any output format, cached per format."""

    prompts: dict[str, Prompt]
    _cache: dict[tuple[str, AudioFormat], bytes] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return self.prompts[name].text

    def audio(self, name: str, fmt: AudioFormat) -> bytes:
        key = (name, fmt)
        out = self._cache.get(key)
        if out is None:
            pcm = self.prompts[name].pcm
            if fmt.rate != RATE:
                pcm = _resample_bytes(pcm, RATE, fmt.rate)
            out = self._cache[key] = from_pcm16(pcm, fmt)
        return out


def chime_prompts() -> Prompts:
    """Prompts made of chimes only (no espeak-ng)."""
    return Prompts(
        {
            name: Prompt(name, text, chime(*_CHIMES[name]), spoken=False)
            for name, text in PROMPT_TEXTS.items()
        }
    )


async def _espeak(text: str, voice: str = "en") -> bytes | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--stdout",
        "-v",
        voice,
        "-s",
        "165",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        wav, _ = await asyncio.wait_for(proc.communicate(), 10.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    # espeak-ng streams a WAV with placeholder sizes: 16-bit mono; read the rate from the header
    pos = wav.find(b"data")
    if proc.returncode != 0 or wav[:4] != b"RIFF" or pos < 0 or len(wav) < 44:
        return None
    rate = int.from_bytes(wav[24:28], "little")
    pcm = wav[pos + 8 :]
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    if rate != RATE:
        pcm = _resample_bytes(pcm, rate, RATE)
    return pcm


def _resample_bytes(pcm: bytes, src: int, dst: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
    return resample_any(samples, src, dst).astype("<i2").tobytes()


_cached: Prompts | None = None


async def render_prompts(use_espeak: bool = True) -> Prompts:
    """The prompts, spoken by espeak-ng when it is installed (cached for the process)."""
    global _cached
    if not use_espeak:
        return chime_prompts()
    if _cached is None:
        prompts = chime_prompts()
        spoken = 0
        for name, text in PROMPT_TEXTS.items():
            pcm = await _espeak(text)
            if pcm:
                prompts.prompts[name] = Prompt(name, text, pcm, spoken=True)
                spoken += 1
        log.info("local_provider_prompts", spoken=spoken, chimes=len(PROMPT_TEXTS) - spoken)
        _cached = prompts
    return _cached
