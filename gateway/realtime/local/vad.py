"""Energy-based server VAD for the local provider (sans-I/O).

Parameters are OpenAI's `server_vad` ones with their defaults: `threshold` 0.5, `prefix_padding_ms`
300, `silence_duration_ms` 500. The threshold (0..1) maps to a frame energy level:
``level_dbfs = -70 + 60 * threshold`` (0.5 -> -40 dBFS), on 10 ms frames.

Times are milliseconds on the session's input stream (counted from the first appended audio), not
wall-clock time: a burst of appended audio is judged as the audio it contains.
Speech starts after `min_speech_ms` of consecutive loud frames; `audio_start_ms` is the onset
minus the prefix padding (never before 0). Speech stops after `silence_duration_ms` of quiet;
`audio_end_ms` is where that silence ends (it includes the silence, as OpenAI's does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["EnergyVad", "VadEvent", "threshold_to_dbfs"]

FRAME_MS = 10


def threshold_to_dbfs(threshold: float) -> float:
    """The frame level (dBFS) that counts as speech for an OpenAI-style threshold in 0..1."""
    return -70.0 + 60.0 * min(max(threshold, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class VadEvent:
    """`kind` is "started" (at = audio_start_ms) or "stopped" (at = audio_end_ms)."""

    kind: str
    at_ms: int


class EnergyVad:
    """Feed int16 samples with `process()`; get speech start/stop events on the stream timeline."""

    def __init__(
        self,
        rate: int,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        min_speech_ms: int = 30,
        start_ms: int = 0,
    ) -> None:
        self.rate = rate
        self.frame_len = rate * FRAME_MS // 1000
        level = 32768.0 * 10 ** (threshold_to_dbfs(threshold) / 20)
        self._ms_threshold = level * level * self.frame_len  # sum of squares per frame
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_frames = max(1, silence_duration_ms // FRAME_MS)
        self.speech_frames = max(1, min_speech_ms // FRAME_MS)
        self.speaking = False
        self._frames = start_ms // FRAME_MS  # frames judged, on the stream timeline
        self._loud_run = 0
        self._quiet_run = 0
        self._rest: NDArray[np.int16] = np.zeros(0, dtype=np.int16)

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio judged so far (whole frames)."""
        return self._frames * FRAME_MS

    def process(self, pcm: NDArray[np.int16]) -> list[VadEvent]:
        """Judge `pcm` (appended to what came before); return the events it caused."""
        if self._rest.size:
            pcm = np.concatenate((self._rest, pcm))
        n = pcm.size // self.frame_len
        used = n * self.frame_len
        self._rest = pcm[used:].copy()
        if n == 0:
            return []
        x = pcm[:used].reshape(n, self.frame_len).astype(np.float32)
        loud = np.einsum("ij,ij->i", x, x) > self._ms_threshold
        out: list[VadEvent] = []
        for is_loud in loud.tolist():
            self._frames += 1
            if is_loud:
                self._loud_run += 1
                self._quiet_run = 0
            else:
                self._quiet_run += 1
                self._loud_run = 0
            if not self.speaking and self._loud_run >= self.speech_frames:
                self.speaking = True
                onset = (self._frames - self._loud_run) * FRAME_MS
                out.append(VadEvent("started", max(0, onset - self.prefix_padding_ms)))
            elif self.speaking and self._quiet_run >= self.silence_frames:
                self.speaking = False
                out.append(VadEvent("stopped", self._frames * FRAME_MS))
        return out
