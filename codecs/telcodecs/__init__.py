"""telcodecs: telephony audio codecs for the gateway's media path.

Pure functions and small stateful objects over int16 numpy arrays; numpy is the only dependency.

* G.711 µ-law / A-law encode, decode and transcode, bit-exact with the reference codec; silence
  codes and code-domain gain tables.
* `Resampler`: streaming polyphase resampling between SUPPORTED_RATES, one frame out per frame in;
  `resample`/`resample_any` for a whole signal.
* `DtmfDetector`: in-band DTMF detection at 8 kHz.
* Levels (`rms_dbfs`, `peak_dbfs`), `silence` and `ComfortNoiseSource`; `tone_pattern` for chimes.

Bad input (wrong dtype, shape, rate or byte count) raises ValueError; nothing is coerced.
"""

from __future__ import annotations

from telcodecs._validate import SUPPORTED_RATES, pcm16_from_bytes
from telcodecs.dtmf import DtmfDetector, dtmf_digit_frequencies
from telcodecs.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    alaw_encode_array,
    alaw_to_ulaw,
    g711_gain_table,
    g711_silence,
    g711_silence_code,
    ulaw_decode,
    ulaw_encode,
    ulaw_encode_array,
    ulaw_to_alaw,
)
from telcodecs.level import DBFS_FLOOR, ComfortNoiseSource, peak_dbfs, rms_dbfs, silence
from telcodecs.resample import Resampler, resample, resample_any
from telcodecs.tones import tone_pattern

__all__ = [
    "ALAW_SILENCE",
    "DBFS_FLOOR",
    "SUPPORTED_RATES",
    "ULAW_SILENCE",
    "ComfortNoiseSource",
    "DtmfDetector",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "alaw_encode_array",
    "alaw_to_ulaw",
    "dtmf_digit_frequencies",
    "g711_gain_table",
    "g711_silence",
    "g711_silence_code",
    "pcm16_from_bytes",
    "peak_dbfs",
    "resample",
    "resample_any",
    "rms_dbfs",
    "silence",
    "tone_pattern",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_encode_array",
    "ulaw_to_alaw",
]
