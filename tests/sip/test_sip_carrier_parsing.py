"""What real carriers send that a strict parser refused (issue 15, item 7), against byte vectors
in tests/vectors/sip/ and the sans-I/O endpoint:

* tel: (and other absolute) URIs in From, To, P-Asserted-Identity and Diversion (RFC 3261
  §20.20, §20.39; RFC 3966); a tel: Request-URI gets 416 (§8.2.2.1); a tel: Contact a 400
  naming it (§8.1.1.8);
* header lines that are not UTF-8 (Latin-1 display names) read as text; every request whose
  Via can be read answered, a bad header line or a NUL with a 400 and its reason;
* SIP-I multipart/mixed bodies (RFC 5621): the application/sdp part is the offer;
* any ptime from 10 to 120 ms: answered, paced, and received at any packet size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import SipParseError
from gateway.media.format import PCMA_8K
from gateway.rtp.jitter import JitterBuffer
from gateway.rtp.session import RtpSession
from gateway.sip import sdp as sdpmod
from gateway.sip.dialog import Dialog
from gateway.sip.events import IncomingCallReceived, RequestRejected
from gateway.sip.message import (
    AbsoluteUri,
    NameAddr,
    SipRequest,
    SipUri,
    parse,
    parse_uri,
    session_body,
)
from gateway.sip.policy import SourcePolicy
from gateway.sip.sdp import SessionDescription
from gateway.sip.transaction import Address
from gateway.sip.ua import EndpointConfig, SipEndpoint
from gateway.sip.ua_core import sdp_of

VECTORS = Path(__file__).parent.parent / "vectors" / "sip"
PEER = Address("udp", "198.51.100.40", 5060)


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def request(data: bytes) -> SipRequest:
    msg = parse(data)
    assert isinstance(msg, SipRequest)
    return msg


def endpoint() -> SipEndpoint:
    return SipEndpoint(EndpointConfig("127.0.0.1", 5060), policy=SourcePolicy(allow=("0.0.0.0/0",)))


def exchange(data: bytes) -> tuple[list[bytes], list[object]]:
    """Feed one datagram to a fresh endpoint: (what it sent, its events)."""
    ep = endpoint()
    ep.receive(data, PEER, 0.0)
    sent = [d for d, _ in ep.messages_to_send()]
    events = []
    while (ev := ep.next_event()) is not None:
        events.append(ev)
    return sent, events


def edited(name: str, old: bytes, new: bytes) -> bytes:
    """Vector `name` with `old` replaced by `new` once, its Content-Length made right again."""
    data = vector(name)
    assert old in data
    head, _, body = data.replace(old, new, 1).partition(b"\r\n\r\n")
    lines = [
        b"Content-Length: %d" % len(body) if line.startswith(b"Content-Length:") else line
        for line in head.split(b"\r\n")
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def first_lines(sent: list[bytes]) -> list[str]:
    return [d.split(b"\r\n", 1)[0].decode() for d in sent]


# --- tel: and other absolute URIs


def test_tel_uris_in_from_to_pai_and_diversion() -> None:
    msg = request(vector("valid_tel_from.sip"))
    frm = msg.from_
    assert isinstance(frm.uri, AbsoluteUri)
    assert (frm.display, frm.tag) == ("Carrier Caller", "tel1")
    assert (frm.uri.scheme, frm.uri.number) == ("tel", "+1-555-0199")
    assert frm.uri.user == "+15550199"  # visual separators dropped (RFC 3966 §5.1.1)
    assert frm.uri.params == {"phone-context": "+1"}
    assert str(frm.uri) == "tel:+1-555-0199;phone-context=+1"
    to = msg.to  # addr-spec form: nothing but the URI
    assert isinstance(to.uri, AbsoluteUri) and to.uri.user == "+15550100" and to.tag is None
    pai = NameAddr.parse_any(msg.headers.get("P-Asserted-Identity") or "")
    assert pai.uri.user == "+15550199"
    diversion = NameAddr.parse_any(msg.headers.get("Diversion") or "")
    assert diversion.uri.user == "+15550177"
    assert diversion.params == {"reason": "unconditional", "counter": "1"}
    (contact,) = msg.contacts
    assert isinstance(contact.uri, SipUri) and contact.uri.host == "198.51.100.40"
    # the dialog keeps the tel: parties as they came, tags added (§12.1.1)
    dialog = Dialog.as_uas(msg, "ourtag")
    assert dialog.local_party == "<tel:+15550100>;tag=ourtag"
    assert dialog.remote_party.startswith('"Carrier Caller" <tel:+1-555-0199')
    assert dialog.remote_target == "sip:+15550199@198.51.100.40:5060"


def test_any_absolute_uri_parses_and_sip_still_means_sip() -> None:
    assert isinstance(parse_uri("sip:a@example.net"), SipUri)
    assert isinstance(parse_uri("SIPS:a@example.net"), SipUri)
    for text in ("urn:uuid:0f8a3c52-7d41", "mailto:desk@example.org", "tel:*21#;phone-context=x"):
        uri = parse_uri(text)
        assert isinstance(uri, AbsoluteUri) and str(uri) == text
    assert parse_uri("tel:*21#;phone-context=x").user == "*21#"
    assert parse_uri("urn:uuid:0f8a3c52-7d41").user is None
    for bad in ("tel:", "tel:+", "tel:+1 555", "tel:++1", "no-colon", "1tel:+1", "tel:<+1>"):
        with pytest.raises(SipParseError):
            parse_uri(bad)
    # Contact, Route, Record-Route stay SIP only
    with pytest.raises(SipParseError):
        NameAddr.parse("<tel:+15550100>")


def test_a_tel_from_reaches_the_call_event() -> None:
    sent, events = exchange(vector("valid_tel_from.sip"))
    assert first_lines(sent) == ["SIP/2.0 100 Trying"]
    (incoming,) = [e for e in events if isinstance(e, IncomingCallReceived)]
    assert incoming.from_uri == "tel:+1-555-0199;phone-context=+1"
    assert incoming.to_uri == "tel:+15550100"
    assert incoming.offer is not None


def test_a_tel_request_uri_gets_416() -> None:
    data = edited(
        "valid_tel_from.sip",
        b"INVITE sip:+15550100@gw.example.net;user=phone SIP/2.0",
        b"INVITE tel:+15550100 SIP/2.0",
    )
    sent, events = exchange(data)
    assert first_lines(sent) == ["SIP/2.0 416 Unsupported URI Scheme"]
    assert not [e for e in events if isinstance(e, IncomingCallReceived)]
    assert [(e.method, e.status) for e in events if isinstance(e, RequestRejected)] == [
        ("INVITE", 416)
    ]
    assert b"\r\nCall-ID: tel-from-1@198.51.100.40\r\n" in sent[0]


def test_a_tel_contact_gets_a_400_that_names_it() -> None:
    data = edited(
        "valid_tel_from.sip",
        b"Contact: <sip:+15550199@198.51.100.40:5060>",
        b"Contact: <tel:+15550199>",
    )
    with pytest.raises(SipParseError) as info:
        parse(data)
    assert info.value.reason == "bad Contact: not a SIP or SIPS URI"
    sent, _ = exchange(data)
    assert first_lines(sent) == ["SIP/2.0 400 Bad Request (bad Contact: not a SIP or SIPS URI)"]


def test_a_tel_from_without_contact_gets_400() -> None:
    """§8.1.1.8: with no Contact, From would be the dialog's target; a tel: one cannot be."""
    data = edited("valid_tel_from.sip", b"Contact: <sip:+15550199@198.51.100.40:5060>\r\n", b"")
    sent, events = exchange(data)
    assert first_lines(sent)[-1] == "SIP/2.0 400 Bad Request (missing Contact)"
    assert not [e for e in events if isinstance(e, IncomingCallReceived)]


