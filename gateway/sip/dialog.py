"""SIP dialogs (RFC 3261 §12): identity, CSeq both ways, route set and remote target.

Pure data and request building; the endpoint drives 2xx retransmission and timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.sip.message import Headers, NameAddr, SipRequest, SipResponse, SipUri
from gateway.sip.transaction import Address


@dataclass(slots=True)
class Dialog:
    """One dialog. `local_party`/`remote_party` are From/To values with their tags."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str
    remote_party: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    secure: bool = False
    #: where in-dialog requests really go when the remote target is unreachable (a private
    #: Contact behind NAT): the source of the message that set it (routing.learn_target). The
    #: Request-URI stays `remote_target` (§12.2.1.1).
    remote_address: Address | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str) -> Dialog:
        """§12.1.1: built from the INVITE when we answer it."""
        remote = request.from_
        contacts = request.contacts
        target = str(contacts[0].uri) if contacts else str(remote.uri)
        local = NameAddr.parse_any(request.headers.get("To") or "").with_tag(local_tag)
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local_party=str(local),
            remote_party=request.headers.get("From") or "",
            local_seq=0,
            remote_seq=request.cseq.seq,
            remote_target=target,
            route_set=[str(r) for r in request.record_routes],
            secure=request.uri.lower().startswith("sips:"),
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: built from our INVITE and its 2xx; the route set is Record-Route reversed."""
        contacts = response.contacts
        to = response.to
        target = str(contacts[0].uri) if contacts else str(to.uri)
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=to.tag or "",
            local_party=request.headers.get("From") or "",
            remote_party=response.headers.get("To") or "",
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=target,
            route_set=[str(r) for r in reversed(response.record_routes)],
            secure=request.uri.lower().startswith("sips:"),
        )

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """§12.2.2: False if the request's CSeq is lower than the last one (answer 500)."""
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        if self.remote_seq is None or seq > self.remote_seq:
            self.remote_seq = seq
        return True

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """§12.2: a target refresh (re-INVITE, UPDATE, their 2xx) updates the remote target."""
        contacts = message.contacts
        if contacts:
            self.remote_target = str(contacts[0].uri)

    def next_hop_uri(self) -> SipUri:
        """Where in-dialog requests go: the first route, else the remote target (§12.2.1.1)."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return SipUri.parse(self.remote_target)

    def create_request(
        self,
        method: str,
        via: str,
        contact: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> SipRequest:
        """§12.2.1.1: an in-dialog request. ACK and CANCEL reuse a given `cseq`."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and "lr" not in NameAddr.parse(routes[0]).uri.params:
            # strict router: it goes in the Request-URI, the target at the end of Route
            uri = str(NameAddr.parse(routes[0]).uri)
            routes = [*routes[1:], f"<{self.remote_target}>"]
        h = Headers()
        h.add("Via", via)
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", self.local_party)
        h.add("To", self.remote_party)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if method not in ("ACK", "CANCEL", "BYE"):
            h.add("Contact", contact)
        for name, value in headers:
            h.add(name, value)
        return SipRequest(method, uri, h, body)
