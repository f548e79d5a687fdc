"""Captures read without a capture library: the classic pcap format (Ethernet, IPv4, UDP), and
the captures sipp ships (`/usr/share/sip-tester`, Debian package sip-tester)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SIPP_SHARE = Path("/usr/share/sip-tester")


def sipp_capture(name: str) -> Path:
    """A capture bundled with sipp; fails (never skips) naming the Debian package."""
    path = SIPP_SHARE / name
    assert path.exists(), f"{path} missing: install the Debian package sip-tester"
    return path


@dataclass(frozen=True)
class UdpPacket:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def read_pcap_udp(path: Path) -> list[UdpPacket]:
    """UDP datagrams of a classic pcap file (Ethernet, IPv4): global header, per-packet headers."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == 1, f"linktype {linktype}: only Ethernet"
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        ip = 14
        if ethertype == 0x8100:  # 802.1Q
            ethertype = struct.unpack_from("!H", frame, 16)[0]
            ip = 18
        if ethertype != 0x0800 or frame[ip + 9] != 17:
            continue
        ihl = (frame[ip] & 0x0F) * 4
        src_ip = ".".join(str(b) for b in frame[ip + 12 : ip + 16])
        dst_ip = ".".join(str(b) for b in frame[ip + 16 : ip + 20])
        udp = ip + ihl
        sport, dport, length = struct.unpack_from("!HHH", frame, udp)
        payload = frame[udp + 8 : udp + length]
        t = sec + frac / (1e9 if nanos else 1e6)
        out.append(UdpPacket(t, (src_ip, sport), (dst_ip, dport), payload))
    return out


def pcap_rtp_payloads(path: Path) -> list[tuple[int, int, bytes]]:
    """(payload type, sequence number, payload) of every RTP packet in a capture of RTP only
    (the ones sipp ships)."""
    out: list[tuple[int, int, bytes]] = []
    for packet in read_pcap_udp(path):
        rtp = packet.payload
        cc = rtp[0] & 0x0F
        (seq,) = struct.unpack("!H", rtp[2:4])
        out.append((rtp[1] & 0x7F, seq, rtp[12 + 4 * cc :]))
    return out
