"""The wideband RTP codecs, G.722 and Opus, on PyAV: one streaming encoder and decoder per call.

Why here and not in telcodecs: telcodecs is a sans-I/O core whose only dependency is numpy, and
the cores may not import `av` (tests/foundation/test_pure_cores.py: PyAV is the aiortc stack's
native library and loads Python logging). These objects are pure computation all the same; the
SIP leg holds one per call and converts between RTP payloads and int16 frames.

* G.722 (RFC 3551 §4.5.2): 16 kHz audio at 64 kbit/s, one byte per two samples, while the RTP
  clock (and the SDP rate) is 8000: a 20 ms frame is 320 samples, 160 bytes, 160 RTP ticks.
* Opus (RFC 7587): a 48 kHz RTP clock, mono here (a stereo sender is downmixed by the decoder).

`decode(b"")` means "this frame was lost": G.722 repeats the last frame with fading (as the
G.711 jitter buffer does), Opus runs libopus' own packet-loss concealment. In-band FEC is not
reachable through PyAV (its libopus decoder has no `decode_fec` switch), so a lost Opus packet
is always concealed, never rebuilt from the next one; our encoder does add FEC when the peer
asks for it (`useinbandfec=1`), because its decoder can use it.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame

__all__ = ["WIDEBAND_RATES", "G722Codec", "OpusCodec", "WidebandCodec", "codec_for"]

Pcm = npt.NDArray[np.int16]

#: the audio sample rate of each wideband codec (what the leg's `native` format carries)
WIDEBAND_RATES: Final = {"g722": 16000, "opus": 48000}

_FADE_GAINS: Final = (0.8, 0.5, 0.25)  # about -2, -6, -12 dB: 60 ms, then silence (as G.711)


class WidebandCodec(Protocol):
    """A streaming codec of one call: int16 frames in and out, RTP payloads on the wire."""

    name: str
    rate: int
    frame_samples: int

    def encode(self, pcm: Pcm) -> bytes: ...
    def decode(self, payload: bytes) -> Pcm: ...


def _context(name: str, mode: Literal["r", "w"], rate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(name, mode)
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = rate
    ctx.format = "s16"
    ctx.layout = "mono"
    return ctx


class _PyAvCodec:
    """The PyAV plumbing both codecs share: one frame of int16 in, bytes out, and back."""

    name = ""
    rate = 0

    def __init__(self, frame_ms: int) -> None:
        self.frame_samples = self.rate * frame_ms // 1000
        self._silence: Pcm = np.zeros(self.frame_samples, dtype=np.int16)
        self._last: Pcm = self._silence
        self._missing = len(_FADE_GAINS)
        self._pts = 0
        self._encoder = self._open_encoder()
        self._decoder = _context(self._av_name, "r", self.rate)
        self._decoder.open()

    _av_name = ""

    def _open_encoder(self) -> av.AudioCodecContext:
        ctx = _context(self._av_name, "w", self.rate)
        ctx.open()
        return ctx

    def encode(self, pcm: Pcm) -> bytes:
        """One frame of int16 samples at `rate` to one RTP payload."""
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(pcm)
        packets = self._encoder.encode(frame)
        return b"".join(bytes(p) for p in packets)

    def _decode_packet(self, payload: bytes) -> Pcm:
        frames = self._decoder.decode(av.Packet(payload))
        if len(frames) == 1:
            pcm: Pcm = np.asarray(frames[0].to_ndarray(), dtype=np.int16).reshape(-1)
        elif frames:
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
        else:
            return self._silence
        n = self.frame_samples
        if len(pcm) != n:  # a sender with another packet time: one frame per tick regardless
            pcm = pcm[:n] if len(pcm) > n else np.concatenate((pcm, self._silence[len(pcm) :]))
        return pcm

    def _fade(self) -> Pcm:
        missing = self._missing
        self._missing = missing + 1
        if missing < len(_FADE_GAINS):
            return (self._last * _FADE_GAINS[missing]).astype(np.int16)
        return self._silence


class G722Codec(_PyAvCodec):
    """G.722 at 64 kbit/s (RFC 3551 §4.5.2): 16 kHz audio, RTP clock 8000."""

    name = "g722"
    rate = 16000
    _av_name = "g722"

    def decode(self, payload: bytes) -> Pcm:
        """One RTP payload (b"": lost) to one frame of 16 kHz samples."""
        if not payload:
            return self._fade()
        try:
            pcm = self._decode_packet(payload)
        except av.FFmpegError:
            return self._fade()
        self._last = pcm
        self._missing = 0
        return pcm


class OpusCodec(_PyAvCodec):
    """Opus (RFC 7587) at 48 kHz, mono. `fec`: add in-band FEC to what we send (the peer's
    `useinbandfec=1`); `bitrate` in bit/s."""

    name = "opus"
    rate = 48000
    _av_name = "libopus"

    def __init__(self, frame_ms: int, *, fec: bool = False, bitrate: int = 32000) -> None:
        self._frame_ms = frame_ms
        self._fec = fec
        self._bitrate = bitrate
        self._toc = -1  # the TOC octet of the last good packet (its config says the duration)
        super().__init__(frame_ms)

    def _open_encoder(self) -> av.AudioCodecContext:
        ctx = _context(self._av_name, "w", self.rate)
        ctx.bit_rate = self._bitrate
        # complexity 5 halves the encoder's cost against the default 10 for speech at 32 kbit/s
        ctx.options = {
            "application": "voip",
            "frame_duration": str(self._frame_ms),
            "compression_level": "5",
            "fec": "1" if self._fec else "0",
            "packet_loss": "10" if self._fec else "0",
        }
        ctx.open()
        return ctx

    def decode(self, payload: bytes) -> Pcm:
        """One RTP payload (b"": lost) to one frame of 48 kHz samples. A lost packet is
        concealed by libopus: a packet of only its TOC octet (code 0, no frame data) is what
        libopus decodes as lost (RFC 6716 §3.2.1, a zero-length frame), so its PLC runs."""
        if not payload:
            if self._toc < 0:
                return self._silence
            payload = bytes((self._toc & 0xFC,))
        else:
            self._toc = payload[0]
        try:
            return self._decode_packet(payload)
        except av.FFmpegError:
            return self._silence


def codec_for(name: str, frame_ms: int, *, fec: bool = False) -> WidebandCodec | None:
    """The codec object for an RTP codec name, or None for G.711 (which the bridge passes on)."""
    if name == "g722":
        return G722Codec(frame_ms)
    if name == "opus":
        return OpusCodec(frame_ms, fec=fec)
    return None
