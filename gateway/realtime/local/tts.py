"""Spoken prompts of the local provider: espeak-ng when installed, else two-tone chimes.

`render_prompts()` runs espeak-ng once per process (asyncio subprocess, outside the sans-I/O
engine) and caches the result; the prompts themselves (`prompts.Prompts`) are plain data.
"""

from __future__ import annotations

import asyncio
import shutil

from gateway.logs import get_logger
from gateway.realtime.local.audio import resample_bytes
from gateway.realtime.local.prompts import PROMPT_TEXTS, RATE, Prompt, Prompts, chime_prompts

__all__ = ["render_prompts"]

log = get_logger("local_provider")


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
        pcm = resample_bytes(pcm, rate, RATE)
    return pcm


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
