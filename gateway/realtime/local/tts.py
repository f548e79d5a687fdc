"""Spoken prompts of the local provider: espeak-ng when installed, else two-tone chimes.

`render_prompts()` speaks them once per process with `gateway.media.espeak` (in a worker thread,
outside the sans-I/O engine) and caches the result; the prompts themselves (`prompts.Prompts`)
are plain data.
"""

from __future__ import annotations

import asyncio

from gateway.logs import get_logger
from gateway.media.espeak import speak
from gateway.realtime.local.prompts import PROMPT_TEXTS, RATE, Prompt, Prompts, chime_prompts

__all__ = ["render_prompts"]

log = get_logger("local_provider")

_VOICE = "en"
_SPEED_WPM = 165
_TIMEOUT_S = 10.0

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
            pcm = await asyncio.to_thread(
                speak, text, RATE, voice=_VOICE, speed_wpm=_SPEED_WPM, timeout=_TIMEOUT_S
            )
            if pcm is not None and len(pcm):
                prompts.prompts[name] = Prompt(name, text, pcm.astype("<i2").tobytes(), spoken=True)
                spoken += 1
        log.info("local_provider_prompts", spoken=spoken, chimes=len(PROMPT_TEXTS) - spoken)
        _cached = prompts
    return _cached
