"""Two (or more) SipEndpoints wired in memory with simulated time and a loss filter."""

from __future__ import annotations

from collections.abc import Callable

from gateway.sip.events import SipEvent
from gateway.sip.message import SipRequest, SipResponse, parse
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig


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
    uac = SipEndpoint(EndpointConfig("10.0.0.1", 5060))
    uas = SipEndpoint(EndpointConfig("10.0.0.2", 5060))
    return PairNet(uac, uas), uac, uas
