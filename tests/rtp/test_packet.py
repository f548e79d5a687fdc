"""RTP packets: vectors round-trip byte for byte, fast paths agree, malformed input is refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RtpParseError
from gateway.rtp.packet import RtpHeaderWriter, RtpPacket, is_rtcp, parse_header
from tests.support.rtp import VECTORS, invalid_vectors, vector

RTP_VECTORS = [
    "rtp_pcma_first.bin",
    "rtp_pcma_second.bin",
    "rtp_event_start.bin",
    "rtp_event_end.bin",
    "rtp_csrc_ext_padding.bin",
    "rtp_ext_only.bin",
]


@pytest.mark.parametrize("name", RTP_VECTORS)
def test_vector_round_trips_byte_for_byte(name: str) -> None:
    data = vector(name)
    packet = RtpPacket.parse(data)
    assert packet.serialize() == data
    assert bytes(packet) == data


@pytest.mark.parametrize("name", RTP_VECTORS)
def test_fast_header_parse_agrees_with_dataclass(name: str) -> None:
    data = vector(name)
    packet = RtpPacket.parse(data)
    assert parse_header(data) == (
        packet.payload_type,
        packet.marker,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
        packet.payload,
    )


def test_sipp_pcma_packet_fields() -> None:
    packet = RtpPacket.parse(vector("rtp_pcma_first.bin"))
    assert (packet.payload_type, packet.marker) == (8, True)
    assert (packet.sequence_number, packet.timestamp) == (59133, 240)
    assert len(packet.payload) == 240  # 30 ms of A-law
    assert packet.csrc == [] and packet.extension_profile is None


def test_csrc_extension_padding_fields() -> None:
    packet = RtpPacket.parse(vector("rtp_csrc_ext_padding.bin"))
    assert packet.marker and packet.payload_type == 0
    assert packet.sequence_number == 65535 and packet.timestamp == 0xFFFFFFF0
    assert packet.csrc == [0xAAAAAAAA, 0xBBBBBBBB]
    assert packet.extension_profile == 0xBEDE and packet.extension == bytes((0x10, 0x42, 0, 0))
    assert packet.payload == bytes(range(20))
    assert packet.padding_size == 4


def test_writer_matches_dataclass_serialisation() -> None:
    writer = RtpHeaderWriter(0xCAFEBABE)
    built = writer.build(8, True, 70000, 2**32 + 5, b"\xd5" * 160)
    expected = RtpPacket(8, 70000 & 0xFFFF, 5, 0xCAFEBABE, b"\xd5" * 160, marker=True)
    assert built == expected.serialize()


@pytest.mark.parametrize(("name", "reason"), invalid_vectors("rtp"))
def test_invalid_vectors_raise_parse_error_with_reason(name: str, reason: str) -> None:
    data = vector(name)
    with pytest.raises(RtpParseError) as excinfo:
        RtpPacket.parse(data)
    assert excinfo.value.reason == reason
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(RtpParseError) as excinfo:
        parse_header(data)  # the receive path's fast parse refuses it the same way
    assert excinfo.value.reason == reason


def test_every_invalid_vector_file_has_its_expected_reason() -> None:
    listed = {name for kind in ("rtp", "rtcp") for name, _ in invalid_vectors(kind)}
    assert listed == {p.name for p in VECTORS.glob("invalid_*.bin")}
    assert {r for _, r in invalid_vectors("rtp")} == {
        "short",
        "version",
        "csrc_overrun",
        "extension_overrun",
        "padding",
    }  # every refusal of RtpPacket.parse has a vector


def test_serialize_refuses_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, csrc=list(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc").serialize()


def test_rtcp_is_recognised_on_the_rtp_port() -> None:
    assert is_rtcp(vector("rtcp_sr_sdes.bin"))
    assert not is_rtcp(vector("rtp_pcma_first.bin"))
    assert not is_rtcp(b"\x80")


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4]),
    padding_size=st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_is_identity(packet: RtpPacket) -> None:
    if packet.extension_profile is None:
        packet.extension = b""
    assert RtpPacket.parse(packet.serialize()) == packet


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_parse_raises_only_parse_errors(data: bytes) -> None:
    for parse in (RtpPacket.parse, parse_header):
        try:
            parse(data)
        except RtpParseError:
            pass


@settings(max_examples=300)
@given(st.sampled_from(RTP_VECTORS), st.integers(0, 400), st.integers(0, 255))
def test_mutated_vectors_raise_only_parse_errors(name: str, pos: int, value: int) -> None:
    data = bytearray(vector(name))
    data[pos % len(data)] = value
    for cut in (len(data), pos % (len(data) + 1)):
        try:
            packet = RtpPacket.parse(bytes(data[:cut]))
        except RtpParseError:
            continue
        assert RtpPacket.parse(packet.serialize()) == packet


def test_struct_layout_of_header() -> None:
    data = RtpHeaderWriter(1).build(0, False, 1, 2, b"")
    assert struct.unpack("!BBHII", data) == (0x80, 0, 1, 2, 1)
