"""SDP (RFC 4566) parse/serialise and offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import EncryptedMediaOnly, NotAcceptable, SdpError
from gateway.sip.sdp import (
    MediaPolicy,
    SessionDescription,
    check_offer,
    make_offer,
    negotiate,
    with_direction,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "sip"


def vector(name: str) -> SessionDescription:
    return SessionDescription.parse((VECTORS / name).read_bytes())


SIPP_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def offer(media: str, session_c: str = "c=IN IP4 192.0.2.10\r\n") -> SessionDescription:
    return SessionDescription.parse(
        f"v=0\r\no=- 7 7 IN IP4 192.0.2.10\r\ns=call\r\n{session_c}t=0 0\r\n{media}"
    )


def test_sipp_offer() -> None:
    n = negotiate(SessionDescription.parse(SIPP_OFFER), "203.0.113.5", 20000)
    assert (n.codec, n.payload_type, n.dtmf_payload_type, n.ptime) == ("pcmu", 0, None, 20)
    assert n.remote_rtp == ("127.0.0.1", 6000) and n.remote_rtcp == ("127.0.0.1", 6001)
    answer = SessionDescription.parse(n.answer_sdp)
    audio = answer.audio()
    assert audio is not None and audio.formats == ["0"] and audio.port == 20000
    assert answer.connection == "203.0.113.5"  # c= from the configured public address
    assert audio.attribute("ptime") == "20" and audio.direction == "sendrecv"


def test_our_order_dynamic_dtmf_ptime_and_media_level_c() -> None:
    sd = offer(
        "m=audio 7078 RTP/AVP 8 0 97\r\nc=IN IP4 198.51.100.20\r\n"
        "a=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-15\r\na=ptime:30\r\n"
        "a=rtcp:7090 IN IP4 198.51.100.21\r\n"
    )
    # the first of our codecs that the offer has, whatever the offer's order
    assert negotiate(sd, "203.0.113.5", 20000).codec == "pcmu"
    n = negotiate(sd, "203.0.113.5", 20000, MediaPolicy(codecs=("pcma", "pcmu")))
    assert (n.codec, n.payload_type, n.dtmf_payload_type, n.ptime) == ("pcma", 8, 97, 30)
    assert n.remote_rtp == ("198.51.100.20", 7078)  # media-level c= wins
    assert n.remote_rtcp == ("198.51.100.21", 7090)
    audio = n.answer.audio()
    assert audio is not None and audio.formats == ["8", "97"]
    assert ("rtpmap", "97 telephone-event/8000") in audio.attributes
    assert negotiate(sd, "h", 1, MediaPolicy(codecs=("pcmu",))).codec == "pcmu"


def test_dynamic_pt_for_g711_by_rtpmap_and_wrong_rate_ignored() -> None:
    sd = offer(
        "m=audio 5000 RTP/AVP 96 101\r\na=rtpmap:96 PCMU/16000\r\n"
        "a=rtpmap:101 telephone-event/48000\r\n"
    )
    with pytest.raises(NotAcceptable):
        negotiate(sd, "h", 1)
    sd = offer("m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n")
    assert negotiate(sd, "h", 1).payload_type == 96


@pytest.mark.parametrize(
    ("direction", "answer_dir", "hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_directions(direction: str, answer_dir: str, hold: bool) -> None:
    n = negotiate(offer(f"m=audio 5000 RTP/AVP 0\r\na={direction}\r\n"), "h", 1)
    assert n.direction == direction and n.on_hold is hold
    audio = n.answer.audio()
    assert audio is not None and audio.direction == answer_dir


def test_session_level_direction_and_zero_address_hold() -> None:
    sd = offer("m=audio 5000 RTP/AVP 0\r\n", "c=IN IP4 0.0.0.0\r\na=sendonly\r\n")
    n = negotiate(sd, "h", 1)
    assert n.direction == "sendonly" and n.on_hold


def test_extra_streams_rejected_with_port_zero() -> None:
    sd = offer("m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5000 RTP/AVP 0\r\n")
    n = negotiate(sd, "h", 1)
    assert [(m.media, m.port) for m in n.answer.media] == [("video", 0), ("audio", 1)]


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 5000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
        "m=audio 0 RTP/AVP 0\r\n",
        "m=video 5000 RTP/AVP 96\r\n",
    ],
)
def test_not_acceptable(media: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        negotiate(offer(media), "h", 1)
    assert info.value.status_hint == 488


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v=1\r\n",
        "v=0\r\nbogus\r\n",
        "v=0\r\nc=IN IP4\r\n",
        "v=0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- a b IN IP4 h\r\n",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(text)
    assert info.value.status_hint == 400


def test_no_connection_address_is_an_error() -> None:
    sd = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    )
    with pytest.raises(SdpError):
        negotiate(sd, "h", 1)


def test_make_offer_round_trip_and_answerable() -> None:
    o = make_offer("203.0.113.5", 20000, MediaPolicy(ptime=30), dtmf_pt=101)
    again = SessionDescription.parse(o.serialize())
    assert again.serialize() == o.serialize()
    n = negotiate(again, "198.51.100.1", 30000)
    assert (n.codec, n.dtmf_payload_type, n.ptime) == ("g722", 101, 30)
    assert "IP6" in make_offer("2001:db8::5", 1).serialize().decode()


def test_with_direction_bumps_version_only_on_change() -> None:
    o = make_offer("h", 1, session_version=4)
    assert with_direction(o, "sendrecv").session_version == 4
    held = with_direction(o, "sendonly")
    assert held.session_version == 5
    audio = held.audio()
    assert audio is not None and audio.direction == "sendonly"
    assert [k for k, _ in audio.attributes].count("sendonly") == 1


@pytest.mark.parametrize(
    "name",
    [
        "sdp_srtp_sdes.sdp",  # RTP/SAVP with a=crypto (SDES, RFC 4568)
        "sdp_srtp_savpf.sdp",  # RTP/SAVPF (RFC 5124)
        "sdp_dtls_srtp_savp.sdp",  # UDP/TLS/RTP/SAVP (DTLS-SRTP, RFC 5764)
        "sdp_dtls_srtp_webrtc.sdp",  # UDP/TLS/RTP/SAVPF, a browser's offer
    ],
)
def test_encrypted_audio_only_is_refused_until_srtp_exists(name: str) -> None:
    sd = vector(name)
    with pytest.raises(EncryptedMediaOnly) as info:
        check_offer(sd)
    assert (info.value.status_hint, info.value.reason, info.value.warning) == (
        488,
        "srtp_unsupported",
        302,
    )
    assert "SAVP" in str(info.value)
    with pytest.raises(EncryptedMediaOnly):
        negotiate(sd, "203.0.113.5", 20000)


def test_encrypted_line_beside_a_plain_one_gets_port_zero() -> None:
    n = negotiate(vector("sdp_srtp_and_rtp.sdp"), "203.0.113.5", 20000, MediaPolicy(("pcma",)))
    assert n.remote_rtp == ("192.0.2.24", 51784)  # the plain line's port
    assert (n.codec, n.dtmf_payload_type) == ("pcma", 101)
    answer = SessionDescription.parse(n.answer_sdp)
    # RFC 3264 §6: as many m-lines as offered, the refused one with port 0
    assert [(m.media, m.port, m.proto) for m in answer.media] == [
        ("audio", 0, "RTP/SAVP"),
        ("audio", 20000, "RTP/AVP"),
    ]
    assert b"crypto" not in n.answer_sdp
    # either order
    sd = vector("sdp_srtp_and_rtp.sdp")
    sd.media.reverse()
    answer = negotiate(sd, "203.0.113.5", 20000).answer
    assert [(m.port, m.proto) for m in answer.media] == [(20000, "RTP/AVP"), (0, "RTP/SAVP")]


def test_plain_rtp_with_feedback_is_answered_in_its_profile() -> None:
    n = negotiate(vector("sdp_rtp_avpf.sdp"), "203.0.113.5", 20000)
    assert [(m.port, m.proto) for m in n.answer.media] == [(20000, "RTP/AVPF")]


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 5000 TCP/RTP/AVP 0\r\n",  # RTP over TCP (RFC 4571): not ours either
        "m=audio 5000 RTP/SAVP 0\r\nm=audio 5002 TCP/RTP/AVP 0\r\n",
    ],
)
def test_other_transports_are_no_audio_stream_not_srtp(media: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        negotiate(offer(media), "h", 1)
    assert not isinstance(info.value, EncryptedMediaOnly)
    assert info.value.reason == "no_codec" and info.value.warning == 304
