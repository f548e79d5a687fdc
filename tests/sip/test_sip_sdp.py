"""SDP (RFC 4566) parse/serialise and offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.errors import EncryptedMediaOnly, NotAcceptable, SdpError, SrtpRequired
from gateway.rtp.srtp import SUITES, CryptoAttribute
from gateway.sip.sdp import (
    DEFAULT_MEDIA,
    MediaPolicy,
    SessionDescription,
    check_offer,
    crypto_lines,
    describe,
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


OFF = MediaPolicy(srtp="off")
MANDATORY = MediaPolicy(srtp="mandatory")


@pytest.mark.parametrize(
    "name",
    [
        "sdp_srtp_sdes.sdp",  # RTP/SAVP with a=crypto (SDES, RFC 4568)
        "sdp_srtp_savpf.sdp",  # RTP/SAVPF (RFC 5124)
        "sdp_dtls_srtp_savp.sdp",  # UDP/TLS/RTP/SAVP (DTLS-SRTP, RFC 5764)
        "sdp_dtls_srtp_webrtc.sdp",  # UDP/TLS/RTP/SAVPF, a browser's offer
    ],
)
def test_encrypted_audio_only_is_refused_with_srtp_off(name: str) -> None:
    sd = vector(name)
    with pytest.raises(EncryptedMediaOnly) as info:
        check_offer(sd, OFF)
    assert (info.value.status_hint, info.value.reason, info.value.warning) == (
        488,
        "srtp_unsupported",
        302,
    )
    assert "SAVP" in str(info.value)
    with pytest.raises(EncryptedMediaOnly):
        negotiate(sd, "203.0.113.5", 20000, OFF)


@pytest.mark.parametrize("name", ["sdp_dtls_srtp_savp.sdp", "sdp_dtls_srtp_webrtc.sdp"])
@pytest.mark.parametrize("policy", [DEFAULT_MEDIA, MANDATORY])
def test_dtls_srtp_is_refused_in_every_mode(name: str, policy: MediaPolicy) -> None:
    with pytest.raises(NotAcceptable) as info:
        negotiate(vector(name), "203.0.113.5", 20000, policy)
    assert (info.value.status_hint, info.value.warning) == (488, 302)
    assert "SAVP" in str(info.value) and "inline" not in str(info.value)


@pytest.mark.parametrize("name", ["sdp_srtp_sdes.sdp", "sdp_srtp_savpf.sdp"])
@pytest.mark.parametrize("policy", [DEFAULT_MEDIA, MANDATORY])
def test_sdes_offer_is_answered_with_one_crypto_line_of_our_own(
    name: str, policy: MediaPolicy
) -> None:
    sd = vector(name)
    offered = sd.media[0]
    n = negotiate(sd, "203.0.113.5", 20000, policy)
    [theirs, *_] = [c for c in crypto_lines(offered)]
    assert n.media.crypto == theirs  # the first line of a suite we have (RFC 4568 §7.1.1)
    answer = SessionDescription.parse(n.answer_sdp)
    [line] = answer.media
    assert (line.port, line.proto) == (20000, offered.proto)
    [ours] = crypto_lines(line)
    assert (ours.tag, ours.suite) == (theirs.tag, theirs.suite) and ours.key != theirs.key
    assert ours.mki is None and ours.usable and n.media.local_crypto == ours


def test_a_suite_we_lack_is_skipped_for_the_next_line() -> None:
    sd = offer(
        "m=audio 5000 RTP/SAVP 0\r\n"
        "a=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj "
        "UNENCRYPTED_SRTP\r\n"
        "a=crypto:3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==\r\n"
        "a=crypto:4 bad\r\n"
    )
    n = negotiate(sd, "h", 1)
    assert n.media.crypto is not None and n.media.crypto.tag == 3
    assert n.media.local_crypto is not None and len(n.media.local_crypto.key) == 28
    assert n.answer_sdp.count(b"a=crypto:") == 1 and b"a=crypto:3 AEAD_AES_128_GCM" in n.answer_sdp


def test_sdes_line_without_a_suite_of_ours_gets_488() -> None:
    sd = offer(
        "m=audio 5000 RTP/SAVP 0\r\n"
        "a=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n"
    )
    with pytest.raises(EncryptedMediaOnly) as info:
        negotiate(sd, "h", 1)
    assert "AES_CM_128_HMAC_SHA1_80" in str(info.value) and "MTIz" not in str(info.value)


def test_best_effort_offer_chooses_by_the_setting() -> None:
    # RFC 3264 §6: as many m-lines as offered, the one not chosen with port 0; either order
    for reverse in (False, True):
        sd = vector("sdp_srtp_and_rtp.sdp")
        if reverse:
            sd.media.reverse()
        for policy, chosen in (
            (OFF, "RTP/AVP"),
            (DEFAULT_MEDIA, "RTP/SAVP"),
            (MANDATORY, "RTP/SAVP"),
        ):
            n = negotiate(sd, "203.0.113.5", 20000, policy)
            ports = {m.proto: m.port for m in n.answer.media}
            assert ports == {chosen: 20000, ({"RTP/AVP", "RTP/SAVP"} - {chosen}).pop(): 0}
            assert (b"a=crypto:1 " in n.answer_sdp) == (chosen == "RTP/SAVP")
            assert n.remote_rtp[1] == (51782 if chosen == "RTP/SAVP" else 51784)
            assert (n.media.crypto is None) == (chosen == "RTP/AVP")


def test_srtp_off_answers_the_plain_line_of_a_best_effort_offer() -> None:
    n = negotiate(
        vector("sdp_srtp_and_rtp.sdp"), "203.0.113.5", 20000, MediaPolicy(("pcma",), srtp="off")
    )
    assert n.remote_rtp == ("192.0.2.24", 51784)  # the plain line's port
    assert (n.codec, n.dtmf_payload_type) == ("pcma", 101)
    assert b"crypto" not in n.answer_sdp


def test_mandatory_refuses_plain_rtp_with_488() -> None:
    with pytest.raises(SrtpRequired) as info:
        negotiate(vector("sdp_rtp_avpf.sdp"), "h", 1, MANDATORY)
    assert (info.value.status_hint, info.value.reason, info.value.warning) == (
        488,
        "srtp_required",
        302,
    )


def test_optional_answers_plain_rtp_in_the_clear() -> None:
    n = negotiate(vector("sdp_rtp_avpf.sdp"), "h", 1)
    assert n.media.crypto is None and b"crypto" not in n.answer_sdp


def test_reinvite_answer_keeps_our_key_with_the_offers_tag() -> None:
    sd = vector("sdp_srtp_sdes.sdp")
    first = negotiate(sd, "h", 1)
    ours = first.media.local_crypto
    assert ours is not None
    sd.media[0].attributes = [(k, v) for k, v in sd.media[0].attributes if k != "crypto"] + [
        ("crypto", "5 AES_CM_128_HMAC_SHA1_80 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj")
    ]
    again = negotiate(sd, "h", 1, local_crypto=ours)
    assert again.media.crypto is not None and again.media.crypto.tag == 5
    assert again.media.local_crypto == ours.with_tag(5)
    other_suite = replace(ours, suite="AEAD_AES_128_GCM")
    renewed = negotiate(sd, "h", 1, local_crypto=other_suite)  # suite changed: a new key
    assert renewed.media.local_crypto is not None
    assert renewed.media.local_crypto.key not in (ours.key, other_suite.key)


def test_mandatory_offer_is_savp_with_one_key_per_suite_and_the_answer_picks_ours() -> None:
    our_offer = make_offer("203.0.113.5", 20000, MANDATORY)
    [m] = our_offer.media
    lines = crypto_lines(m)
    assert m.proto == "RTP/SAVP" and [c.suite for c in lines] == list(SUITES)
    assert [c.tag for c in lines] == [1, 2, 3] and len({c.key for c in lines}) == 3
    assert make_offer("h", 1).media[0].proto == "RTP/AVP"  # optional: plain
    theirs = CryptoAttribute.generate(2, "AES_CM_128_HMAC_SHA1_32")
    answer = offer(f"m=audio 5000 RTP/SAVP 0\r\na=crypto:{theirs}\r\n")
    media = describe(answer, MANDATORY, local=our_offer)
    assert media.crypto == theirs and media.local_crypto == lines[1]
    # an answer naming a tag (or suite) we did not offer is not SRTP we can use
    bogus = offer("m=audio 5000 RTP/SAVP 0\r\na=crypto:" + str(theirs.with_tag(9)) + "\r\n")
    with pytest.raises(SrtpRequired):
        describe(bogus, MANDATORY, local=our_offer)
    with pytest.raises(SrtpRequired):  # plain answer to a mandatory offer
        describe(offer("m=audio 5000 RTP/AVP 0\r\n"), MANDATORY, local=our_offer)


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


@pytest.mark.parametrize(
    "line",
    [
        "m=audio \u00b2000 RTP/AVP 0",  # a superscript digit: str.isdigit() says yes, int() no
        "m=audio 7000 RTP/AVP \u00b9 0",
        "o=- \u00b2 1 IN IP4 192.0.2.1",
        "a=rtcp:\u00b2001",
    ],
)
def test_non_ascii_digits_never_crash_the_sdp_parser(line: str) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    text += "m=audio 7000 RTP/AVP 0\r\n" if not line.startswith("m=") else ""
    text += line + "\r\n"
    try:
        sd = SessionDescription.parse(text.encode())
        negotiate(sd, "203.0.113.5", 20000)
    except SdpError:
        pass  # refused cleanly (400/488) is right; any other exception is the bug
