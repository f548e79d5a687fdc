"""SipEndpoint cores in memory, with simulated time: `PairNet` wires two (or more) with a loss
filter, `RawPeer` is a hand-written peer that sends text (`invite_text`, `in_dialog`) to one,
and `events_of` picks the events of one type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.sip.events import SipEvent
from gateway.sip.message import SipRequest, SipResponse, parse
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig


def events_of(events: list[Any], kind: type) -> list[Any]:
    """The events of type `kind`, in order."""
    return [e for e in events if isinstance(e, kind)]


class PairNet:
    """Endpoints keyed by host; `flush()` delivers, `advance(t)` runs timers up to time t."""

    def __init__(self, *endpoints: SipEndpoint) -> None:
        self.endpoints = {ep.config.host: ep for ep in endpoints}
        self.now = 0.0
        self.drop: Callable[[SipRequest | SipResponse, str, str], bool] = lambda m, s, d: False
        self.wire: list[tuple[str, str, SipRequest | SipResponse]] = []
        self.events: dict[str, list[SipEvent]] = {h: [] for h in self.endpoints}

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for host, ep in self.endpoints.items():
                for data, dst in ep.messages_to_send():
                    moved = True
                    msg = parse(data)
                    self.wire.append((host, dst.host, msg))
                    if self.drop(msg, host, dst.host):
                        continue
                    target = self.endpoints.get(dst.host)
                    if target is not None:
                        src = Address("udp", host, ep.config.port)
                        target.receive(data, src, self.now)
                while (ev := ep.next_event()) is not None:
                    self.events[host].append(ev)

    def advance(self, until: float) -> None:
        self.flush()
        while True:
            timers = [
                (t, h) for h, ep in self.endpoints.items() if (t := ep.get_timer()) is not None
            ]
            if not timers:
                break
            when, host = min(timers)
            if when > until:
                break
            self.now = max(self.now, when)
            self.endpoints[host].handle_timer(self.now)
            self.flush()
        self.now = until

    def take(self, host: str) -> list[SipEvent]:
        self.flush()
        out, self.events[host] = self.events[host], []
        return out

    def sent(self, src: str, kind: str) -> list[SipRequest | SipResponse]:
        """Messages sent by `src`: a method name, or a status code as text."""
        out: list[SipRequest | SipResponse] = []
        for s, _, m in self.wire:
            if s != src:
                continue
            label = m.method if isinstance(m, SipRequest) else str(m.status)
            if label == kind:
                out.append(m)
        return out


def make_pair() -> tuple[PairNet, SipEndpoint, SipEndpoint]:
    """A UAC at 10.0.0.1 and a UAS at 10.0.0.2, both on port 5060, wired by a `PairNet`."""
    uac = SipEndpoint(EndpointConfig("10.0.0.1", 5060))
    uas = SipEndpoint(EndpointConfig("10.0.0.2", 5060))
    return PairNet(uac, uas), uac, uas


class RawPeer:
    """A hand-written SIP peer: sends text, parses what the endpoint answers."""

    def __init__(self, endpoint: SipEndpoint, host: str = "10.0.0.5", port: int = 5062) -> None:
        self.endpoint = endpoint
        self.addr = Address("udp", host, port)
        self.host, self.port = host, port

    def send(self, text: str, now: float = 0.0) -> list[SipResponse | SipRequest]:
        """Deliver `text` (LF or CRLF line ends) to the endpoint; what it sends back, parsed."""
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        if b"\r\n\r\n" not in data:
            data += b"\r\n"
        self.endpoint.receive(data, self.addr, now)
        return [parse(d) for d, _ in self.endpoint.messages_to_send()]

    def events(self) -> list[Any]:
        """The endpoint's events so far, taken."""
        out = []
        while (e := self.endpoint.next_event()) is not None:
            out.append(e)
        return out


def invite_text(
    peer: RawPeer,
    *,
    branch: str = "z9hG4bK-r1",
    body: str | None = None,
    extra: str = "",
    call_id: str = "raw-1",
) -> str:
    """An INVITE from `peer` to bot@10.0.0.2 with an SDP offer (PCMA, telephone-event, 30 ms)
    unless `body` is given; `extra` header lines go before Content-Type."""
    sdp = (
        body
        if body is not None
        else (
            "v=0\no=- 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n"
            "m=audio 7000 RTP/AVP 8 96\na=rtpmap:96 telephone-event/8000\na=ptime:30\n"
        )
    )
    sdp = sdp.replace("\n", "\r\n")
    ctype = "Content-Type: application/sdp\n" if sdp else ""
    return (
        f"INVITE sip:bot@10.0.0.2 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch={branch};rport\n"
        f"From: <sip:peer@{peer.host}>;tag=p1\nTo: <sip:bot@10.0.0.2>\nCall-ID: {call_id}\n"
        f"CSeq: 1 INVITE\nContact: <sip:peer@{peer.host}:{peer.port}>\nMax-Forwards: 70\n"
        f"{extra}{ctype}Content-Length: {len(sdp.encode())}\n\n{sdp}"
    )


def in_dialog(
    peer: RawPeer,
    method: str,
    to_tag: str,
    cseq: int,
    *,
    extra: str = "",
    body: str = "",
    branch: str | None = None,
    call_id: str = "raw-1",
) -> str:
    """An in-dialog request from `peer` (the dialog `invite_text` opened, the UAS's `to_tag`)."""
    body = body.replace("\n", "\r\n")
    branch = branch or f"z9hG4bK-{method}{cseq}"
    return (
        f"{method} sip:gateway@10.0.0.2:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch={branch}\n"
        f"From: <sip:peer@{peer.host}>;tag=p1\nTo: <sip:bot@10.0.0.2>;tag={to_tag}\n"
        f"Call-ID: {call_id}\nCSeq: {cseq} {method}\nMax-Forwards: 70\n{extra}"
        f"Content-Length: {len(body.encode())}\n\n{body}"
    )
