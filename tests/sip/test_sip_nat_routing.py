"""Where in-dialog requests go (gateway/sip/routing.py): the NAT fix-up of a private Contact
and the `transport=` / `sips:` of the next hop (issue 15, item 5). Pure functions, no I/O."""

from __future__ import annotations

import pytest

from gateway.sip.dialog import Dialog
from gateway.sip.routing import is_private, learn_target, nat_source, target_addr
from gateway.sip.transaction import Address

UDP_PEER = Address("udp", "203.0.113.7", 40123)
TCP_PEER = Address("tcp", "203.0.113.7", 40123, 5)


def dialog(target: str, routes: list[str] | None = None) -> Dialog:
    return Dialog("c", "l", "r", "<sip:a@x>;tag=l", "<sip:b@y>;tag=r", 1, 1, target, routes or [])


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.10", True),
        ("100.64.1.1", True),  # RFC 6598 carrier-grade NAT
        ("169.254.3.4", True),
        ("127.0.0.1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("203.0.113.7", False),
        ("2001:db8::1", False),
        ("pbx.example.com", False),
    ],
)
def test_private_ranges(host: str, private: bool) -> None:
    assert is_private(host) is private


def test_a_private_contact_is_reached_where_its_message_came_from() -> None:
    assert nat_source("sip:a@10.0.0.5:5062", UDP_PEER) == UDP_PEER
    assert nat_source("sip:a@203.0.113.9:5062", UDP_PEER) is None  # public: used as it is
    assert nat_source("sip:a@pbx.example.com", UDP_PEER) is None
    lan = Address("udp", "10.0.0.5", 5062)
    assert nat_source("sip:a@10.0.0.5:5062", lan) is None  # same host: reachable on the LAN


def test_target_addr_uses_the_source_of_a_nated_dialog_but_keeps_the_request_uri() -> None:
    d = dialog("sip:a@10.0.0.5:5062")
    assert target_addr(UDP_PEER, d) == Address("udp", "10.0.0.5", 5062)  # before: the Contact
    learn_target(d, UDP_PEER)
    assert target_addr(UDP_PEER, d) == UDP_PEER
    bye = d.create_request("BYE", "SIP/2.0/UDP gw:5060;branch=z9hG4bKx", "<sip:gw@gw>")
    assert bye.uri == "sip:a@10.0.0.5:5062"  # §12.2.1.1: the Request-URI is the remote target
    # a target refresh to a reachable Contact forgets the fix-up
    d.remote_target = "sip:a@198.51.100.4:5060"
    learn_target(d, UDP_PEER)
    assert target_addr(UDP_PEER, d) == Address("udp", "198.51.100.4", 5060)


def test_a_route_set_wins_over_the_nat_fix_up() -> None:
    d = dialog("sip:a@10.0.0.5", ["<sip:198.51.100.1;lr>"])
    learn_target(d, UDP_PEER)
    assert target_addr(UDP_PEER, d) == Address("udp", "198.51.100.1", 5060)


@pytest.mark.parametrize(
    ("uri", "peer", "expected"),
    [
        ("sip:a@198.51.100.4:5070;transport=tcp", UDP_PEER, Address("tcp", "198.51.100.4", 5070)),
        ("sip:a@198.51.100.4;transport=TLS", UDP_PEER, Address("tls", "198.51.100.4", 5061)),
        ("sips:a@198.51.100.4", UDP_PEER, Address("tls", "198.51.100.4", 5061)),
        ("sip:a@198.51.100.4:5070;transport=udp", TCP_PEER, Address("udp", "198.51.100.4", 5070)),
        # its own transport on a stream: the connection it came on is reused
        ("sip:a@198.51.100.4:5070;transport=tcp", TCP_PEER, TCP_PEER),
        ("sip:a@198.51.100.4:5070", TCP_PEER, TCP_PEER),
        ("sip:a@198.51.100.4:5070", UDP_PEER, Address("udp", "198.51.100.4", 5070)),
        ("sip:a@pbx.example.com;transport=tcp", UDP_PEER, Address("tcp", "pbx.example.com", 5060)),
        ("sip:a@pbx.example.com", UDP_PEER, UDP_PEER),
    ],
)
def test_transport_of_the_remote_target(uri: str, peer: Address, expected: Address) -> None:
    assert target_addr(peer, dialog(uri)) == expected


def test_transport_of_a_loose_route() -> None:
    d = dialog("sip:a@198.51.100.4", ["<sip:198.51.100.1:5080;lr;transport=tcp>"])
    assert target_addr(UDP_PEER, d) == Address("tcp", "198.51.100.1", 5080)
