"""Regenerate the RTP/RTCP vectors in this directory (run once; the .bin files are committed).

Hand-packed with struct from the RFC 3550/4733 layouts, independently of gateway.rtp, plus real
packets cut from sipp's bundled captures (/usr/share/sip-tester, package sip-tester).

`invalid_*.bin` are datagrams a receiver must refuse; `invalid_reasons.txt` (written here too)
names, per file, the parser (rtp or rtcp), the `RtpParseError.reason` expected and why.
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
    invalid = invalid_vectors(g711a[0], vectors["rtcp_sr_sdes.bin"])
    for name, (data, _, _, _) in invalid.items():
        vectors[name] = data
    for name, data in vectors.items():
        (HERE / name).write_bytes(data)
        print(name, len(data), file=sys.stderr)
    lines = [
        f"{name}\t{parser}\t{reason}\t{why}" for name, (_, parser, reason, why) in invalid.items()
    ]
    (HERE / "invalid_reasons.txt").write_text("\n".join(lines) + "\n")


def invalid_vectors(rtp: bytes, sr_sdes: bytes) -> dict[str, tuple[bytes, str, str, str]]:
    """name -> (datagram, parser, reason, why): what RFC 3550 §5.1, §5.3.1, §6.1 and A.1/A.2 refuse.

    `rtp` is a real PCMA packet (V=2, no CSRC/X/P), `sr_sdes` a valid SR + SDES compound."""
    fixed = rtp[:12]
    payload = rtp[12:]
    sr_len = 4 + 4 * struct.unpack_from("!H", sr_sdes, 2)[0]
    sr, sdes = sr_sdes[:sr_len], sr_sdes[sr_len:]
    rr0 = struct.pack("!BBHI", 0x80, 201, 1, 0x05060708)  # RR, no blocks
    stun = bytes.fromhex("000100002112a442") + bytes(12)  # ICE/STUN Binding Request (RFC 8489)
    out = {
        # --- RTP (RFC 3550 §5.1 fixed header, A.1 validity checks)
        "invalid_rtp_empty.bin": (b"", "rtp", "short", "an empty datagram"),
        "invalid_rtp_truncated_header.bin": (rtp[:11], "rtp", "short", "11 of 12 header bytes"),
        "invalid_rtp_version_1.bin": (
            bytes((0x40 | (rtp[0] & 0x3F),)) + rtp[1:],
            "rtp",
            "version",
            "version 1 (RFC 1889's draft)",
        ),
        "invalid_rtp_stun_on_rtp_port.bin": (stun, "rtp", "version", "STUN: version bits 0"),
        "invalid_rtp_csrc_beyond_length.bin": (
            bytes((0x80 | 15,)) + rtp[1:12] + struct.pack("!II", 1, 2),
            "rtp",
            "csrc_overrun",
            "CC=15, room for 2 CSRCs",
        ),
        "invalid_rtp_extension_header_missing.bin": (
            bytes((0x90,)) + fixed[1:] + b"\xbe\xde",
            "rtp",
            "extension_overrun",
            "X=1, 2 of the 4 extension header bytes",
        ),
        "invalid_rtp_extension_beyond_length.bin": (
            bytes((0x90,)) + fixed[1:] + struct.pack("!HH", 0xBEDE, 0xFFFF) + payload,
            "rtp",
            "extension_overrun",
            "extension of 65535 words in a 256-byte packet",
        ),
        "invalid_rtp_padding_zero.bin": (
            bytes((0xA0,)) + fixed[1:] + payload[:-1] + b"\x00",
            "rtp",
            "padding",
            "P=1, padding count 0",
        ),
        "invalid_rtp_padding_beyond_payload.bin": (
            bytes((0xA0,)) + fixed[1:] + payload[:19] + bytes((200,)),
            "rtp",
            "padding",
            "P=1, 200 padding bytes in a 20-byte payload",
        ),
        # --- RTCP (RFC 3550 §6.1 compound packets, A.2 validity checks)
        "invalid_rtcp_short.bin": (sr[:3], "rtcp", "rtcp_short", "3 bytes"),
        "invalid_rtcp_version_1.bin": (
            bytes((0x40 | (sr[0] & 0x3F),)) + sr[1:] + sdes,
            "rtcp",
            "rtcp_version",
            "SR with version 1",
        ),
        "invalid_rtcp_rtp_on_rtcp_port.bin": (rtp, "rtcp", "rtcp_type", "an RTP packet (PT 8)"),
        "invalid_rtcp_length_beyond_datagram.bin": (
            sr[:2] + struct.pack("!H", 40) + sr[4:],
            "rtcp",
            "rtcp_overrun",
            "SR length 40 words in a 13-word datagram",
        ),
        "invalid_rtcp_length_leaves_trailing_bytes.bin": (
            sr + sdes + b"\x81\xca",
            "rtcp",
            "rtcp_short",
            "lengths sum to 2 bytes less than the datagram",
        ),
        "invalid_rtcp_sr_without_sender_info.bin": (
            struct.pack("!BBH", 0x80, 200, 1) + sr[4:8],
            "rtcp",
            "rtcp_short",
            "SR of one word: no sender info",
        ),
        "invalid_rtcp_rr_blocks_beyond_length.bin": (
            struct.pack("!BBH", 0x82, 201, 7) + sr[4:8] + sr[28:52],
            "rtcp",
            "rtcp_overrun",
            "RR with RC=2, room for 1 block",
        ),
        "invalid_rtcp_first_not_a_report.bin": (
            sdes + rr0,
            "rtcp",
            "rtcp_first",
            "compound starting with SDES, not SR/RR (section 6.1)",
        ),
        "invalid_rtcp_sdes_item_beyond_length.bin": (
            rr0 + struct.pack("!BBHI", 0x81, 202, 2, 0x05060708) + b"\x01\x20ab",
            "rtcp",
            "rtcp_overrun",
            "CNAME of 32 bytes in 2",
        ),
        "invalid_rtcp_sdes_unterminated.bin": (
            rr0 + struct.pack("!BBHI", 0x81, 202, 2, 0x05060708) + b"\x01\x02ab",
            "rtcp",
            "rtcp_overrun",
            "SDES item list without its null terminator",
        ),
        "invalid_rtcp_bye_ssrcs_beyond_length.bin": (
            rr0 + struct.pack("!BBHI", 0x83, 203, 1, 0x05060708),
            "rtcp",
            "rtcp_overrun",
            "BYE with SC=3, room for 1 SSRC",
        ),
        "invalid_rtcp_bye_reason_beyond_length.bin": (
            rr0 + struct.pack("!BBHI", 0x81, 203, 2, 0x05060708) + b"\x10bye",
            "rtcp",
            "rtcp_overrun",
            "BYE reason of 16 bytes in 3",
        ),
        "invalid_rtcp_padding_zero.bin": (
            struct.pack("!BBHI", 0xA0, 201, 2, 0x05060708) + bytes(4),
            "rtcp",
            "rtcp_padding",
            "P=1, padding count 0",
        ),
        "invalid_rtcp_padding_beyond_packet.bin": (
            struct.pack("!BBHI", 0xA0, 201, 2, 0x05060708) + b"\x00\x00\x00\x10",
            "rtcp",
            "rtcp_padding",
            "P=1, padding count 16 in an 8-byte body",
        ),
    }
    return out


if __name__ == "__main__":
    main()
