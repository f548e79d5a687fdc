"""RTCP: compound vectors round-trip byte for byte; report fields, RTT and malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RtpParseError
from gateway.rtp.rtcp import (
    RtcpBye,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknown,
    SdesChunk,
    compact_ntp,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from tests.support.rtp import invalid_vectors, vector

RTCP_VECTORS = ["rtcp_sr_sdes.bin", "rtcp_rr_sdes_bye.bin", "rtcp_rr_app.bin"]


@pytest.mark.parametrize("name", RTCP_VECTORS)
def test_compound_vectors_round_trip(name: str) -> None:
    data = vector(name)
    assert serialize_compound(parse_compound(data)) == data


def test_sender_report_fields() -> None:
    sr, sdes = parse_compound(vector("rtcp_sr_sdes.bin"))
    assert isinstance(sr, RtcpSenderReport) and isinstance(sdes, RtcpSourceDescription)
    assert sr.ssrc == 0x01020304
    assert sr.ntp_timestamp == (0xE8A3C5D0 << 32) | 0x80000000
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (123456, 250, 40000)
    (block,) = sr.reports
    assert block == RtcpReportBlock(0x0A0B0C0D, 26, 17, 0x0001FFFF, 37, 0x5D00C000, 0x00024000)
    assert sdes.chunks[0].cname == b"gw@192.0.2.1"


def test_receiver_report_negative_cumulative_loss_and_bye_reason() -> None:
    rr, sdes, bye = parse_compound(vector("rtcp_rr_sdes_bye.bin"))
    assert isinstance(rr, RtcpReceiverReport) and isinstance(bye, RtcpBye)
    assert [b.cumulative_lost for b in rr.reports] == [0, -3]
    assert rr.reports[1].fraction_lost == 255
    assert isinstance(sdes, RtcpSourceDescription) and sdes.chunks[0].cname == b"caller"
    assert bye.ssrcs == [0x05060708] and bye.reason == b"hangup"


def test_unknown_types_are_carried() -> None:
    rr, app = parse_compound(vector("rtcp_rr_app.bin"))
    assert isinstance(rr, RtcpReceiverReport) and rr.reports == []
    assert isinstance(app, RtcpUnknown) and app.packet_type == 204 and app.count == 3


def test_rtt_from_lsr_and_dlsr_matches_rfc_figure_2() -> None:
    # RFC 3550 §6.4.1 Figure 2: A = 0xb710:8000 (46864.5 s), LSR = 0xb705:2000 (46853.125 s),
    # DLSR = 0x0005:4000 (5.25 s) -> RTT = 6.125 s
    assert round_trip_time(0xB7108000, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(0xB7108000, 0, 0) is None


def test_ntp_conversions() -> None:
    ntp = ntp_timestamp(0.5)
    assert ntp >> 32 == 2_208_988_800 and ntp & 0xFFFFFFFF == 0x80000000
    assert compact_ntp(ntp) == ((2_208_988_800 & 0xFFFF) << 16) | 0x8000


def test_built_packets_round_trip_through_parse() -> None:
    packets = [
        RtcpSenderReport(7, 1 << 40, 99, 3, 480, [RtcpReportBlock(8, 1, -1, 5, 6, 7, 8)]),
        RtcpSourceDescription([SdesChunk(7, ((1, b"abc"), (2, b"name")))]),
        RtcpBye([7, 8], b"bye"),
    ]
    data = serialize_compound(packets)  # type: ignore[arg-type]
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets


def test_padding_bit_is_accepted() -> None:
    rr = bytes((0xA0, 201, 0, 2)) + (5).to_bytes(4, "big") + b"\x00\x00\x00\x04"
    (packet,) = parse_compound(rr)
    assert isinstance(packet, RtcpReceiverReport) and packet.ssrc == 5


@pytest.mark.parametrize(("name", "reason"), invalid_vectors("rtcp"))
def test_invalid_vectors_raise_parse_error_with_reason(name: str, reason: str) -> None:
    with pytest.raises(RtpParseError) as excinfo:
        parse_compound(vector(name))
    assert excinfo.value.reason == reason


def test_every_rtcp_refusal_has_a_vector() -> None:
    reasons = {r for _, r in invalid_vectors("rtcp")}
    assert reasons == {
        "rtcp_short",
        "rtcp_version",
        "rtcp_type",
        "rtcp_first",
        "rtcp_overrun",
        "rtcp_padding",
    }


def test_a_compound_must_start_with_a_report() -> None:
    """RFC 3550 §6.1: SR or RR first; anything may follow, an APP or BYE alone may not."""
    rr = RtcpReceiverReport(5)
    bye = RtcpBye([5], b"bye")
    assert parse_compound(serialize_compound([rr, bye])) == [rr, bye]
    for alone in (bye, RtcpSourceDescription([SdesChunk(5, ((1, b"x"),))])):
        with pytest.raises(RtpParseError) as excinfo:
            parse_compound(alone.serialize())
        assert excinfo.value.reason == "rtcp_first"


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_parse_compound_raises_only_parse_errors(data: bytes) -> None:
    try:
        parse_compound(b"\x80\xc9" + data)
    except RtpParseError:
        pass
    try:
        parse_compound(data)
    except RtpParseError:
        pass


@settings(max_examples=300)
@given(st.sampled_from(RTCP_VECTORS), st.integers(0, 200), st.integers(0, 255))
def test_mutated_rtcp_raises_only_parse_errors(name: str, pos: int, value: int) -> None:
    data = bytearray(vector(name))
    data[pos % len(data)] = value
    try:
        parse_compound(bytes(data))
    except RtpParseError:
        pass
