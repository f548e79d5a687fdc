"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE and compound packets, plus the RTT arithmetic.

Every packet type is a dataclass with `parse()` (one packet) and `serialize()`/`__bytes__`.
`parse_compound()` splits a datagram into its packets (§6.1); types we do not interpret (APP,
feedback, XR) come back as `RtcpUnknown` so they round-trip byte for byte. Malformed input raises
`RtpParseError` with a reason, and so does a compound that does not start with SR or RR (§6.1,
A.2). RTCP padding (the P bit) is accepted and stripped; it is not re-emitted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from gateway.errors import RtpParseError

__all__ = [
    "NTP_EPOCH_OFFSET",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpReportBlock",
    "RtcpSenderReport",
    "RtcpSourceDescription",
    "RtcpUnknown",
    "SdesChunk",
    "compact_ntp",
    "ntp_timestamp",
    "parse_compound",
    "round_trip_time",
    "serialize_compound",
]

PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203
SDES_CNAME: Final = 1
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_EPOCH_OFFSET: Final = 2_208_988_800

_COMMON: Final = struct.Struct("!BBH")
_BLOCK: Final = struct.Struct(
    "!IBBHIIII"
)  # ssrc, fraction, lost(24 = 8+16), seq, jitter, lsr, dlsr
_SR_INFO: Final = struct.Struct("!IIIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packets, octets


def ntp_timestamp(unix_time: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def compact_ntp(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 fixed point): the LSR/DLSR unit (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(arrival_compact: int, lsr: int, dlsr: int) -> float | None:
    """RTT in seconds from an RR block's LSR and DLSR (§6.4.1, Figure 2), or None without an SR.

    `arrival_compact` is `compact_ntp` of the time the report arrived.
    """
    if lsr == 0:
        return None
    rtt = (arrival_compact - lsr - dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:  # negative: clocks or a bogus report
        return 0.0
    return rtt / 65536.0


@dataclass(slots=True, frozen=True)
class RtcpReportBlock:
    """One reception report block (§6.4.1). `cumulative_lost` is signed 24-bit."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes, pos: int = 0) -> RtcpReportBlock:
        ssrc, fraction, lost_hi, lost_lo, seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = (lost_hi << 16) | lost_lo
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, fraction, lost, seq, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost & 0xFF,
            lost >> 16,
            lost & 0xFFFF,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    def __bytes__(self) -> bytes:
        return self.serialize()


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP body must be a multiple of 4 octets")
    if count > 31:
        raise ValueError("at most 31 items per RTCP packet")
    return _COMMON.pack(0x80 | count, packet_type, body_len // 4)


def _blocks(data: bytes, pos: int, count: int, end: int) -> tuple[list[RtcpReportBlock], int]:
    if pos + 24 * count > end:
        raise RtpParseError("rtcp_overrun", f"{count} report blocks")
    blocks = [RtcpReportBlock.parse(data, pos + 24 * i) for i in range(count)]
    return blocks, pos + 24 * count


@dataclass(slots=True)
class RtcpSenderReport:
    """SR (PT 200): sender info plus reception report blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[RtcpReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = PT_SR

    @classmethod
    def parse_body(cls, count: int, data: bytes, pos: int, end: int) -> RtcpSenderReport:
        if pos + 24 > end:
            raise RtpParseError("rtcp_short", "SR sender info")
        ssrc, msw, lsw, rtp_ts, packets, octets = _SR_INFO.unpack_from(data, pos)
        reports, pos = _blocks(data, pos + 24, count, end)
        return cls(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, reports, bytes(data[pos:end]))

    def serialize(self) -> bytes:
        body = (
            _SR_INFO.pack(
                self.ssrc,
                (self.ntp_timestamp >> 32) & 0xFFFFFFFF,
                self.ntp_timestamp & 0xFFFFFFFF,
                self.rtp_timestamp & 0xFFFFFFFF,
                self.packet_count & 0xFFFFFFFF,
                self.octet_count & 0xFFFFFFFF,
            )
            + b"".join(r.serialize() for r in self.reports)
            + self.extension
        )
        return _header(len(self.reports), PT_SR, len(body)) + body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass(slots=True)
class RtcpReceiverReport:
    """RR (PT 201): reception report blocks from a participant that did not send."""

    ssrc: int
    reports: list[RtcpReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = PT_RR

    @classmethod
    def parse_body(cls, count: int, data: bytes, pos: int, end: int) -> RtcpReceiverReport:
        if pos + 4 > end:
            raise RtpParseError("rtcp_short", "RR ssrc")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        reports, pos = _blocks(data, pos + 4, count, end)
        return cls(ssrc, reports, bytes(data[pos:end]))

    def serialize(self) -> bytes:
        body = (
            struct.pack("!I", self.ssrc)
            + b"".join(r.serialize() for r in self.reports)
            + self.extension
        )
        return _header(len(self.reports), PT_RR, len(body)) + body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass(slots=True, frozen=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its (item type, value) pairs, CNAME being type 1."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]

    @property
    def cname(self) -> bytes | None:
        return next((value for kind, value in self.items if kind == SDES_CNAME), None)


@dataclass(slots=True)
class RtcpSourceDescription:
    """SDES (PT 202, §6.5)."""

    chunks: list[SdesChunk] = field(default_factory=list)

    packet_type = PT_SDES

    @classmethod
    def parse_body(cls, count: int, data: bytes, pos: int, end: int) -> RtcpSourceDescription:
        chunks = []
        for _ in range(count):
            if pos + 4 > end:
                raise RtpParseError("rtcp_overrun", "SDES chunk")
            (ssrc,) = struct.unpack_from("!I", data, pos)
            pos += 4
            items = []
            while True:
                if pos >= end:
                    raise RtpParseError("rtcp_overrun", "SDES item list not terminated")
                kind = data[pos]
                if kind == 0:  # end of list, then pad to the next 32-bit boundary
                    pos = (pos + 4) & ~3
                    break
                if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                    raise RtpParseError("rtcp_overrun", "SDES item")
                length = data[pos + 1]
                items.append((kind, bytes(data[pos + 2 : pos + 2 + length])))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        if pos > end:
            raise RtpParseError("rtcp_overrun", "SDES padding")
        return cls(chunks)

    def serialize(self) -> bytes:
        parts = []
        for chunk in self.chunks:
            out = bytearray(struct.pack("!I", chunk.ssrc))
            for kind, value in chunk.items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise ValueError("SDES item type 1-255, value up to 255 octets")
                out += bytes((kind, len(value))) + value
            out += bytes(4 - len(out) % 4)  # the null terminator plus padding: 1-4 octets
            parts.append(bytes(out))
        body = b"".join(parts)
        return _header(len(self.chunks), PT_SDES, len(body)) + body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass(slots=True)
class RtcpBye:
    """BYE (PT 203, §6.6)."""

    ssrcs: list[int] = field(default_factory=list)
    reason: bytes = b""

    packet_type = PT_BYE

    @classmethod
    def parse_body(cls, count: int, data: bytes, pos: int, end: int) -> RtcpBye:
        if pos + 4 * count > end:
            raise RtpParseError("rtcp_overrun", f"BYE with {count} SSRCs")
        ssrcs = list(struct.unpack_from(f"!{count}I", data, pos))
        pos += 4 * count
        reason = b""
        if pos < end:
            length = data[pos]
            if pos + 1 + length > end:
                raise RtpParseError("rtcp_overrun", "BYE reason")
            reason = bytes(data[pos + 1 : pos + 1 + length])
        return cls(ssrcs, reason)

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            if len(self.reason) > 255:
                raise ValueError("BYE reason up to 255 octets")
            text = bytes((len(self.reason),)) + self.reason
            body += text + bytes(-len(text) % 4)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass(slots=True)
class RtcpUnknown:
    """An RTCP packet of a type we carry but do not interpret (APP, RTPFB, PSFB, XR...)."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpUnknown

_PARSERS: Final[dict[int, Callable[[int, bytes, int, int], RtcpPacket]]] = {
    PT_SR: RtcpSenderReport.parse_body,
    PT_RR: RtcpReceiverReport.parse_body,
    PT_SDES: RtcpSourceDescription.parse_body,
    PT_BYE: RtcpBye.parse_body,
}


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split and parse a compound RTCP datagram (§6.1). Raises RtpParseError with a reason."""
    packets: list[RtcpPacket] = []
    pos = 0
    size = len(data)
    if size < 4:
        raise RtpParseError("rtcp_short", f"{size} bytes")
    while pos < size:
        if pos + 4 > size:
            raise RtpParseError("rtcp_short", "trailing bytes")
        b0, packet_type, words = _COMMON.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtpParseError("rtcp_version", f"version {b0 >> 6}")
        if not 192 <= packet_type <= 223:
            raise RtpParseError("rtcp_type", f"packet type {packet_type}")
        if pos == 0 and packet_type not in (PT_SR, PT_RR):
            # §6.1: the first packet of a compound MUST be a report (A.2's validity check)
            raise RtpParseError("rtcp_first", f"compound starts with packet type {packet_type}")
        end = pos + 4 + 4 * words
        if end > size:
            raise RtpParseError("rtcp_overrun", f"length {words} words")
        body_end = end
        if b0 & 0x20:
            pad = data[end - 1]
            if pad == 0 or pos + 4 + pad > end:
                raise RtpParseError("rtcp_padding", f"padding count {pad}")
            body_end = end - pad
        count = b0 & 0x1F
        parser = _PARSERS.get(packet_type)
        if parser is None:
            packets.append(RtcpUnknown(packet_type, count, bytes(data[pos + 4 : body_end])))
        else:
            packets.append(parser(count, data, pos + 4, body_end))
        pos = end
    return packets


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram."""
    return b"".join(p.serialize() for p in packets)
