"""A raw UDP sender that sprays an RTP port range, as RTP scanners do, and counts what comes back.

    python tests/peers/rtp_spray.py BIND_IP TARGET_IP LO HI

Every 40 ms it sends each port in LO..HI one packet: to even ports a well-formed PCMU RTP packet
(one SSRC per port, sequence numbers and timestamps running on per port, so a target that learns
sources from packets in sequence would learn it), to odd ports an RTCP receiver report. It reads
whatever the target sends back to its socket. On SIGTERM it prints one JSON line: packets sent,
datagrams received, and the sources they came from. Standard library only.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
import time


def main() -> None:
    bind_ip, target_ip, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind_ip, 0))
    sock.setblocking(False)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    tone = bytes((0x10 if k % 8 < 4 else 0x90) for k in range(160))  # loud, if anyone plays it
    sent = received = 0
    sources: set[str] = set()
    n = 0
    next_sweep = time.monotonic()
    print(json.dumps({"bound": sock.getsockname()}), flush=True)
    while not stop:
        for port in range(lo, hi + 1):
            if port % 2 == 0:  # RTP: V=2, PT 0, seq, timestamp, SSRC of its own per port
                data = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, 160 * n, 0xBAD00000 | port) + tone
            else:  # RTCP RR (RFC 3550 §6.4.2), no report blocks
                data = struct.pack("!BBHI", 0x80, 201, 1, 0xBAD00000 | port)
            try:
                sock.sendto(data, (target_ip, port))
                sent += 1
            except OSError:
                pass
        n += 1
        while True:
            try:
                _data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error reported on the socket
                continue
            received += 1
            sources.add(f"{addr[0]}:{addr[1]}")
        next_sweep += 0.04
        time.sleep(max(0.0, next_sweep - time.monotonic()))
    print(json.dumps({"sent": sent, "received": received, "sources": sorted(sources)}), flush=True)


if __name__ == "__main__":
    main()