# --- header bytes that are not UTF-8


def test_latin1_display_name_is_read_as_text() -> None:
    data = vector("valid_latin1_display.sip")
    assert "José Müller".encode("latin-1") in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    msg = request(data)
    assert msg.from_.display == "José Müller"
    assert msg.headers.get("Subject") == "Grüße aus Köln"
    assert msg.from_.tag == "l1" and msg.call_id == "latin1-1@198.51.100.41"
    sent, events = exchange(data)
    assert first_lines(sent) == ["SIP/2.0 100 Trying"]
    (incoming,) = [e for e in events if isinstance(e, IncomingCallReceived)]
    assert '"José Müller"' in incoming.headers["From"]


def test_utf8_and_latin1_lines_in_one_message() -> None:
    data = edited(
        "valid_latin1_display.sip",
        b"Subject: Gr\xfc\xdfe aus K\xf6ln",
        "Subject: Grüße aus Köln".encode(),
    )
    msg = request(data)
    assert msg.headers.get("Subject") == "Grüße aus Köln"  # UTF-8 line: UTF-8
    assert msg.from_.display == "José Müller"  # Latin-1 line: Latin-1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"X-Broken\xff\xfe no colon", "bad header line"),
        (b"no colon here", "bad header line"),
        (b"X-Nul: a\x00b", "NUL in headers"),
    ],
)
def test_a_request_with_a_bad_header_line_is_answered_400_with_its_reason(
    line: bytes, reason: str
) -> None:
    data = edited(
        "valid_latin1_display.sip",
        b"\r\nMax-Forwards: 70",
        b"\r\n" + line + b"\r\nMax-Forwards: 70",
    )
    with pytest.raises(SipParseError) as info:
        parse(data)
    assert info.value.reason == reason and info.value.status_hint == 400
    assert info.value.request is not None
    sent, _ = exchange(data)
    assert first_lines(sent) == [f"SIP/2.0 400 Bad Request ({reason})"]
    assert b"branch=z9hG4bK-l1-1" in sent[0] and b"CSeq: 1 INVITE" in sent[0]


