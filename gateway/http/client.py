"""Who the client of an HTTP request is: the one place the call API, `/metrics` and WebRTC ask.

Loopback clients get trust without a token (when none is configured), so the answer matters.
The TCP peer is the client, except behind a reverse proxy:

* **The peer is a trusted proxy** (`trusted_proxies` CIDRs): the client is the address the proxy
  forwarded, from `Forwarded` (RFC 7239) or `X-Forwarded-For`. Each proxy appends the address it
  saw, so the right-most entry that is not itself a trusted proxy is the first one no trusted
  proxy can be bypassed for (entries left of it are whatever the client sent). Every entry
  trusted: the left-most. When both headers are present they must name the same client (a
  proxy sets one and passes the other through from the client). An entry that is not an
  address (`unknown`, an obfuscated `_id`, garbage), headers that disagree, or no forwarding
  header at all: the client is unknown.
* **The peer is not a trusted proxy**: forwarding headers are ignored (anyone can send them) and
  the client is the peer, with one exception: a *loopback* peer whose request carries forwarding
  headers is a reverse proxy on this host that nobody listed, relaying some remote client, so
  the client is unknown. Without that rule every client of a same-host proxy would look like
  loopback.

An unknown client (None) is never loopback: it needs the token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web
from multidict import MultiMapping

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

#: headers only a proxy adds; their presence on a loopback peer's request means one relayed it
PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Real-IP",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Via",
)


def parse_networks(cidrs: Iterable[str]) -> Networks:
    """CIDR strings (`10.0.0.0/8`, `::1`) into networks; ValueError on a bad one."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _address(text: str | None) -> IpAddress | None:
    """An IP address (scope id dropped, IPv4-mapped IPv6 unwrapped), or None."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_loopback(remote: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped loopback); False for None or garbage."""
    addr = _address(remote)
    return addr is not None and addr.is_loopback


def _in(addr: IpAddress, networks: Networks) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def _node(text: str) -> IpAddress | None:
    """One forwarded node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`;
    None for `unknown`, obfuscated identifiers and anything else (RFC 7239 §6)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        host, sep, _rest = text[1:].partition("]")
        return _address(host) if sep else None
    if text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    return _address(text)


def _split(value: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings (RFC 7230 §3.2.6)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _forwarded_nodes(values: Sequence[str]) -> list[IpAddress | None]:
    """The `for=` node of each element of `Forwarded` headers, in order; None where an element
    has no readable `for=`."""
    nodes: list[IpAddress | None] = []
    for value in values:
        for element in _split(value, ","):
            if not element.strip():
                continue
            node: IpAddress | None = None
            for pair in _split(element, ";"):
                name, eq, raw = pair.partition("=")
                if eq and name.strip().lower() == "for":
                    node = _node(raw)
            nodes.append(node)
    return nodes


def _xff_nodes(values: Sequence[str]) -> list[IpAddress | None]:
    return [_node(part) for value in values for part in value.split(",") if part.strip()]


def _rightmost_untrusted(nodes: list[IpAddress | None], trusted: Networks) -> IpAddress | None:
    for node in reversed(nodes):
        if node is None or not _in(node, trusted):
            return node
    return nodes[0]


def client_address(
    peer: str | None, headers: MultiMapping[str], trusted_proxies: Networks = ()
) -> str | None:
    """The client's IP address for a request from `peer` with `headers`, None when it cannot be
    told (see the module docstring for the rules)."""
    addr = _address(peer)
    if addr is None:
        return None
    if not _in(addr, trusted_proxies):
        if addr.is_loopback and any(name in headers for name in PROXY_HEADERS):
            return None  # a same-host reverse proxy that is not configured as trusted
        return str(addr)
    answers = []
    for nodes in (
        _forwarded_nodes(headers.getall("Forwarded", [])),
        _xff_nodes(headers.getall("X-Forwarded-For", [])),
    ):
        if nodes:
            answers.append(_rightmost_untrusted(nodes, trusted_proxies))
    if not answers or answers[0] is None or any(a != answers[0] for a in answers):
        return None
    return str(answers[0])


def request_client(request: web.BaseRequest, trusted_proxies: Networks = ()) -> str | None:
    """`client_address` of an aiohttp request."""
    return client_address(request.remote, request.headers, trusted_proxies)
