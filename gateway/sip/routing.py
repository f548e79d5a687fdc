"""Where SIP messages go, and how we name ourselves in them (RFC 3261 §8.1.1.7, §12.1, §18.2;
RFC 3581 rport).

Pure functions: `stamp_via` and `response_addr` route a response back to where its request
came from; `target_addr` picks the next hop of an in-dialog request; `via` and `contact` are the
headers that tell the far end where to reach us. Host names are never resolved here (the
adapter resolves them off the loop); RFC 3263 (NAPTR/SRV, fail-over between targets) belongs
in this module when it comes.
"""

from __future__ import annotations

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


def uri_transport(uri: SipUri) -> str:
    """The transport a URI is reached over: TLS for any sips: URI (§26.2.2; a sips: URI with
    transport=tcp still means TLS over TCP, RFC 5630 §3.1), else its transport parameter."""
    return "tls" if uri.scheme == "sips" else uri.transport


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


def target_addr(peer: Address, dialog: Dialog | None) -> Address:
    """Where in-dialog requests go: the next hop's IP literal, else the peer's address.

    A next hop that is sips: or ;transport=tls is reached over TLS (§26.2.2): on a dialog that
    came in over TLS, on the connection it came in on while that lasts, else by a new one to
    the next hop (RFC 5923 §5 style reuse: `conn` is tried first, then host and port)."""
    if dialog is None:
        return peer
    uri = dialog.next_hop_uri()
    if not sdpmod.is_ip(uri.host):
        return peer
    if uri_transport(uri) == "tls" and (peer.transport != "tls" or peer.conn is not None):
        hop = uri_address(uri)
        return hop._replace(conn=peer.conn if peer.transport == "tls" else None)
    if peer.reliable:
        return peer
    return Address(peer.transport, uri.host, uri.port or 5060, None)