# --- multipart bodies (SIP-I)


def test_sipi_multipart_offer_is_its_sdp_part() -> None:
    msg = request(vector("valid_sipi_multipart.sip"))
    assert msg.content_type == "multipart/mixed"
    sdp = session_body(msg)
    assert sdp is not None and sdp.startswith(b"v=0\r\n") and b"a=ptime:20\r\n" in sdp
    assert b"ISUP" not in sdp and b"--sipi-7c1e2b" not in sdp
    offer = sdp_of(msg)
    assert offer is not None and offer.audio() is not None
    sent, events = exchange(vector("valid_sipi_multipart.sip"))
    assert first_lines(sent) == ["SIP/2.0 100 Trying"]
    (incoming,) = [e for e in events if isinstance(e, IncomingCallReceived)]
    assert incoming.offer is not None
    audio = incoming.offer.audio()
    assert audio is not None and audio.port == 30004


def test_multipart_without_sdp_gets_415_with_a_reason() -> None:
    data = edited(
        "valid_sipi_multipart.sip",
        b"Content-Type: application/sdp\r\n",
        b"Content-Type: text/plain\r\n",
    )
    assert session_body(request(data)) is None
    sent, events = exchange(data)
    assert first_lines(sent) == [
        "SIP/2.0 415 Unsupported Media Type (no application/sdp in multipart/mixed)"
    ]
    assert b"\r\nAccept: application/sdp, multipart/mixed\r\n" in sent[0]
    assert not [e for e in events if isinstance(e, IncomingCallReceived)]


