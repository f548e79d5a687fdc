"""Who the client is (`gateway.http.client.client_address`): the peer, or behind a trusted
reverse proxy the forwarded address; never loopback for a request a same-host proxy relayed."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.http.client import client_address, is_loopback, parse_networks

NONE = parse_networks([])
LOCAL_PROXY = parse_networks(["127.0.0.1/32", "::1/128"])
PROXY_CHAIN = parse_networks(["127.0.0.1/32", "10.0.0.0/8"])


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("peer", "pairs", "trusted", "client"),
    [
        # no proxy configured: the peer, headers ignored...
        ("203.0.113.5", [], NONE, "203.0.113.5"),
        ("203.0.113.5", [("X-Forwarded-For", "127.0.0.1")], NONE, "203.0.113.5"),
        ("203.0.113.5", [("Forwarded", "for=127.0.0.1")], NONE, "203.0.113.5"),
        ("127.0.0.1", [], NONE, "127.0.0.1"),
        ("::1", [], NONE, "::1"),
        ("::ffff:127.0.0.1", [], NONE, "127.0.0.1"),
        # ...except a loopback peer relaying for someone: a same-host proxy nobody listed
        ("127.0.0.1", [("X-Forwarded-For", "203.0.113.5")], NONE, None),
        ("127.0.0.1", [("X-Forwarded-For", "127.0.0.1")], NONE, None),
        ("::1", [("Forwarded", "for=198.51.100.1")], NONE, None),
        ("127.0.0.1", [("X-Real-IP", "203.0.113.5")], NONE, None),
        ("127.0.0.1", [("Via", "1.1 nginx")], NONE, None),
        ("127.0.0.1", [("X-Forwarded-Proto", "https")], NONE, None),
        # a loopback peer that is not among the configured proxies: the same
        ("127.0.0.1", [("X-Forwarded-For", "203.0.113.5")], parse_networks(["10.0.0.0/8"]), None),
        # a trusted proxy: the right-most address that is not a trusted proxy
        ("127.0.0.1", [("X-Forwarded-For", "203.0.113.5")], LOCAL_PROXY, "203.0.113.5"),
        # the client claimed to be local; the proxy appended what it saw
        ("127.0.0.1", [("X-Forwarded-For", "127.0.0.1, 203.0.113.5")], LOCAL_PROXY, "203.0.113.5"),
        (
            "127.0.0.1",
            [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.5")],
            LOCAL_PROXY,
            "203.0.113.5",
        ),
        # two proxies (an edge one at 10.1.2.3, then the local one)
        ("127.0.0.1", [("X-Forwarded-For", "198.51.100.7, 10.1.2.3")], PROXY_CHAIN, "198.51.100.7"),
        # a browser on this machine through the local proxy: every hop trusted, the left-most
        ("127.0.0.1", [("X-Forwarded-For", "127.0.0.1")], LOCAL_PROXY, "127.0.0.1"),
        ("127.0.0.1", [("X-Forwarded-For", "192.0.2.1:5123")], LOCAL_PROXY, "192.0.2.1"),
        ("127.0.0.1", [("X-Forwarded-For", "[2001:db8::1]:443")], LOCAL_PROXY, "2001:db8::1"),
        ("127.0.0.1", [("X-Forwarded-For", "2001:db8::1")], LOCAL_PROXY, "2001:db8::1"),
        # RFC 7239: parameters, quoted IPv6 with a port, several elements and header lines
        (
            "127.0.0.1",
            [("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
            LOCAL_PROXY,
            "192.0.2.60",
        ),
        (
            "127.0.0.1",
            [("Forwarded", 'For="[2001:db8:cafe::17]:4711"')],
            LOCAL_PROXY,
            "2001:db8:cafe::17",
        ),
        (
            "127.0.0.1",
            [("Forwarded", "for=127.0.0.1, for=198.51.100.9")],
            LOCAL_PROXY,
            "198.51.100.9",
        ),
        (
            "127.0.0.1",
            [("Forwarded", 'for=198.51.100.9;ext="a,b;c"'), ("Forwarded", "for=::1")],
            LOCAL_PROXY,
            "198.51.100.9",
        ),
        # what cannot be told is unknown: obfuscated, `unknown`, garbage, no for=, no header
        ("127.0.0.1", [("Forwarded", "for=unknown")], LOCAL_PROXY, None),
        ("127.0.0.1", [("Forwarded", "for=_hidden")], LOCAL_PROXY, None),
        ("127.0.0.1", [("Forwarded", "proto=https")], LOCAL_PROXY, None),
        ("127.0.0.1", [("X-Forwarded-For", "evil.example")], LOCAL_PROXY, None),
        ("127.0.0.1", [("X-Forwarded-For", "203.0.113.5, bogus")], LOCAL_PROXY, None),
        ("127.0.0.1", [], LOCAL_PROXY, None),
        # both headers: they must agree (a proxy sets one and passes the other through)
        (
            "127.0.0.1",
            [("Forwarded", "for=203.0.113.5"), ("X-Forwarded-For", "203.0.113.5")],
            LOCAL_PROXY,
            "203.0.113.5",
        ),
        (
            "127.0.0.1",
            [("Forwarded", "for=127.0.0.1"), ("X-Forwarded-For", "203.0.113.5")],
            LOCAL_PROXY,
            None,
        ),
        # no peer address (a UNIX socket) or garbage
        (None, [], NONE, None),
        ("not-an-ip", [], NONE, None),
    ],
)
def test_client_address(
    peer: str | None, pairs: list[tuple[str, str]], trusted: tuple, client: str | None
) -> None:
    assert client_address(peer, headers(*pairs), trusted) == client


def test_an_unknown_client_is_never_loopback() -> None:
    forwarded = headers(("X-Forwarded-For", "127.0.0.1"))
    assert not is_loopback(client_address("127.0.0.1", forwarded, NONE))
    assert is_loopback(client_address("127.0.0.1", headers(), NONE))


def test_parse_networks_rejects_garbage() -> None:
    assert parse_networks([" 10.0.0.0/8", "::1"]) == parse_networks(["10.0.0.0/8", "::1/128"])
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
