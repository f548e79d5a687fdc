"""SIP message parsing and serialising, against the vectors in tests/vectors/sip/."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import SipParseError
from gateway.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    SipStreamParser,
    SipUri,
    Via,
    make_response,
    parse,
    split_list,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "sip"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_compact_forms_folding_and_case() -> None:
    msg = parse(vector("valid_compact_folded.sip"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert [v.host for v in msg.vias] == ["192.0.2.1", "192.0.2.2"]
    assert msg.top_via.branch == "z9hG4bK-compact"
    assert "rport" in msg.top_via.params and msg.top_via.rport is None
    assert msg.from_.display == "Alice, Esq." and msg.from_.tag == "a1"
    assert msg.to.uri.user == "bot" and msg.to.tag is None
    assert msg.call_id == "compact-1@192.0.2.1"
    assert (msg.cseq.seq, msg.cseq.method) == (7, "INVITE")  # folded over three lines
    assert msg.max_forwards == 69
    assert [c.uri.host for c in msg.contacts] == ["192.0.2.1", "2001:db8::1"]
    assert msg.contacts[1].params == {"q": "0.5"}
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    for compact, full in [
        ("s", "Subject"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("c", "Content-Type"),
        ("k", "supported"),
    ]:
        assert msg.headers.get(compact) == msg.headers.get(full) is not None
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\r\ns=-\r\nx"  # Content-Length 11 wins over the datagram


def test_ipv6_uris_multiple_vias_and_routes() -> None:
    msg = parse(vector("valid_ipv6_multi_via.sip"))
    assert isinstance(msg, SipRequest)
    uri = msg.request_uri
    assert (uri.host, uri.port, uri.params) == (
        "2001:db8::10",
        5060,
        {"transport": "udp", "lr": None},
    )
    vias = msg.vias
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "2001:db8::9", 5062),
        ("TCP", "proxy.example.com", None),
        ("TLS", "198.51.100.7", 5061),
    ]
    assert vias[0].received == "2001:db8::99"
    assert vias[1].sent_by == ("proxy.example.com", 5060)
    frm = msg.from_.uri
    assert (frm.scheme, frm.user, frm.password, frm.params, frm.headers) == (
        "sips",
        "user",
        "pw",
        {"user": "phone"},
        {"subject": "x"},
    )
    assert frm.transport == "tls"
    assert [str(r.uri) for r in msg.record_routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert len(msg.routes) == 2


def test_udp_body_longer_than_content_length_is_truncated() -> None:
    msg = parse(vector("valid_udp_extra_body.sip"))
    assert msg.body == b"hello"


def test_udp_without_content_length_takes_the_rest() -> None:
    msg = parse(vector("valid_no_content_length_udp.sip"))
    assert msg.body == b"Signal=5\r\nDuration=160\r\n"
    with pytest.raises(SipParseError, match="missing Content-Length"):
        parse(vector("valid_no_content_length_udp.sip"), stream=True)


def test_response() -> None:
    msg = parse(vector("valid_response_180.sip"))
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason, msg.to.tag) == (180, "Ringing", "2")


def _invalid() -> list[tuple[str, str]]:
    lines = (VECTORS / "invalid_reasons.txt").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


@pytest.mark.parametrize(("name", "reason"), _invalid())
def test_invalid_vectors(name: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse(vector(name))
    assert reason in info.value.reason


def test_errors_carry_status_and_partial_request() -> None:
    with pytest.raises(SipParseError) as info:
        parse(vector("invalid_version.sip"))
    assert info.value.status_hint == 505
    assert info.value.request is not None and info.value.request.method == "INVITE"
    with pytest.raises(SipParseError) as info:
        parse(vector("invalid_missing_cseq.sip"))
    assert info.value.status_hint == 400
    assert info.value.request is not None
    assert info.value.request.top_via.branch == "z9hG4bK-bad"  # enough to answer 400


def test_size_limit() -> None:
    data = vector("valid_response_180.sip")
    with pytest.raises(SipParseError) as info:
        parse(data, max_size=len(data) - 1)
    assert info.value.status_hint == 513
    assert isinstance(parse(data, max_size=len(data)), SipResponse)


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("valid_*.sip")))
def test_round_trip(name: str) -> None:
    first = parse(vector(name))
    again = parse(first.serialize())
    assert again.serialize() == first.serialize()

    def fields(h: Headers) -> list[tuple[str, str]]:
        return [(n, v) for n, v in h if n != "Content-Length"]  # serialize() always adds it

    assert fields(again.headers) == fields(first.headers)
    assert again.body == first.body


def test_headers_case_insensitive_multimap() -> None:
    h = Headers([("via", "a"), ("V", "b, c"), ("X-Custom", "1")])
    assert h.get("VIA") == "a"
    assert h.get_all("Via") == ["a", "b", "c"]
    assert "x-custom" in h and "X-Other" not in h
    h.set("x-custom", "2")
    assert h.items()[-1] == ("X-Custom", "2")
    h.remove("v")
    assert h.get_all("Via") == []


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>;q=1, <sip:z@w>') == [
        '"a, b" <sip:x@y;p=1,2>;q=1',
        "<sip:z@w>",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sips:bob:secret@[2001:db8::1]:5061;transport=tls;lr",
        "sip:+15551234567@10.0.0.1;user=phone",
        "sip:example.com:5080?subject=hi&x=y",
    ],
)
def test_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["tel:+1555", "sip:", "sip:@host", "sip:[::1", "sip:host:0", "sip:ho st"]
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_name_addr_and_via_serialise() -> None:
    addr = NameAddr.parse('"Bob" <sip:bob@h>;tag=x').with_tag("y")
    assert str(addr) == '"Bob" <sip:bob@h>;tag=y'
    via = Via.parse("SIP/2.0/udp [::1]:5060;branch=z9hG4bK1;rport=5062;received=::1")
    assert (via.transport, via.rport, via.received) == ("UDP", 5062, "::1")
    assert str(via) == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport=5062;received=::1"


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=30,
    )
)
def test_display_names_are_quoted_and_unquoted_losslessly(display: str) -> None:
    """A display name goes out as a quoted-string (quotes, backslashes and controls as
    quoted-pairs, §25.1) and comes back the same, inside a whole message too."""
    addr = NameAddr.parse("<sip:bob@h>;tag=x")
    addr = NameAddr(addr.uri, display, addr.params)
    again = NameAddr.parse(str(addr))
    assert again.display == display and again.tag == "x"
    data = vector("valid_response_180.sip").replace(
        b"To: ", f"To: {addr}\r\nX-Old-To: ".encode(), 1
    )
    assert parse(data).to.display == display


def test_make_response_copies_dialog_headers_and_adds_to_tag() -> None:
    req = parse(vector("valid_ipv6_multi_via.sip"))
    assert isinstance(req, SipRequest)
    resp = make_response(req, 200, "OK", to_tag="t1", headers=[("Allow", "INVITE")])
    parsed = parse(resp.serialize())
    assert isinstance(parsed, SipResponse)
    assert parsed.headers.get_all("Via") == req.headers.get_all("Via")
    assert parsed.to.tag == "t1"
    assert parsed.cseq == req.cseq and parsed.call_id == req.call_id


# --- stream framing (TCP/TLS)


def test_stream_parser_frames_by_content_length_and_skips_keepalives() -> None:
    one = vector("valid_response_180.sip")
    two = parse(vector("valid_udp_extra_body.sip")).serialize()
    parser = SipStreamParser()
    messages = parser.feed(b"\r\n\r\n" + one + two[:10])
    assert len(messages) == 1 and parser.keepalives == 1
    messages = parser.feed(two[10:])
    assert len(messages) == 1 and messages[0].body == b"hello"


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
@settings(max_examples=200, deadline=None)
def test_stream_parser_any_chunking(cuts: list[int]) -> None:
    data = b"".join(
        parse(vector(n)).serialize() for n in sorted(p.name for p in VECTORS.glob("valid_*.sip"))
    )
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    parser = SipStreamParser()
    out = [m for chunk in chunks for m in parser.feed(chunk)]
    assert len(out) == len(list(VECTORS.glob("valid_*.sip")))


def test_stream_parser_rejects_missing_and_oversize_length() -> None:
    no_cl = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n"
    with pytest.raises(SipParseError, match="missing Content-Length"):
        SipStreamParser().feed(no_cl)
    big = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 100000\r\n\r\n"
    with pytest.raises(SipParseError) as info:
        SipStreamParser(max_size=65536).feed(big)
    assert info.value.status_hint == 513
    with pytest.raises(SipParseError):
        SipStreamParser(max_size=1000).feed(b"A" * 1001)  # no header end in sight
