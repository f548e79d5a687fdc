"""A test-only application on a real SipTransport: auto-answers calls with SDP, no media."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.sip.auth import DigestServer
from gateway.sip.events import (
    CallAcked,
    CallCancelled,
    CallEndedByRemote,
    IncomingCallReceived,
    SipEvent,
)
from gateway.sip.policy import SourcePolicy
from gateway.sip.sdp import make_offer, negotiate
from gateway.sip.transport import SipTransport
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig


@dataclass
class AutoAnswer:
    """How the app behaves: ring first, answer after a delay, hang up after N seconds."""

    ring: bool = False
    answer_delay: float = 0.0
    hangup_after: float | None = None
    max_calls: int = 1000


@dataclass
class AnsweringApp:
    transport: SipTransport
    endpoint: SipEndpoint
    behaviour: AutoAnswer
    events: list[SipEvent] = field(default_factory=list)
    _handles: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    media_port: int = 40000

    @property
    def port(self) -> int:
        return self.transport.port

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def on_event(self, event: SipEvent) -> None:
        self.events.append(event)
        loop = asyncio.get_running_loop()
        if isinstance(event, IncomingCallReceived):
            if self.endpoint.active_calls > self.behaviour.max_calls:
                self.endpoint.reject(
                    event.call, 503, loop.time(), "capacity", [("Retry-After", "5")]
                )
                return
            if self.behaviour.ring:
                self.endpoint.ring(event.call, loop.time())
            if self.behaviour.answer_delay:
                self._handles[event.call] = loop.call_later(
                    self.behaviour.answer_delay, self._answer, event
                )
            else:
                self._answer(event)
        elif isinstance(event, CallAcked) and self.behaviour.hangup_after is not None:
            self._handles[event.call] = loop.call_later(
                self.behaviour.hangup_after, self._hangup, event.call
            )
        elif isinstance(event, CallCancelled | CallEndedByRemote):
            handle = self._handles.pop(event.call, None)
            if handle is not None:
                handle.cancel()

    def _answer(self, event: IncomingCallReceived) -> None:
        now = asyncio.get_running_loop().time()
        self._handles.pop(event.call, None)
        self.media_port += 2
        if event.offer is not None:
            sdp = negotiate(event.offer, "127.0.0.1", self.media_port).answer
        else:
            sdp = make_offer("127.0.0.1", self.media_port)
        self.endpoint.accept(event.call, sdp, now)
        self.transport.flush()

    def _hangup(self, call: int) -> None:
        self._handles.pop(call, None)
        self.endpoint.hangup(call, asyncio.get_running_loop().time())
        self.transport.flush()

    async def aclose(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        await self.transport.aclose()


async def start_app(
    behaviour: AutoAnswer | None = None,
    *,
    policy: SourcePolicy | None = None,
    auth: DigestServer | None = None,
    host: str = "127.0.0.1",
) -> AnsweringApp:
    endpoint = SipEndpoint(EndpointConfig(host, 0), policy=policy, auth=auth)
    transport = SipTransport(endpoint, lambda ev: None)
    app = AnsweringApp(transport, endpoint, behaviour or AutoAnswer())
    transport.on_event = app.on_event
    await transport.start(host, 0)
    assert endpoint.config.port == transport.port  # the transport filled in the bound port
    return app
