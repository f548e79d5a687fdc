"""Helpers for the RTP tests: vectors, a tiny pcap reader, a lossy link, audio checks."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rtp"
SIPP_SHARE = Path("/usr/share/sip-tester")


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def invalid_vectors(parser: str) -> list[tuple[str, str]]:
    """(file, expected `RtpParseError.reason`) of the `invalid_*.bin` vectors for `parser`
    ("rtp" or "rtcp"), from `invalid_reasons.txt` (written by make_vectors.py)."""
    rows = [line.split("\t") for line in (VECTORS / "invalid_reasons.txt").read_text().splitlines()]
    return [(name, reason) for name, kind, reason, _why in rows if kind == parser]


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


class LossyLink:
    """A seeded in-memory network (aiortc's DummyConnection idea): loss, jitter, duplicates.

    `send(data, now)` schedules delivery; `deliver_until(now)` returns what has arrived, in
    arrival order, so reordering follows from the jitter.
    """

    def __init__(
        self,
        seed: int,
        loss: float = 0.0,
        jitter: float = 0.0,
        duplicate: float = 0.0,
        base_delay: float = 0.01,
        drop: set[int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss, self.jitter, self.duplicate = loss, jitter, duplicate
        self.base_delay = base_delay
        self.drop = drop or set()  # indices of packets to lose deterministically
        self.sent = 0
        self.lost = 0
        self._queue: list[tuple[float, int, bytes]] = []
        self._n = 0

    def send(self, data: bytes, now: float) -> None:
        index = self.sent
        self.sent += 1
        if index in self.drop or self.rng.random() < self.loss:
            self.lost += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.base_delay + self.rng.uniform(0, self.jitter)
            self._queue.append((now + delay, self._n, data))
            self._n += 1

    def deliver_until(self, now: float) -> list[tuple[float, bytes]]:
        self._queue.sort()
        ready = [item for item in self._queue if item[0] <= now]
        self._queue = self._queue[len(ready) :]
        return [(t, d) for t, _, d in ready]


def sine(
    freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0
) -> NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def best_lag(
    reference: NDArray[np.float64], signal: NDArray[np.float64], max_lag: int
) -> tuple[int, float]:
    """The lag of `signal` against `reference` with the highest normalised correlation."""
    best = (0, -1.0)
    n = len(reference)
    for lag in range(max_lag + 1):
        seg = signal[lag : lag + n]
        if len(seg) < n:
            break
        denom = float(np.linalg.norm(seg) * np.linalg.norm(reference)) or 1.0
        corr = float(np.dot(seg, reference)) / denom
        if corr > best[1]:
            best = (lag, corr)
    return best
