"""RTP data packets (RFC 3550 §5.1): a dataclass for the general case, fast paths for the hot one.

`RtpPacket.parse()` / `serialize()` handle CSRC lists, the header extension (§5.3.1) and
padding. The media path does not build objects per packet: incoming datagrams go through
`parse_header()`, which returns a plain tuple, and outgoing ones through `RtpHeaderWriter`,
which packs a 12-byte header in front of the payload (measured fastest on CPython: one
`struct.pack` plus one concatenation, about 0.1 µs, against 0.2 µs for `pack_into` a reused
bytearray and a payload copy). `RtpSession`'s per-packet fast paths use `RTP_FIXED_HEADER`,
the same struct, directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from gateway.errors import RtpParseError

__all__ = [
    "RTP_FIXED_HEADER",
    "RTP_HEADER_SIZE",
    "RtpHeaderWriter",
    "RtpPacket",
    "is_rtcp",
    "parse_header",
]

RTP_HEADER_SIZE: Final = 12
_HEADER: Final = struct.Struct("!BBHII")
#: The 12-byte fixed header of a packet without CSRCs (§5.1) as (first two octets as one word,
#: sequence number, timestamp, SSRC), for the per-packet paths.
RTP_FIXED_HEADER: Final = struct.Struct("!HHII")
_pack_fixed_header: Final = RTP_FIXED_HEADER.pack
_EXT_HEADER: Final = struct.Struct("!HH")


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet multiplexed on the RTP port (RFC 5761 §4: PT 192-223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet. `padding_size` counts the padding octets including the count octet;
    padding is serialised as zeros followed by the count."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise RtpParseError with a reason on anything malformed."""
        (payload_type, marker, seq, timestamp, ssrc, start, end, cc, x, pad) = _parse(data)
        csrc = list(struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)) if cc else []
        profile: int | None = None
        ext = b""
        if x:
            pos = RTP_HEADER_SIZE + 4 * cc
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            ext = bytes(data[pos + 4 : pos + 4 + 4 * words])
        return cls(
            payload_type=payload_type,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[start:end]),
            marker=marker,
            csrc=csrc,
            extension_profile=profile,
            extension=ext,
            padding_size=pad,
        )

    def serialize(self) -> bytes:
        """The wire form. Raises ValueError on fields that do not fit their bit widths."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is not 0-127")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        if len(self.extension) % 4 or len(self.extension) > 4 * 0xFFFF:
            raise ValueError("extension length must be a multiple of 4 octets")
        if not 0 <= self.padding_size <= 255:
            raise ValueError("padding_size must be 0-255")
        x = self.extension_profile is not None
        b0 = 0x80 | (0x20 if self.padding_size else 0) | (0x10 if x else 0) | len(self.csrc)
        parts = [
            _HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(_EXT_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)

    def __bytes__(self) -> bytes:
        return self.serialize()


def _parse(data: bytes) -> tuple[int, bool, int, int, int, int, int, int, bool, int]:
    """(pt, marker, seq, ts, ssrc, payload start, payload end, cc, x, padding size)."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpParseError("short", f"{size} bytes")
    b0, b1, seq, timestamp, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpParseError("version", f"version {b0 >> 6}")
    cc = b0 & 0x0F
    start = RTP_HEADER_SIZE + 4 * cc
    if start > size:
        raise RtpParseError("csrc_overrun", f"{cc} CSRCs in {size} bytes")
    x = bool(b0 & 0x10)
    if x:
        if start + 4 > size:
            raise RtpParseError("extension_overrun", "no extension header")
        words = (data[start + 2] << 8) | data[start + 3]
        start += 4 + 4 * words
        if start > size:
            raise RtpParseError("extension_overrun", f"{words} words in {size} bytes")
    end = size
    pad = 0
    if b0 & 0x20:
        pad = data[size - 1]
        if pad == 0 or start + pad > size:
            raise RtpParseError("padding", f"padding count {pad}")
        end = size - pad
    return b1 & 0x7F, bool(b1 & 0x80), seq, timestamp, ssrc, start, end, cc, x, pad


def parse_header(data: bytes) -> tuple[int, bool, int, int, int, bytes]:
    """Fast parse for the receive path: (payload_type, marker, seq, timestamp, ssrc, payload).

    Same checks and errors as `RtpPacket.parse`, no object beyond the tuple and payload slice.
    """
    if len(data) > RTP_HEADER_SIZE and data[0] == 0x80:  # the common case: no CSRC, X or P
        half, seq, timestamp, ssrc = RTP_FIXED_HEADER.unpack_from(data)
        return half & 0x7F, bool(half & 0x80), seq, timestamp, ssrc, data[RTP_HEADER_SIZE:]
    payload_type, marker, seq, timestamp, ssrc, start, end, _, _, _ = _parse(data)
    return payload_type, marker, seq, timestamp, ssrc, data[start:end]


class RtpHeaderWriter:
    """Builds outgoing datagrams for one SSRC: `build(pt, marker, seq, ts, payload) -> bytes`."""

    __slots__ = ("ssrc",)

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF

    def build(
        self, payload_type: int, marker: bool, seq: int, timestamp: int, payload: bytes
    ) -> bytes:
        return (
            _pack_fixed_header(
                (0x8080 if marker else 0x8000) | payload_type,
                seq & 0xFFFF,
                timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
            + payload
        )
