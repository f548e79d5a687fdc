"""Audio formats: an encoding at a sample rate, the value every layer passes around.

A leaf module (no imports from the gateway): the protocol cores (Realtime events, protocol and
profiles, the local engine), the media engine and the legs all name formats with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["pcm16", "pcmu", "pcma"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An audio encoding at a sample rate. G.711 is always 8 kHz; PCM16 is little-endian."""

    encoding: Encoding
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    @property
    def bytes_per_ms(self) -> float:
        """Bytes per millisecond (8.0 for G.711, 48.0 for PCM16 at 24 kHz)."""
        return self.rate * self.bytes_per_sample / 1000

    def frame_bytes(self, ms: int) -> int:
        """Bytes in `ms` milliseconds of this format."""
        return self.rate * ms // 1000 * self.bytes_per_sample

    def __str__(self) -> str:
        return f"{self.encoding}/{self.rate}"


PCMU_8K = AudioFormat("pcmu", 8000)
PCMA_8K = AudioFormat("pcma", 8000)
PCM16_8K = AudioFormat("pcm16", 8000)
PCM16_16K = AudioFormat("pcm16", 16000)
PCM16_24K = AudioFormat("pcm16", 24000)
PCM16_48K = AudioFormat("pcm16", 48000)

#: the RTP packet times a SIP leg sends and receives (RFC 4566 a=ptime/a=maxptime): any whole
#: millisecond in this range; the media clock paces each ptime in use on its own grid
PTIME_MIN_MS = 10
PTIME_MAX_MS = 120
