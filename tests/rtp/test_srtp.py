"""SDES key material (RFC 4568 a=crypto, vectors in tests/vectors/srtp/) and SrtpContext with
pylibsrtp as the far end; then two RtpSessions with SRTP to each other, in memory."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pylibsrtp import Policy, Session
from telcodecs import ulaw_decode, ulaw_encode

from gateway.rtp.rtcp import RtcpSenderReport, parse_compound
from gateway.rtp.session import RtpSession
from gateway.rtp.srtp import SUITES, CryptoAttribute, SrtpContext
from tests.support.audio import find_correlation, sine_wave

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "srtp"
A_ADDR = ("198.51.100.1", 20000)
B_ADDR = ("203.0.113.9", 30000)


def rows(name: str) -> list[list[str]]:
    lines = (VECTORS / name).read_text().splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("row", rows("crypto_valid.txt"), ids=lambda r: r[0][:40])
def test_crypto_vectors_parse_and_serialize_byte_for_byte(row: list[str]) -> None:
    text, tag, suite, key_length, lifetime, mki, params = row
    crypto = CryptoAttribute.parse(text)
    assert (crypto.tag, crypto.suite, len(crypto.key)) == (int(tag), suite, int(key_length))
    assert crypto.lifetime == (None if lifetime == "-" else lifetime)
    assert crypto.mki == (None if mki == "-" else tuple(int(x) for x in mki.split(":")))
    assert crypto.session_params == (() if params == "-" else tuple(params.split()))
    assert crypto.serialize() == text
    assert crypto.usable == (suite in SUITES)


@pytest.mark.parametrize("row", rows("crypto_invalid.txt"), ids=lambda r: r[1])
def test_malformed_crypto_lines_are_refused_without_the_key(row: list[str]) -> None:
    text, reason = row
    with pytest.raises(ValueError, match=reason) as info:
        CryptoAttribute.parse(text)
    for word in text.replace("|", " ").replace(":", " ").split():
        if len(word) > 20:
            assert word not in str(info.value)


@pytest.mark.parametrize("text", [r[0] for r in rows("crypto_unusable.txt")])
def test_well_formed_lines_we_cannot_honour_are_not_usable(text: str) -> None:
    assert not CryptoAttribute.parse(text).usable


@pytest.mark.parametrize("suite", list(SUITES))
def test_generated_keys_are_random_of_the_suite_length_and_never_in_repr(suite: str) -> None:
    a, b = CryptoAttribute.generate(1, suite), CryptoAttribute.generate(1, suite)
    assert a.key != b.key and len(a.key) == SUITES[suite].key_length and a.usable
    encoded = base64.b64encode(a.key).decode()
    assert encoded not in repr(a) and a.key.hex() not in repr(a)
    assert encoded in a.serialize()  # the SDP line itself carries it, nothing else


@given(
    tag=st.integers(0, 999_999_999),
    suite=st.sampled_from(list(SUITES)),
    lifetime=st.sampled_from([None, "2^20", "2^31", "1048576"]),
    mki=st.one_of(st.none(), st.tuples(st.integers(0, 2**32), st.integers(1, 128))),
)
def test_crypto_round_trip(
    tag: int, suite: str, lifetime: str | None, mki: tuple[int, int] | None
) -> None:
    key = bytes(range(SUITES[suite].key_length))
    crypto = CryptoAttribute(tag, suite, key, lifetime, mki)
    assert CryptoAttribute.parse(crypto.serialize()) == crypto


def test_suite_profiles_are_libsrtps() -> None:
    assert [s.profile for s in SUITES.values()] == [
        Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
        Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    ]


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def far_end(crypto: CryptoAttribute, direction: int) -> Session:
    """pylibsrtp on its own, as the other end of SRTP."""
    return Session(Policy(crypto.key, direction, srtp_profile=SUITES[crypto.suite].profile))


@pytest.mark.parametrize("suite", list(SUITES))
def test_context_against_plain_libsrtp_both_ways_with_replay_and_wrong_key(suite: str) -> None:
    ours, theirs = CryptoAttribute.generate(1, suite), CryptoAttribute.generate(1, suite)
    ctx = SrtpContext(ours, theirs)
    their_out = far_end(theirs, Policy.SSRC_ANY_OUTBOUND)
    their_in = far_end(ours, Policy.SSRC_ANY_INBOUND)
    sent = their_out.protect(rtp(7))
    assert len(sent) == 172 + SUITES[suite].tag_length and sent[12:] != rtp(7)[12:]
    assert ctx.unprotect(sent) == rtp(7)
    assert ctx.unprotect(sent) is None and ctx.failure == "srtp_replay"  # RFC 3711 §3.3.2
    tampered = bytearray(their_out.protect(rtp(8)))
    tampered[20] ^= 1
    assert ctx.unprotect(bytes(tampered)) is None and ctx.failure == "srtp_auth"
    stranger = far_end(CryptoAttribute.generate(1, suite), Policy.SSRC_ANY_OUTBOUND)
    assert ctx.unprotect(stranger.protect(rtp(9))) is None and ctx.failure == "srtp_auth"
    assert ctx.unprotect(rtp(10)) is None and ctx.failure == "srtp_auth"  # plain RTP
    assert their_in.unprotect(ctx.protect(rtp(3, 0x99))) == rtp(3, 0x99)
    report = RtcpSenderReport(ssrc=0x99, ntp_timestamp=1, rtp_timestamp=2, packet_count=3,
                              octet_count=4, reports=[]).serialize()  # fmt: skip
    assert their_in.unprotect_rtcp(ctx.protect_rtcp(report)) == report
    srtcp = their_out.protect_rtcp(report)
    assert ctx.unprotect_rtcp(srtcp) == report
    assert ctx.unprotect_rtcp(srtcp) is None and ctx.failure == "srtp_replay"


def test_far_end_mki_is_taken_out_before_libsrtp() -> None:
    ours = CryptoAttribute.generate(1, "AES_CM_128_HMAC_SHA1_80")
    key = CryptoAttribute.generate(1, "AES_CM_128_HMAC_SHA1_80").key
    theirs = CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", key, "2^20", (1, 4))
    ctx = SrtpContext(ours, theirs)
    plain = far_end(theirs, Policy.SSRC_ANY_OUTBOUND).protect(rtp(5))
    with_mki = plain[:-10] + b"\x00\x00\x00\x01" + plain[-10:]  # RFC 3711 §3.1: MKI, then tag
    assert ctx.unprotect(with_mki) == rtp(5)


def test_rekey_keeps_an_unchanged_key_and_tries_the_previous_remote_key() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    ours, old, new = (CryptoAttribute.generate(1, suite) for _ in range(3))
    ctx = SrtpContext(ours, old)
    old_out = far_end(old, Policy.SSRC_ANY_OUTBOUND)
    new_out = far_end(new, Policy.SSRC_ANY_OUTBOUND)
    their_in = far_end(ours, Policy.SSRC_ANY_INBOUND)
    assert their_in.unprotect(ctx.protect(rtp(1, 0x99))) == rtp(1, 0x99)
    in_flight = old_out.protect(rtp(2))
    ctx.rekey(ours.with_tag(2), new)
    assert their_in.unprotect(ctx.protect(rtp(2, 0x99))) == rtp(2, 0x99)  # our context kept
    assert ctx.unprotect(new_out.protect(rtp(3))) == rtp(3)
    assert ctx.unprotect(in_flight) == rtp(2)  # sent before the re-key, arrived after


# --- two RtpSessions with SRTP to each other


def keyed_pair(suite: str = "AES_CM_128_HMAC_SHA1_80") -> tuple[RtpSession, RtpSession]:
    a = RtpSession(now=0.0, remote_addr=B_ADDR, ssrc=0xA)
    b = RtpSession(now=0.0, remote_addr=A_ADDR, ssrc=0xB)
    key_a, key_b = CryptoAttribute.generate(1, suite), CryptoAttribute.generate(1, suite)
    a.set_srtp(key_a, key_b)
    b.set_srtp(key_b, key_a)
    return a, b


def carry(a: RtpSession, b: RtpSession, payload: bytes, start: float = 0.0) -> bytes:
    """A → B over SRTP, 20 ms at a time; what B plays."""
    out = []
    for k in range(len(payload) // 160 + 5):
        now = start + 0.02 * k
        datagram = a.packetize(payload[160 * k : 160 * (k + 1)] or None, now)
        assert datagram is not None and datagram[12:] not in payload  # encrypted on the wire
        b.receive_datagram(datagram, A_ADDR, now + 0.005)
        got = b.read_frame(now + 0.01)
        assert got is not None
        out.append(got)
    return b"".join(out)


def correlation(played: bytes, pcm: np.ndarray) -> float:
    """How well the middle half second of `pcm` is found in what was played."""
    return find_correlation(ulaw_decode(played), pcm[2000:6000])[1]


@pytest.mark.parametrize("suite", list(SUITES))
def test_pair_with_srtp_carries_audio_by_content(suite: str) -> None:
    a, b = keyed_pair(suite)
    pcm = sine_wave(440, 1.0) + sine_wave(1270, 1.0) // 2
    assert correlation(carry(a, b, ulaw_encode(pcm)), pcm) > 0.99
    assert b.stats.dropped["srtp_auth"] == b.stats.dropped["srtp_replay"] == 0


def test_replayed_and_wrongly_keyed_packets_are_dropped_and_counted_never_raised() -> None:
    a, b = keyed_pair()
    first = a.packetize(b"\xff" * 160, 0.0)
    assert first is not None
    b.receive_datagram(first, A_ADDR, 0.0)
    b.receive_datagram(first, A_ADDR, 0.001)  # a replay (libsrtp's window, before the jitter's)
    assert b.stats.dropped["srtp_replay"] == 1 and b.stats.dropped["duplicate"] == 0
    mallory = RtpSession(now=0.0, remote_addr=B_ADDR, ssrc=0xA)
    mallory.set_srtp(CryptoAttribute.generate(1, "AES_CM_128_HMAC_SHA1_80"), a.srtp.remote)  # type: ignore[union-attr]
    for k in range(5):
        forged = mallory.packetize(b"\x00" * 160, 0.02 * k)
        assert forged is not None
        b.receive_datagram(forged, A_ADDR, 0.02 * k)
    b.receive_datagram(b"\x80" * 3, A_ADDR, 0.2)  # short garbage too
    dropped = b.stats.dropped
    # libsrtp checks the index before the tag: a forged packet far behind is a "replay"
    assert dropped["srtp_auth"] + dropped["srtp_replay"] == 7 and dropped["srtp_auth"] >= 1
    assert b.stats.packets_in == 8
    assert b.jitter_buffer.reception.received == 1  # only the first packet reached playout


def test_rekeying_mid_stream_keeps_the_audio() -> None:
    a, b = keyed_pair()
    pcm = sine_wave(440, 1.0)
    assert correlation(carry(a, b, ulaw_encode(pcm)), pcm) > 0.99
    new_a = CryptoAttribute.generate(2, "AES_CM_128_HMAC_SHA1_32")
    assert a.srtp is not None and b.srtp is not None
    a.set_srtp(new_a, a.srtp.remote)  # a re-INVITE: A's new key, B keeps its own
    b.set_srtp(b.srtp.local, new_a)
    pcm2 = sine_wave(900, 1.0)
    assert correlation(carry(a, b, ulaw_encode(pcm2), start=1.2), pcm2) > 0.99
    assert b.stats.dropped["srtp_auth"] == 0


def test_srtcp_reports_are_accepted_and_tampered_ones_dropped() -> None:
    a, b = keyed_pair()
    carry(a, b, ulaw_encode(sine_wave(440, 0.2)))
    a.handle_timer(10.0)  # an SR is due
    [(report, addr)] = a.rtcp_datagrams_to_send()
    assert addr == (B_ADDR[0], B_ADDR[1] + 1)
    with pytest.raises(Exception):  # noqa: B017 (encrypted: not parseable as RTCP)
        parse_compound(report)
    b.receive_rtcp(report, (A_ADDR[0], A_ADDR[1] + 1), 10.01)
    assert b.stats.dropped["srtp_auth"] == 0 and b.stats.rtcp_in == 1
    b.handle_timer(20.0)
    [(rr, _)] = b.rtcp_datagrams_to_send()
    a.receive_rtcp(rr, (B_ADDR[0], B_ADDR[1] + 1), 20.01)
    assert a.stats.rtt_seconds is not None  # the SR's LSR came back through SRTCP both ways
    b.receive_rtcp(report, (A_ADDR[0], A_ADDR[1] + 1), 20.1)  # replayed SRTCP
    assert b.stats.dropped["srtp_replay"] == 1
    b.handle_timer(30.0)
    [(rr2, _)] = b.rtcp_datagrams_to_send()
    tampered = bytearray(rr2)
    tampered[10] ^= 4
    a.receive_rtcp(bytes(tampered), (B_ADDR[0], B_ADDR[1] + 1), 20.2)
    assert a.stats.dropped["srtp_auth"] == 1


def test_srtcp_under_rtcp_mux_goes_to_receive_rtcp() -> None:
    a, b = keyed_pair()
    carry(a, b, ulaw_encode(sine_wave(440, 0.2)))
    a.handle_timer(10.0)
    [(report, _)] = a.rtcp_datagrams_to_send()
    b.receive_datagram(report, A_ADDR, 10.01)  # on the RTP port (RFC 5761)
    assert b.stats.rtcp_in == 1 and b.stats.dropped["srtp_auth"] == 0