def test_a_required_part_we_cannot_use_gets_415_and_a_broken_multipart_400() -> None:
    required = edited("valid_sipi_multipart.sip", b"handling=optional", b"handling=required")
    with pytest.raises(SipParseError) as info:
        session_body(request(required))
    assert info.value.status_hint == 415
    sent, _ = exchange(required)
    assert first_lines(sent) == [
        "SIP/2.0 415 Unsupported Media Type (required body part application/ISUP not supported)"
    ]
    unclosed = edited("valid_sipi_multipart.sip", b"--sipi-7c1e2b--", b"")
    sent, _ = exchange(unclosed)
    assert first_lines(sent) == ["SIP/2.0 400 Bad Request (multipart body not closed)"]
    no_boundary = edited("valid_sipi_multipart.sip", b';boundary="sipi-7c1e2b"', b"")
    sent, _ = exchange(no_boundary)
    assert first_lines(sent) == ["SIP/2.0 400 Bad Request (multipart body without a boundary)"]


# --- packet times


def offer_with(*attrs: str) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.9", "s=-", "c=IN IP4 192.0.2.9", "t=0 0"]
    lines += ["m=audio 40000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", *attrs]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


@pytest.mark.parametrize(
    ("attrs", "ptime"),
    [
        (("a=ptime:25",), 25),
        (("a=ptime:30",), 30),
        (("a=ptime:80",), 80),
        (("a=ptime:120",), 120),
        (("a=ptime:20.0",), 20),
        (("a=ptime:150",), 20),  # beyond what we pace: our default
        (("a=ptime:5",), 20),
        (("a=ptime:banana",), 20),
        (("a=maxptime:40",), 20),
        (("a=maxptime:10",), 10),  # our default is above the peer's maximum
        (("a=ptime:80", "a=maxptime:60"), 60),
        (("a=maxptime:5",), 10),  # the least we can do
    ],
)
def test_the_answer_sends_in_the_peers_packet_time(attrs: tuple[str, ...], ptime: int) -> None:
    negotiated = sdpmod.negotiate(offer_with(*attrs), "127.0.0.1", 20000)
    assert negotiated.ptime == ptime
    assert f"a=ptime:{ptime}\r\n".encode() in negotiated.answer_sdp


@pytest.mark.parametrize("ptime", [10, 25, 30, 80, 120])
def test_the_rtp_session_packetizes_any_ptime(ptime: int) -> None:
    session = RtpSession(now=0.0, codec="pcma", remote_addr=("192.0.2.9", 40000), ptime_ms=ptime)
    assert session.frame_samples == 8 * ptime
    payload = bytes(range(256)) * 4
    datagram = session.packetize(payload[: 8 * ptime], 0.0)
    assert datagram is not None and datagram[12:] == payload[: 8 * ptime]
    assert len(session.silence_payload) == PCMA_8K.frame_bytes(ptime)


@pytest.mark.parametrize("packet_ms", [25, 30, 80, 120])
@pytest.mark.parametrize("frame_ms", [20, 25, 80])
def test_the_jitter_buffer_plays_any_packet_size_whole(packet_ms: int, frame_ms: int) -> None:
    """Packets of `packet_ms` arriving on time, played in `frame_ms` frames: every sample comes
    out once, in order, nothing concealed once playout runs."""
    jitter = JitterBuffer("pcma", frame_ms)
    total_ms = 2400  # a whole number of both packets and frames for every pair above
    signal = bytes((i * 7 + i // 160) & 0xFF for i in range(8 * total_ms))
    packet = 8 * packet_ms
    out = bytearray()
    t, next_packet, next_pop, seq = 0.0, 0.0, 0.0005, 100
    while len(out) < len(signal) + 8 * 200:
        if next_packet <= next_pop:
            t = next_packet
            offset = (seq - 100) * packet
            if offset < len(signal):
                jitter.push(seq, 1000 + offset, signal[offset : offset + packet], t)
                seq += 1
            next_packet += packet_ms / 1000
        else:
            t = next_pop
            out += jitter.pop(t) or b""
            next_pop += frame_ms / 1000
    start = out.find(signal[:64])
    assert start >= 0, "the first packet never played"
    assert bytes(out[start : start + len(signal)]) == signal
    assert jitter.stats.late == 0
