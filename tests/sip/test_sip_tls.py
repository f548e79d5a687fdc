"""TLS in the SIP core (no sockets): how we name ourselves over TLS (RFC 3261 §8.1.1.8,
§18.1.1, RFC 5923 alias), where sips:/transport=tls URIs are reached (§26.2.2, RFC 3263
§4.2), and a transport error (a refused TLS handshake) ending an outbound call at once as a
503 (§17.1.4, §8.1.3.1)."""

from __future__ import annotations

import pytest

from gateway.sip.dialog import Dialog
from gateway.sip.events import OutboundCallFailed
from gateway.sip.message import SipRequest, SipUri, parse
from gateway.sip.routing import target_addr, uri_address
from gateway.sip.sdp import make_offer
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig

US, TRUNK = "10.0.0.1", Address("tls", "10.0.0.2", 5061)


def invite_out(endpoint: SipEndpoint, target: str, dest: Address = TRUNK) -> SipRequest:
    endpoint.invite(target, make_offer(US, 4000), f"sip:gw@{US}", dest, 0.0)
    [(data, addr)] = endpoint.messages_to_send()
    assert addr == dest
    request = parse(data)
    assert isinstance(request, SipRequest)
    return request


@pytest.mark.parametrize(
    ("target", "contact"),
    [
        ("sip:+15550001111@10.0.0.2", "<sip:gateway@10.0.0.1:5061;transport=tls>"),
        ("sips:+15550001111@10.0.0.2", "<sips:gateway@10.0.0.1:5061>"),  # §8.1.1.8
    ],
    ids=["sip", "sips"],
)
def test_an_outbound_invite_over_tls_names_the_tls_listener(target: str, contact: str) -> None:
    """The trunk's ACK and BYE go to our Contact: over TLS, the TLS listener's port."""
    invite = invite_out(SipEndpoint(EndpointConfig(US, 5060, tls_port=5061)), target)
    assert invite.headers.get("Contact") == contact
    via = invite.headers.get("Via") or ""
    assert via.startswith("SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK") and "alias" not in via


def test_with_no_tls_listener_the_via_asks_for_connection_reuse() -> None:
    """No TLS port of ours to name: RFC 5923 `alias` asks the trunk to send its requests back
    over the connection we opened."""
    invite = invite_out(SipEndpoint(EndpointConfig(US, 5060)), "sip:1@10.0.0.2")
    assert (invite.headers.get("Via") or "").endswith(";rport;alias")
    udp = invite_out(SipEndpoint(EndpointConfig(US, 5060)), "sip:1@x", Address("udp", "x", 5060))
    assert "alias" not in (udp.headers.get("Via") or "")


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("sips:10.0.0.2", Address("tls", "10.0.0.2", 5061)),  # RFC 3263 §4.2
        ("sip:10.0.0.2;transport=tls", Address("tls", "10.0.0.2", 5061)),
        ("sip:10.0.0.2;transport=TLS", Address("tls", "10.0.0.2", 5061)),
        ("sips:10.0.0.2:5071;transport=tcp", Address("tls", "10.0.0.2", 5071)),  # RFC 5630
        ("sip:10.0.0.2:5070;transport=tcp", Address("tcp", "10.0.0.2", 5070)),
        ("sip:10.0.0.2", Address("udp", "10.0.0.2", 5060)),
    ],
)
def test_where_a_uri_is_reached(uri: str, address: Address) -> None:
    assert uri_address(SipUri.parse(uri)) == address


def dialog_to(target: str) -> Dialog:
    return Dialog("c", "l", "r", "<sip:a@b>;tag=l", "<sip:c@d>;tag=r", 1, 1, target)


def test_in_dialog_requests_to_a_tls_contact_go_over_tls() -> None:
    # came in over TLS: the connection it came on while it lasts, else the Contact's TLS port
    inbound = Address("tls", "10.0.0.5", 40001, conn=7)
    assert target_addr(inbound, dialog_to("sips:p@10.0.0.5:5071")) == Address(
        "tls", "10.0.0.5", 5071, 7
    )
    assert target_addr(inbound, dialog_to("sip:p@10.0.0.5;transport=tls")) == Address(
        "tls", "10.0.0.5", 5061, 7
    )
    # a dialog set up over UDP whose next hop is sips:: TLS, a new connection (§26.2.2)
    over_udp = Address("udp", "10.0.0.5", 5060)
    assert target_addr(over_udp, dialog_to("sips:p@10.0.0.6")) == Address("tls", "10.0.0.6", 5061)
    # a Record-Route'd proxy that is sips: is the next hop, over TLS (§12.2.1.1)
    routed = dialog_to("sip:p@10.0.0.6:5062")
    routed.route_set = ["<sips:proxy@10.0.0.8;lr>"]
    assert target_addr(over_udp, routed) == Address("tls", "10.0.0.8", 5061)
    # ours to a TLS trunk: the connection we opened to it (by its address)
    assert target_addr(TRUNK, dialog_to("sip:p@10.0.0.9:5999;transport=tls")) == TRUNK
    # no TLS: as before
    assert target_addr(over_udp, dialog_to("sip:p@10.0.0.6:5062")) == Address(
        "udp", "10.0.0.6", 5062
    )


def test_a_transport_error_fails_the_outbound_call_at_once_with_its_reason() -> None:
    """A TLS handshake that fails is the transaction's transport error (§17.1.4): the call ends
    now as a 503 carrying the reason (§8.1.3.1), with nothing left to retransmit and no ACK
    sent into the dead connection; a call to another destination is untouched."""
    endpoint = SipEndpoint(EndpointConfig(US, 5060, tls_port=5061))
    failing = endpoint.invite("sip:1@10.0.0.2", None, "sip:gw@10.0.0.1", TRUNK, 0.0)
    other = Address("tls", "10.0.0.3", 5061)
    endpoint.invite("sip:2@10.0.0.3", None, "sip:gw@10.0.0.1", other, 0.0)
    endpoint.messages_to_send()
    endpoint.transport_error(TRUNK, 0.2, "TLS certificate not accepted: self-signed\r\n")
    assert endpoint.next_event() == OutboundCallFailed(
        failing, 503, "Service Unavailable (TLS certificate not accepted: self-signed??)"
    )
    assert endpoint.next_event() is None and endpoint.messages_to_send() == []
    assert endpoint.active_calls == 1 and endpoint.transaction_count == 1
    endpoint.transport_error(TRUNK, 0.3, "again")  # nothing left towards it: no effect
    assert endpoint.next_event() is None and endpoint.active_calls == 1
