"""Captures read without a capture library: the classic pcap format (Ethernet, IPv4, UDP), and
the captures sipp ships (`/usr/share/sip-tester`, Debian package sip-tester)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import require_binary

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


def write_rtp_pcap(path: Path, audio: bytes, *, ptime_ms: int, payload_type: int = 8) -> Path:
    """A classic pcap (Ethernet, IPv4, UDP) of `audio` (G.711, 8 kHz) as RTP packets of
    `ptime_ms`, spaced `ptime_ms` apart: what sipp's `play_pcap_audio` replays (it rewrites
    addresses and ports, and keeps the capture's timing, sizes and RTP headers)."""
    samples = 8 * ptime_ms
    ssrc = 0x5EED0000 | ptime_ms
    datagrams = []
    for n, at in enumerate(range(0, len(audio) - samples + 1, samples)):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if n == 0 else 0), n, at, ssrc)
        datagrams.append((n * ptime_ms / 1000, rtp + audio[at : at + samples]))
    return write_udp_pcap(path, datagrams)


def write_udp_pcap(path: Path, datagrams: list[tuple[float, bytes]]) -> Path:
    """A classic pcap (Ethernet, IPv4, UDP 40000 → 6000 on loopback) of `datagrams`, each
    (seconds from the start, UDP payload): e.g. RTP with CN packets and gaps for sipp's
    `play_pcap_audio`, which keeps the capture's timing."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for n, (at, payload) in enumerate(datagrams):
        udp = struct.pack("!HHHH", 40000, 6000, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            n & 0xFFFF,
            0,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        t_us = round(at * 1_000_000)
        out += struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


class LoopbackCapture:
    """dumpcap (Debian package wireshark-common, which tshark brings) on `lo` with a capture filter,
    by PID, writing a classic pcap: `with LoopbackCapture(path, "udp dst port 6000"): ...`,
    then `read_pcap_udp(path)`. Waits until the capture runs; stops it with SIGINT (it
    flushes) on exit."""

    def __init__(self, path: Path, capture_filter: str) -> None:
        self.path = path
        self.capture_filter = capture_filter
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoopbackCapture:
        binary = require_binary("dumpcap", "wireshark-common")
        log = self.path.with_suffix(".log")
        self.proc = subprocess.Popen(
            [binary, "-q", "-i", "lo", "-f", self.capture_filter, "-P", "-w", str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # dumpcap writes the file header once it captures
            if self.path.exists() and self.path.stat().st_size >= 24:
                return self
            assert self.proc.poll() is None, log.read_text(errors="replace")
            time.sleep(0.05)
        raise AssertionError(f"dumpcap did not start: {log.read_text(errors='replace')}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
