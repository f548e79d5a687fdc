"""Regenerate the RTP/RTCP vectors in this directory (run once; the .bin files are committed).

Hand-packed with struct from the RFC 3550/4733 layouts, independently of gateway.rtp, plus real
packets cut from sipp's bundled captures (/usr/share/sip-tester, package sip-tester).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).parent


def udp_payloads(pcap: Path) -> list[bytes]:
    data = pcap.read_bytes()
    pos, out = 24, []
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ihl = (frame[14] & 0x0F) * 4
        out.append(frame[14 + ihl + 8 :])
    return out


def main() -> None:
    share = Path("/usr/share/sip-tester")
    vectors: dict[str, bytes] = {}
    g711a = udp_payloads(share / "g711a.pcap")
    vectors["rtp_pcma_first.bin"] = g711a[0]  # marker set, PT 8, 240 bytes of A-law
    vectors["rtp_pcma_second.bin"] = g711a[1]
    dtmf = udp_payloads(share / "dtmf_2833_1.pcap")
    vectors["rtp_event_start.bin"] = dtmf[0]  # event 1, marker, duration 0
    vectors["rtp_event_end.bin"] = dtmf[-1]  # event 1, E bit, duration 2240
    # V=2 P=1 X=1 CC=2, M=1 PT=0, seq 65535, ts 0xFFFFFFF0, ssrc, 2 CSRCs,
    # extension profile 0xBEDE with 1 word, 20 bytes payload, 4 bytes padding
    vectors["rtp_csrc_ext_padding.bin"] = (
        struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 0, 65535, 0xFFFFFFF0, 0x11223344)
        + struct.pack("!II", 0xAAAAAAAA, 0xBBBBBBBB)
        + struct.pack("!HH", 0xBEDE, 1)
        + bytes((0x10, 0x42, 0, 0))
        + bytes(range(20))
        + bytes((0, 0, 0, 4))
    )
    vectors["rtp_ext_only.bin"] = (
        struct.pack("!BBHII", 0x90, 8, 1234, 160, 0xDEADBEEF)
        + struct.pack("!HH", 0x1000, 2)
        + bytes(range(8))
        + b"\xd5" * 160
    )
    # RTCP: SR with one report block, then SDES CNAME
    sr_body = struct.pack("!IIIIII", 0x01020304, 0xE8A3C5D0, 0x80000000, 123456, 250, 40000)
    block = struct.pack(
        "!IBBHIIII", 0x0A0B0C0D, 26, 0x00, 0x0011, 0x0001FFFF, 37, 0x5D00C000, 0x00024000
    )
    sr = struct.pack("!BBH", 0x81, 200, (len(sr_body) + len(block)) // 4) + sr_body + block
    cname = b"gw@192.0.2.1"
    chunk = struct.pack("!I", 0x01020304) + bytes((1, len(cname))) + cname
    chunk += bytes(4 - len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    vectors["rtcp_sr_sdes.bin"] = sr + sdes
    # RR with two blocks (the second with cumulative lost -3, i.e. duplicates), SDES, BYE+reason
    b1 = struct.pack("!IBBHIIII", 0x0A0B0C0D, 0, 0, 0, 0x00020010, 80, 0, 0)
    b2 = struct.pack("!IBBHIIII", 0x0E0E0E0E, 255, 0xFF, 0xFFFD, 70000, 1, 0x12345678, 65536)
    rr = struct.pack("!BBH", 0x82, 201, (4 + 48) // 4) + struct.pack("!I", 0x05060708) + b1 + b2
    cname2 = b"caller"
    chunk2 = struct.pack("!I", 0x05060708) + bytes((1, len(cname2))) + cname2
    chunk2 += bytes(4 - len(chunk2) % 4)
    sdes2 = struct.pack("!BBH", 0x81, 202, len(chunk2) // 4) + chunk2
    reason = b"hangup"
    bye_body = struct.pack("!I", 0x05060708) + bytes((len(reason),)) + reason
    bye_body += bytes(-len(bye_body) % 4)
    bye = struct.pack("!BBH", 0x81, 203, len(bye_body) // 4) + bye_body
    vectors["rtcp_rr_sdes_bye.bin"] = rr + sdes2 + bye
    # RR without blocks, then an APP packet (PT 204) that must round-trip untouched
    rr0 = struct.pack("!BBHI", 0x80, 201, 1, 0x05060708)
    app = struct.pack("!BBHI4s", 0x80 | 3, 204, 3, 0x05060708, b"TEST") + b"\x00\x01\x02\x03"
    vectors["rtcp_rr_app.bin"] = rr0 + app
    for name, data in vectors.items():
        (HERE / name).write_bytes(data)
        print(name, len(data), file=sys.stderr)


if __name__ == "__main__":
    main()
