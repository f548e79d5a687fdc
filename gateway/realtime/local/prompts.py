"""The local provider's canned prompts: their texts, two-tone chimes, and their audio in any
session output format (converted once per format and cached).

Sans-I/O: the chimes are computed here (telcodecs' `tone_pattern`); spoken versions come from
`tts.render_prompts()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telcodecs import tone_pattern

from gateway.media.convert import convert
from gateway.media.format import PCM16_24K, AudioFormat

__all__ = ["PROMPT_TEXTS", "RATE", "Prompt", "Prompts", "chime", "chime_prompts"]

RATE = PCM16_24K.rate  # the prompts are kept as PCM16 at 24 kHz
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
    """Two tones with soft edges, -12 dBFS, then 100 ms of silence, as PCM16 bytes at `rate`."""
    pcm = tone_pattern([(first_hz, tone_ms), (second_hz, tone_ms), (0.0, 100)], rate, 0.25)
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
            out = self._cache[key] = convert(self.prompts[name].pcm, PCM16_24K, fmt)
        return out


def chime_prompts() -> Prompts:
    """Prompts made of chimes only (no espeak-ng)."""
    return Prompts(
        {
            name: Prompt(name, text, chime(*_CHIMES[name]), spoken=False)
            for name, text in PROMPT_TEXTS.items()
        }
    )
