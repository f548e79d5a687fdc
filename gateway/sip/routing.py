"""Where SIP messages go, and how we name ourselves in them (RFC 3261 §8.1.1.7, §12.1, §18.2;
RFC 3581 rport).

Pure functions: `stamp_via` and `response_addr` route a response back to where its request
came from; `target_addr` picks the next hop of an in-dialog request (with `learn_target`, the NAT
fix-up of a private Contact); `via` and `contact` are the headers that tell the far end where
to reach us. Host names are never resolved here: RFC 3263 (NAPTR/SRV/A, the targets and the
fail-over rule) is `locate.py`, run by the adapters.
"""

from __future__ import annotations

import ipaddress
import os

from gateway.errors import SipParseError
from gateway.sip import sdp as sdpmod
from gateway.sip.dialog import Dialog
from gateway.sip.message import Headers, SipRequest, SipUri, Via
from gateway.sip.transaction import Address

#: RFC 3263 §4.2: the port of a URI that names none, by transport
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def new_tag() -> str:
    """A From/To tag, or part of a Call-ID: 48 random bits (§19.3)."""
    return os.urandom(6).hex()


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + os.urandom(8).hex()


def hostport(host: str, port: int, tls_port: int, transport: str = "udp") -> str:
    """`host:port` as we advertise it for `transport` (the TLS port over TLS, when served)."""
    host = f"[{host}]" if ":" in host else host
    chosen = tls_port if transport == "tls" and tls_port else None
    return f"{host}:{chosen or port}"


def via(ours: str, dest: Address, branch: str, alias: bool = False) -> str:
    """Our Via for a request to `dest`; `ours` is `hostport()` for its transport. RFC 3581.
    `alias` (RFC 5923 §5): requests back to `ours` may reuse this connection (TLS with no TLS
    listener of ours: there is nowhere else they could come)."""
    tail = ";alias" if alias else ""
    return f"SIP/2.0/{dest.transport.upper()} {ours};branch={branch};rport{tail}"


def contact(user: str, ours: str, dest: Address, sips: bool = False) -> str:
    """Our Contact for messages to `dest`. A dialog set up with a sips: Request-URI gets a sips:
    Contact over TLS (§12.1.1); anything else over TLS gets sip:...;transport=tls, which is what
    phones dialling sip:...;transport=tls can follow."""
    if sips and dest.transport == "tls":
        return f"<sips:{user}@{ours}>"
    transport = f";transport={dest.transport}" if dest.transport != "udp" else ""
    return f"<sip:{user}@{ours}{transport}>"


def uri_address(uri: SipUri) -> Address:
    """Transport, host and port of a URI's IP literal (or name, resolved by the adapter); the
    port defaults by transport (5061 over TLS, RFC 3263 §4.2)."""
    transport = uri_transport(uri)
    return Address(transport, uri.host, uri.port or DEFAULT_PORTS.get(transport, 5060))


def stamp_via(request: SipRequest, addr: Address) -> None:
    """§18.2.1 received=, RFC 3581 rport=: remember where the request really came from."""
    if addr.reliable:
        return
    vias = request.headers.get_all("Via")
    if not vias:
        raise SipParseError("missing Via")
    top = Via.parse(vias[0])
    params = dict(top.params)
    if top.host != addr.host:
        params["received"] = addr.host
    if "rport" in params:
        params["rport"] = str(addr.port)
        params.setdefault("received", addr.host)
    if params == top.params:
        return
    new_top = str(Via(top.transport, top.host, top.port, params))
    others = [(n, v) for n, v in request.headers if n != "Via"]
    request.headers = Headers([("Via", v) for v in (new_top, *vias[1:])] + others)


def response_addr(request: SipRequest, addr: Address) -> Address:
    """§18.2.2 with RFC 3581: where a response to `request` from `addr` goes."""
    if addr.reliable:
        return addr
    vias = request.headers.get_all("Via")
    if not vias:
        raise SipParseError("missing Via")
    top = Via.parse(vias[0])
    host = top.received or top.host
    port = top.rport or top.port or 5060
    if top.received is None and top.rport is None and top.host == addr.host:
        port = top.port or 5060
    return Address(addr.transport, host, port, None)


#: addresses a Contact may carry that cannot be reached from elsewhere: RFC 1918, RFC 6598
#: shared (carrier-grade NAT), link-local, loopback, RFC 4193 unique local, unspecified
_UNREACHABLE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "0.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
        "::/128",
    )
)


def is_private(host: str) -> bool:
    """An IP literal from a range that is unreachable from elsewhere (see _UNREACHABLE_NETS)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in _UNREACHABLE_NETS if net.version == ip.version)


def nat_source(contact: str, source: Address) -> Address | None:
    """The address to use instead of a Contact that cannot be reached: `source` (where the
    message that carried it came from) when the Contact's host is a private, loopback or
    link-local IP literal that differs from the source's; None when the Contact is usable.
    Asterisk's `rewrite_contact`, Kamailio's `nat_uac_test` + `fix_nated_contact`."""
    try:
        host = SipUri.parse(contact).host
    except (SipParseError, ValueError):
        return None
    if host == source.host or not is_private(host):
        return None
    return source


def learn_target(dialog: Dialog, source: Address | None) -> None:
    """After the remote target was set or refreshed by a message from `source`: remember where
    in-dialog requests really go (`Dialog.remote_address`), or forget it if the new Contact is
    reachable."""
    if source is not None:
        dialog.remote_address = nat_source(dialog.remote_target, source)


def uri_transport(uri: SipUri, default: str = "udp") -> str:
    """The transport a URI asks for: `sips:` is TLS (§26.2.2), else its `transport=` parameter
    (udp, tcp, tls); `default` when it names none we serve."""
    if uri.scheme == "sips":
        return "tls"
    transport = str(uri.params.get("transport") or "").lower()
    return transport if transport in ("udp", "tcp", "tls") else default


def target_addr(peer: Address, dialog: Dialog | None) -> Address:
    """Where in-dialog requests go (§12.2.1.1, §18.1.1): the first route, else the remote
    target; its `transport=` (or `sips:`) decides the transport, else the peer's. With no
    route set, a remote target behind NAT is reached at `Dialog.remote_address`. A stream
    peer's connection is reused for a next hop over its own transport, and a host name on
    the peer's transport goes to the peer (names are resolved elsewhere). A TLS next hop of a
    dialog that came in over TLS is reached on that connection while it lasts, else by a new
    one to the hop (RFC 5923 §5 style reuse: `conn` is tried first, then host and port)."""
    if dialog is None:
        return peer
    if not dialog.route_set and dialog.remote_address is not None:
        return dialog.remote_address
    uri = dialog.next_hop_uri()
    transport = uri_transport(uri, peer.transport)
    if transport == "tls" and peer.conn is not None and sdpmod.is_ip(uri.host):
        # a dialog that came in over TLS (a connection we accepted)
        return Address(
            "tls",
            uri.host,
            uri.port or DEFAULT_PORTS["tls"],
            peer.conn if peer.transport == "tls" else None,
        )
    if transport == peer.transport and (peer.reliable or not sdpmod.is_ip(uri.host)):
        return peer
    port = uri.port or DEFAULT_PORTS[transport]
    return Address(transport, uri.host, port, None)
