"""Format conversion picks telcodecs' G.711 and resampler by format; whole and streaming agree."""

from __future__ import annotations

import numpy as np
import pytest
import telcodecs

from gateway.media.convert import AudioConverter, convert, decode, encode, silence_byte
from gateway.media.format import PCM16_8K, PCM16_24K, PCM16_48K, PCMA_8K, PCMU_8K, AudioFormat

FORMATS = [PCMU_8K, PCMA_8K, PCM16_8K, PCM16_24K, PCM16_48K, AudioFormat("pcm16", 44100)]


def _speechlike(fmt: AudioFormat, ms: int = 300) -> bytes:
    n = fmt.rate * ms // 1000
    t = np.arange(n) / fmt.rate
    pcm = (6000 * np.sin(2 * np.pi * (300 * t + 900 * t**2))).astype(np.int16)
    return encode(pcm, fmt)


@pytest.mark.parametrize("dst", FORMATS, ids=str)
@pytest.mark.parametrize("src", FORMATS, ids=str)
def test_whole_conversion_equals_the_stream_plus_its_tail(
    src: AudioFormat, dst: AudioFormat
) -> None:
    data = _speechlike(src)
    stream = AudioConverter(src, dst)
    frame = src.frame_bytes(20)
    pieces = [stream.convert(data[i : i + frame]) for i in range(0, len(data), frame)]
    whole = convert(data, src, dst)
    streamed = b"".join(pieces) + stream.flush()
    assert len(whole) == len(streamed)
    a = decode(whole, dst).astype(np.int32)
    b = decode(streamed, dst).astype(np.int32)
    # the resampler is chunking-exact within 1 LSB (float sums); G.711 then within one step
    step = 1 if dst.encoding == "pcm16" else np.abs(a) // 16 + 16
    assert np.all(np.abs(a - b) <= step)


def test_law_to_law_and_identity_do_no_pcm_work() -> None:
    data = bytes(range(256))
    assert convert(data, PCMU_8K, PCMU_8K) is data
    assert convert(data, PCMU_8K, PCMA_8K) == telcodecs.ulaw_to_alaw(data)
    assert convert(data, PCMA_8K, PCMU_8K) == telcodecs.alaw_to_ulaw(data)
    assert AudioConverter(PCMU_8K, PCMA_8K).convert(data) == telcodecs.ulaw_to_alaw(data)


def test_silence_byte_is_telcodecs_silence() -> None:
    assert silence_byte(PCMU_8K) == telcodecs.ULAW_SILENCE
    assert silence_byte(PCMA_8K) == telcodecs.ALAW_SILENCE
    assert silence_byte(PCM16_48K) == 0
    for fmt in FORMATS:
        decoded = set(decode(bytes([silence_byte(fmt)]) * 320, fmt).tolist())
        assert decoded == ({8} if fmt == PCMA_8K else {0})  # A-law has no code for 0


def test_odd_pcm16_is_an_error() -> None:
    with pytest.raises(ValueError, match="odd"):
        decode(b"\x00\x01\x02", PCM16_24K)
