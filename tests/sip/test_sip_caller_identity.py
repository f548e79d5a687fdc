"""Caller identity in the SIP core (issue 15, item 8): the trunk's identity headers, the From
name-addr of our INVITE, and what of an INVITE's headers the application may see. No I/O."""

from __future__ import annotations

from gateway.sip.message import SipRequest, parse
from gateway.sip.sdp import make_offer
from gateway.sip.transaction import Address
from gateway.sip.trunk import Trunk
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from gateway.sip.uas import MAX_EXPOSED_HEADERS, MAX_EXPOSED_VALUE, exposed_headers


def test_trunk_identity_headers_and_a_call_replacing_one() -> None:
    trunk = Trunk.from_table(
        "t",
        {
            "uri": "sip:198.51.100.1",
            "asserted_identity": "sip:+15550009999@t.example",
            "preferred_identity": '"Sales" <sip:+15550008888@t.example>',
            "privacy": "id",
            "headers": {"X-Trunk": "t1", "Diversion": "<sip:1@t.example>"},
        },
    )
    assert trunk.identity_headers() == [
        ("X-Trunk", "t1"),
        ("Diversion", "<sip:1@t.example>"),
        ("P-Asserted-Identity", "<sip:+15550009999@t.example>"),
        ("P-Preferred-Identity", '"Sales" <sip:+15550008888@t.example>'),
        ("Privacy", "id"),
    ]
    call = [("p-asserted-identity", "<sip:+1@t.example>"), ("X-Call", "c")]
    assert trunk.identity_headers(call) == [
        ("X-Trunk", "t1"),
        ("Diversion", "<sip:1@t.example>"),
        ("P-Preferred-Identity", '"Sales" <sip:+15550008888@t.example>'),
        ("Privacy", "id"),
        *call,
    ]
    assert Trunk.from_table("bare", {"uri": "sip:198.51.100.1"}).identity_headers() == []


def test_our_invite_has_a_from_name_addr_and_the_extra_headers() -> None:
    ep = SipEndpoint(EndpointConfig("192.0.2.10", 5060))
    ep.invite(
        "sip:+15557654321@198.51.100.1;user=phone",
        make_offer("192.0.2.10", 40000),
        "sip:+15550001111@trunk.example.com;user=phone",
        Address("udp", "198.51.100.1", 5060),
        0.0,
        headers=[("X-Campaign", "spring")],
        from_display='Acme "Sales"',
    )
    [(data, _addr)] = ep.messages_to_send()
    invite = parse(data)
    assert isinstance(invite, SipRequest)
    assert invite.uri == "sip:+15557654321@198.51.100.1;user=phone"
    assert invite.from_.display == 'Acme "Sales"'
    assert str(invite.from_.uri) == "sip:+15550001111@trunk.example.com;user=phone"
    assert invite.from_.tag
    assert invite.headers.get("X-Campaign") == "spring"


def test_the_application_sees_every_line_in_order_but_no_credentials() -> None:
    lines = "".join(f"X-Many: {i}\r\n" for i in range(100))
    raw = (
        "INVITE sip:1000@192.0.2.10 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@198.51.100.1>;tag=1\r\nTo: <sip:1000@192.0.2.10>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        'Authorization: Digest username="u"\r\nProxy-Authorization: Digest username="p"\r\n'
        f"X-Foo: one\r\nX-Long: {'a' * 5000}\r\nX-Foo: two\r\n{lines}Content-Length: 0\r\n\r\n"
    )
    request = parse(raw.encode())
    assert isinstance(request, SipRequest)
    exposed = exposed_headers(request)
    names = [n.lower() for n, _ in exposed]
    assert "authorization" not in names and "proxy-authorization" not in names
    assert [v for n, v in exposed if n == "X-Foo"] == ["one", "two"]
    assert len(dict(exposed)["X-Long"]) == MAX_EXPOSED_VALUE
    assert len(exposed) == MAX_EXPOSED_HEADERS
