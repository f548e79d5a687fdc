"""SDP for comfort noise (RFC 3389) and rtcp-mux (RFC 5761): answered when offered, CN offered
only when configured, a=rtcp-mux in every offer of ours with port+1 as the fallback."""

from __future__ import annotations

import pytest

from gateway.sip.sdp import (
    MediaPolicy,
    SessionDescription,
    describe,
    make_offer,
    negotiate,
    offers_rtcp_mux,
)


def offer(media: str) -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 7 7 IN IP4 192.0.2.10\r\ns=call\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" + media
    )


def answer_audio(sd: SessionDescription) -> tuple[list[str], list[tuple[str, str | None]]]:
    audio = SessionDescription.parse(negotiate(sd, "203.0.113.5", 20000).answer_sdp).audio()
    assert audio is not None
    return audio.formats, audio.attributes


@pytest.mark.parametrize(
    ("media", "cn_pt"),
    [
        ("m=audio 7000 RTP/AVP 0 13\r\n", 13),  # static, no rtpmap (RFC 3551)
        ("m=audio 7000 RTP/AVP 0 101 13\r\na=rtpmap:13 CN/8000\r\n", 13),
        ("m=audio 7000 RTP/AVP 0 98\r\na=rtpmap:98 cn/8000\r\n", 98),  # dynamic
        ("m=audio 7000 RTP/AVP 0 98 13\r\na=rtpmap:98 CN/16000\r\n", 13),  # 16000 is not ours
        ("m=audio 7000 RTP/AVP 0 98\r\na=rtpmap:98 CN/16000\r\n", None),
        ("m=audio 7000 RTP/AVP 0\r\n", None),
    ],
)
def test_cn_in_the_offer_at_the_codec_clock_is_answered(media: str, cn_pt: int | None) -> None:
    sd = offer(media)
    remote = describe(sd)
    assert remote.codec == "pcmu" and remote.cn_payload_type == cn_pt
    formats, attrs = answer_audio(sd)
    if cn_pt is None:
        assert not any(v and "CN/" in v.upper() for _, v in attrs)
        assert formats[-1] != "13"
    else:
        assert str(cn_pt) in formats
        assert ("rtpmap", f"{cn_pt} CN/8000") in attrs


def test_our_offer_lists_cn_only_when_configured() -> None:
    plain = make_offer("203.0.113.5", 20000).audio()
    assert plain is not None and "13" not in plain.formats
    assert not any(v and "CN/" in v for _, v in plain.attributes)
    with_cn = make_offer("203.0.113.5", 20000, MediaPolicy(comfort_noise=True)).audio()
    assert with_cn is not None and with_cn.formats == [
        "9",
        "111",
        "0",
        "8",
        "101",
        "102",
        "103",
        "13",
    ]
    assert ("rtpmap", "13 CN/8000") in with_cn.attributes
    # the peer's answer lists it back: the remote media says so
    answer = offer("m=audio 7000 RTP/AVP 0 13\r\na=rtpmap:13 CN/8000\r\na=rtcp-mux\r\n")
    remote = describe(answer, MediaPolicy(comfort_noise=True))
    assert remote.cn_payload_type == 13 and remote.rtcp_mux


def test_rtcp_mux_is_answered_when_offered_and_rtcp_goes_to_the_rtp_port() -> None:
    muxed = offer("m=audio 7000 RTP/AVP 0\r\na=rtcp:7001\r\na=rtcp-mux\r\n")
    assert offers_rtcp_mux(muxed)
    remote = describe(muxed)
    assert remote.rtcp_mux and remote.remote_rtcp == remote.remote_rtp == ("192.0.2.10", 7000)
    _, attrs = answer_audio(muxed)
    assert ("rtcp-mux", None) in attrs


def test_no_rtcp_mux_offered_keeps_the_separate_port() -> None:
    plain = offer("m=audio 7000 RTP/AVP 0\r\na=rtcp:7011\r\n")
    assert not offers_rtcp_mux(plain)
    remote = describe(plain)
    assert not remote.rtcp_mux and remote.remote_rtcp == ("192.0.2.10", 7011)
    _, attrs = answer_audio(plain)
    assert all(k != "rtcp-mux" for k, _ in attrs)


def test_our_offers_have_rtcp_mux_with_port_plus_one_as_fallback() -> None:
    sd = make_offer("203.0.113.5", 20000)
    audio = sd.audio()
    assert audio is not None and audio.attribute("rtcp-mux") == ""
    assert audio.attribute("rtcp") is None  # RFC 3605 default: RTP port + 1
    text = sd.serialize().decode()
    assert "a=rtcp-mux\r\n" in text
