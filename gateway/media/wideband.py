"""The wideband RTP codecs, G.722 and Opus, on PyAV: one streaming encoder and decoder per call.

Why here and not in telcodecs: telcodecs is a sans-I/O core whose only dependency is numpy, and
the cores may not import `av` (tests/foundation/test_pure_cores.py: PyAV is the aiortc stack's
native library and loads Python logging). These objects are pure computation all the same; the
SIP leg holds one per call and converts between RTP payloads and int16 frames.

* G.722 (RFC 3551 §4.5.2): 16 kHz audio at 64 kbit/s, one byte per two samples, while the RTP
  clock (and the SDP rate) is 8000: a 20 ms frame is 320 samples, 160 bytes, 160 RTP ticks.
* Opus (RFC 7587): a 48 kHz RTP clock, mono here (a stereo sender is downmixed by the decoder).

`decode(b"")` means "this frame was lost": G.722 repeats the last frame with fading (as the
G.711 jitter buffer does). For Opus, `decode(b"", next_payload)` rebuilds the lost frame from
the in-band FEC the next packet carries when it has arrived (RFC 6716 §2.1.7, libopus'
`decode_fec`), else runs libopus' packet-loss concealment. PyAV's libopus decoder has no
`decode_fec` switch, so Opus is decoded by calling the libopus that PyAV ships (`av.libs`, else
the system's) through ctypes: `opus_decoder_create`, `opus_decode`, `opus_decoder_destroy`.
Our encoder (PyAV) adds FEC when the peer's fmtp asks for it (`useinbandfec=1`, RFC 7587 §7).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from typing import Final, Literal, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame

__all__ = ["WIDEBAND_RATES", "G722Codec", "OpusCodec", "WidebandCodec", "codec_for", "wants_fec"]

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
    def decode(self, payload: bytes, next_payload: bytes | None = None) -> Pcm: ...


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
        self._open_decoder()

    _av_name = ""

    def _open_encoder(self) -> av.AudioCodecContext:
        ctx = _context(self._av_name, "w", self.rate)
        ctx.open()
        return ctx

    def _open_decoder(self) -> None:
        self._decoder = _context(self._av_name, "r", self.rate)
        self._decoder.open()

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

    def decode(self, payload: bytes, next_payload: bytes | None = None) -> Pcm:
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
        self.fec_frames = 0  # lost frames rebuilt from the next packet's FEC
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

    def _open_decoder(self) -> None:
        self._libopus = _libopus()
        error = ctypes.c_int(0)
        handle = self._libopus.opus_decoder_create(self.rate, 1, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise OSError(f"opus_decoder_create failed ({error.value})")
        self._handle: int | None = handle
        self._out: Pcm = np.zeros(self.frame_samples * 6, dtype=np.int16)  # up to 120 ms
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))

    def decode(self, payload: bytes, next_payload: bytes | None = None) -> Pcm:
        """One RTP payload to one frame of 48 kHz samples. A lost frame (b""): rebuilt from the
        FEC in `next_payload` when there is one (`decode_fec`, RFC 6716 §2.1.7), else libopus'
        PLC; a packet libopus refuses is concealed the same way."""
        n = self.frame_samples
        if payload:
            got = self._opus_decode(payload, self._out.size, 0)
            if got > 0:
                return self._frame(got)
        if next_payload:  # decode_fec asks for exactly the lost frame's duration
            got = self._opus_decode(next_payload, n, 1)
            if got > 0:
                self.fec_frames += 1
                return self._frame(got)
        got = self._opus_decode(None, n, 0)  # PLC (RFC 6716 §4.4)
        return self._frame(got) if got > 0 else self._silence

    def _opus_decode(self, data: bytes | None, frame_size: int, fec: int) -> int:
        if self._handle is None:
            return -1
        length = len(data) if data else 0
        return int(
            self._libopus.opus_decode(self._handle, data, length, self._out_ptr, frame_size, fec)
        )

    def _frame(self, got: int) -> Pcm:
        """The decoder's `got` samples as one frame (a sender with another packet time: one
        frame per tick regardless, trimmed or padded)."""
        n = self.frame_samples
        if got >= n:
            return self._out[:n].copy()
        return np.concatenate((self._out[:got], self._silence[got:]))

    def close(self) -> None:
        """Free the libopus decoder (also done when the object is collected)."""
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._libopus.opus_decoder_destroy(handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _libopus() -> ctypes.CDLL:
    """libopus as PyAV ships it (av.libs), else the system's; its functions typed once."""
    libs = os.path.join(os.path.dirname(os.path.abspath(av.__file__)), os.pardir, "av.libs")
    bundled = sorted(glob.glob(os.path.join(libs, "libopus*")))
    path = bundled[0] if bundled else ctypes.util.find_library("opus")
    if not path:
        raise OSError("libopus not found (neither PyAV's av.libs nor the system's)")
    lib = ctypes.CDLL(path)
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_destroy.restype = None
    return lib


def wants_fec(fmtp: str | None) -> bool:
    """Whether an Opus fmtp asks for in-band FEC (`useinbandfec=1`, RFC 7587 §7: the receiver
    that says so can use it, so its sender should add it)."""
    for param in (fmtp or "").split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "useinbandfec":
            return value.strip() == "1"
    return False


def codec_for(name: str, frame_ms: int, *, fec: bool = False) -> WidebandCodec | None:
    """The codec object for an RTP codec name, or None for G.711 (which the bridge passes on)."""
    if name == "g722":
        return G722Codec(frame_ms)
    if name == "opus":
        return OpusCodec(frame_ms, fec=fec)
    return None
