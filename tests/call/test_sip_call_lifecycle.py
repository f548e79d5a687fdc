"""No call without its dialog, no dialog without its call (issue 13, item 1).

The real SIP user agent, SIP adapter, SIP call service, call service, calls, RTP sockets and the
embedded local provider run on one loop in simulated time (tests/support/simloop.py). A hand-written
phone sends INVITE, ACK, BYE and CANCEL in any order Hypothesis picks, and the provider's
connect succeeds or fails at any point among them. After every step, once the system is at
rest, the set of live dialogs in the user agent must equal the set of calls (in set-up or
running) in the call service; at the end everything is freed: ports, slots, provider sessions,
tasks.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.call.default_scenario import TOOLS
from gateway.call.default_scenario import setup as default_setup
from gateway.call.manager import CallManager
from gateway.call.service import CallService, default_client_factory
from gateway.errors import ConnectError
from gateway.legs.sip.service import SipCallService
from gateway.media.clock import MediaClocks
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from gateway.rtp.ports import PortPool
from gateway.sip.call_state import CallState
from gateway.sip.message import SipRequest, SipResponse, parse
from gateway.sip.transaction import Address
from gateway.sip.transport import SipTransport
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.gateway import rtp_range
from tests.support.gateway import settings as gateway_settings
from tests.support.simloop import SimulatedTimeLoop

GW = ("127.0.0.1", 5060)
PHONE = Address("udp", "127.0.0.1", 5098)
CONNECT_TIMEOUT = 10.0  # a provider that never answers fails like a real connect timeout
_call_ids = itertools.count()


class _Wire:
    """The SIP adapter's UDP socket, in memory: what the gateway sends reaches the phone."""

    def __init__(self, phone: Phone) -> None:
        self.phone = phone

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.phone.received(parse(data))

    def close(self) -> None:
        pass


@dataclass
class Phone:
    """A UAC that sends what it is told, in any order, and answers the gateway's BYE."""

    transport: SipTransport | None = None
    racy: bool = False  # ACK and BYE back to back as soon as the 2xx arrives
    call_id: str = ""
    to_tag: str | None = None
    final: int | None = None
    cseq: int = 1
    said_bye: bool = False
    got: list[SipRequest | SipResponse] = field(default_factory=list)

    def _send(self, text: str) -> None:
        # delivered on the next loop pass, as a datagram would be, never inside the sender
        assert self.transport is not None
        data = text.replace("\n", "\r\n").encode()
        self.transport.loop.call_soon(self.transport._received, data, PHONE)

    def _headers(self, method: str, cseq: int, branch: str, to_tag: str | None) -> str:
        to = f"<sip:bot@{GW[0]}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"Via: SIP/2.0/UDP {PHONE.host}:{PHONE.port};branch={branch};rport\n"
            f"From: <sip:phone@{PHONE.host}>;tag=ph1\nTo: {to}\nCall-ID: {self.call_id}\n"
            f"CSeq: {cseq} {method}\nMax-Forwards: 70\n"
        )

    def invite(self) -> None:
        self.call_id = f"lifecycle-{next(_call_ids)}"
        sdp = (
            f"v=0\no=- 1 1 IN IP4 {PHONE.host}\ns=-\nc=IN IP4 {PHONE.host}\nt=0 0\n"
            "m=audio 7000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n"
        ).replace("\n", "\r\n")
        self._send(
            f"INVITE sip:bot@{GW[0]}:{GW[1]} SIP/2.0\n"
            + self._headers("INVITE", 1, "z9hG4bK-inv", None)
            + f"Contact: <sip:phone@{PHONE.host}:{PHONE.port}>\n"
            f"Content-Type: application/sdp\nContent-Length: {len(sdp)}\n\n{sdp}"
        )

    def invite_retransmit(self) -> None:
        if self.call_id:  # the same INVITE again (same branch): absorbed by its transaction
            call_id, self.call_id = self.call_id, self.call_id
            sdp = (
                f"v=0\no=- 1 1 IN IP4 {PHONE.host}\ns=-\nc=IN IP4 {PHONE.host}\nt=0 0\n"
                "m=audio 7000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n"
            ).replace("\n", "\r\n")
            self._send(
                f"INVITE sip:bot@{GW[0]}:{GW[1]} SIP/2.0\n"
                + self._headers("INVITE", 1, "z9hG4bK-inv", None)
                + f"Contact: <sip:phone@{PHONE.host}:{PHONE.port}>\n"
                f"Content-Type: application/sdp\nContent-Length: {len(sdp)}\n\n{sdp}"
            )
            self.call_id = call_id

    def ack(self) -> None:
        # after a 2xx: a new transaction; before it: a stray ACK the gateway must ignore
        self._send(
            f"ACK sip:bot@{GW[0]}:{GW[1]} SIP/2.0\n"
            + self._headers("ACK", 1, "z9hG4bK-ack", self.to_tag)
            + "Content-Length: 0\n\n"
        )

    def bye(self) -> None:
        self.said_bye = True
        self.cseq += 1
        self._send(
            f"BYE sip:bot@{GW[0]}:{GW[1]} SIP/2.0\n"
            + self._headers("BYE", self.cseq, f"z9hG4bK-bye{self.cseq}", self.to_tag)
            + "Content-Length: 0\n\n"
        )

    def cancel(self) -> None:
        self._send(
            f"CANCEL sip:bot@{GW[0]}:{GW[1]} SIP/2.0\n"
            + self._headers("CANCEL", 1, "z9hG4bK-inv", None)
            + "Content-Length: 0\n\n"
        )

    def received(self, msg: SipRequest | SipResponse) -> None:
        self.got.append(msg)
        if isinstance(msg, SipResponse):
            if msg.cseq.method == "INVITE":
                if msg.to.tag and msg.status > 100:
                    self.to_tag = msg.to.tag
                if msg.status >= 200:
                    first = self.final is None
                    self.final = msg.status
                    if first and self.racy and msg.status < 300:
                        self.ack()
                        self.bye()
            return
        if msg.method == "BYE":  # the gateway hangs up: answer 200 like any phone
            via = msg.headers.get_all("Via")[0]
            self._send(
                f"SIP/2.0 200 OK\nVia: {via}\nFrom: {msg.headers.get('From')}\n"
                f"To: {msg.headers.get('To')}\nCall-ID: {msg.call_id}\n"
                f"CSeq: {msg.cseq.seq} BYE\nContent-Length: 0\n\n"
            )


class ProviderGate:
    """Holds each session's connect until the test says `ready` or `fail`."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []

    def factory(self, profile: Any, config: Any) -> Any:
        client = default_client_factory(profile, config)
        connect = client.connect
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(gate)

        async def gated_connect() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(gate), CONNECT_TIMEOUT)
            except TimeoutError:
                raise ConnectError("local", reason="connect timeout") from None
            await connect()

        client.connect = gated_connect  # type: ignore[method-assign]
        return client

    def resolve(self, ok: bool) -> None:
        for gate in self.waiting:
            if not gate.done():
                if ok:
                    gate.set_result(None)
                else:
                    gate.set_exception(ConnectError("local", 503, "provider down"))
                    gate.exception()  # seen here: no "never retrieved" warning if unawaited


class World:
    """The gateway's SIP call path with its real parts, minus the SIP socket."""

    def __init__(self, loop: SimulatedTimeLoop, ringing: bool, racy: bool) -> None:
        self.loop = loop
        self.ringing = ringing
        self.phone = Phone(racy=racy)
        self.gate = ProviderGate()

    async def start(self) -> None:
        self.provider = LocalProvider("openai", use_espeak=False)
        url = await self.provider.start()
        profile = make_profile("local", base_url=url)
        s = gateway_settings()
        self.manager = CallManager(10)
        self.calls = CallService(s, profile, self.manager, default_setup, TOOLS, self.gate.factory)
        self.clocks = MediaClocks(self.loop)
        self.endpoint = SipEndpoint(EndpointConfig(host=GW[0], port=GW[1]))
        lo, hi = (int(p) for p in rtp_range().split("-"))
        self.sip = SipCallService(
            self.endpoint,
            self.calls,
            PortPool(lo, hi),
            self.clocks.for_ptime,
            rtp_bind="127.0.0.1",
            public_address="127.0.0.1",
            ringing=self.ringing,
        )
        self.transport = SipTransport(self.endpoint, self.sip.on_event)
        self.transport._udp = _Wire(self.phone)  # type: ignore[assignment]
        self.sip.transport = self.transport
        self.phone.transport = self.transport

    async def stop(self) -> None:
        await self.manager.end_all("shutdown")
        await self.sip.aclose()
        await self.transport.aclose()
        self.clocks.close()
        await self.provider.stop()

    # --- what the invariant compares

    def live_dialogs(self) -> set[int]:
        live = (
            CallState.INCOMING,
            CallState.ANSWERED,
            CallState.BYE_AFTER_ACK,
            CallState.CONFIRMED,
            CallState.REINVITING,
            CallState.REINVITED,
            CallState.REINVITED_NO_OFFER,
        )
        return {h for h, c in self.endpoint._core.calls.items() if c.state in live}

    def live_calls(self) -> set[int]:
        running = {h for h, call in self.sip._calls.items() if call.state != "ended"}
        return set(self.sip._pending) | running

    def leftovers(self) -> dict[str, object]:
        return {
            "dialogs": self.endpoint.active_calls,
            "calls": len(self.manager.calls),
            "reserved": self.manager._reserved,
            "ports": self.sip.ports.in_use,
            "setups": len(self.sip._tasks),
            "legs": len(self.sip._legs),
            "provider_sessions": self.provider.active_sessions,
            "clock": len(self.clocks.for_ptime(20)),
        }


ACTIONS = ("ack", "bye", "cancel", "ready", "fail", "wait", "invite_again")


def check_invariant(world: World, when: str) -> None:
    dialogs, calls = world.live_dialogs(), world.live_calls()
    assert dialogs == calls, f"{when}: dialogs {dialogs} != calls {calls}"


def play(
    actions: list[str], ringing: bool, racy: bool = False, hang_up_at_end: bool = True
) -> World:
    """INVITE, then `actions` with the system at rest after each; then the phone and the
    provider give up, time runs out every timer, and the call must be gone."""
    loop = SimulatedTimeLoop()
    world = World(loop, ringing, racy)
    try:
        loop.run_until_complete(world.start())
        phone = world.phone
        phone.invite()
        loop.advance(0.05)
        check_invariant(world, "after INVITE")
        for action in actions:
            if action in ("ready", "fail"):
                world.gate.resolve(action == "ready")
            elif action == "wait":
                loop.advance(0.5)
            elif action == "invite_again":
                phone.invite_retransmit()
            else:
                getattr(phone, action)()
            loop.advance(0.05)
            check_invariant(world, f"after {action} in {actions}")
        # the end: a connected phone hangs up, every timer runs out
        answered = phone.final is not None and 200 <= phone.final < 300
        if answered and hang_up_at_end and not phone.said_bye:
            phone.ack()
            phone.bye()
        loop.advance(CONNECT_TIMEOUT + 1)
        check_invariant(world, f"after the provider's timeout, {actions}")
        loop.advance(40.0)  # 64*T1 for ACK and BYE transactions, the 30 s RTP timeout
        check_invariant(world, f"at the end of {actions}")
        assert world.leftovers() == {
            "dialogs": 0,
            "calls": 0,
            "reserved": 0,
            "ports": 0,
            "setups": 0,
            "legs": 0,
            "provider_sessions": 0,
            "clock": 0,
        }, f"left behind after {actions}"
        return world
    finally:
        loop.run_until_complete(world.stop())
        loop.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    actions=st.lists(st.sampled_from(ACTIONS), max_size=7),
    ringing=st.booleans(),
    racy=st.booleans(),
)
def test_no_call_without_its_dialog_nor_dialog_without_its_call(
    actions: list[str], ringing: bool, racy: bool
) -> None:
    play(actions, ringing, racy)


@pytest.mark.parametrize(
    "actions",
    [
        ["ready", "ack", "bye"],  # the ordinary call
        ["ready", "ack", "wait", "bye"],
        ["cancel", "ready"],  # CANCEL while the model connects
        ["fail"],  # provider down: 503
        ["ready", "bye"],  # BYE before ACK
        ["ready"],  # no ACK ever: 64*T1, then BYE
        ["bye", "ready"],  # BYE in the early dialog (after 180 with a tag)
        ["wait", "wait"],  # the provider never answers: connect timeout, 503
    ],
)
@pytest.mark.parametrize("ringing", [False, True])
def test_known_orderings(actions: list[str], ringing: bool) -> None:
    world = play(actions, ringing)
    if actions[0] == "ready":
        assert world.phone.final == 200
    if actions == ["fail"]:
        assert world.phone.final == 503
    if actions[0] == "cancel":
        assert world.phone.final == 487


def test_ack_and_bye_back_to_back_end_the_call() -> None:
    """The field defect: ACK and BYE in one burst, before the call's task first runs."""
    world = play(["ready"], ringing=False, racy=True)
    assert world.phone.final == 200
    byes = [m for m in world.phone.got if isinstance(m, SipResponse) and m.cseq.method == "BYE"]
    assert [m.status for m in byes] == [200]


def test_a_phone_that_vanishes_after_the_ack_is_hung_up_by_the_rtp_timeout() -> None:
    """No BYE, no RTP ever: the call ends 30 s after the answer (the gateway sends BYE)."""
    world = play(["ready", "ack"], ringing=False, hang_up_at_end=False)
    byes = [m for m in world.phone.got if isinstance(m, SipRequest) and m.method == "BYE"]
    assert len(byes) == 1


@pytest.mark.parametrize("acked", [True, False], ids=["ack_late", "no_ack_ever"])
def test_a_transfer_before_the_ack_waits_for_it(acked: bool) -> None:
    """The call runs from our 2xx on, and an app's `refer` (or the model's transfer_call) may
    come before the caller's ACK: the REFER waits until the dialog is confirmed (RFC 3261
    §13.3.1.4), not refused as a state error (the CI race, 2026-12-07). No ACK ever: the call
    ends at Timer H and the transfer fails with ValueError."""
    loop = SimulatedTimeLoop()
    world = World(loop, ringing=False, racy=False)
    try:
        loop.run_until_complete(world.start())
        phone = world.phone
        phone.invite()
        loop.advance(0.05)
        world.gate.resolve(True)
        loop.advance(0.2)
        assert phone.final == 200
        [call] = world.sip._calls.values()
        transfer = loop.create_task(call.refer("sip:operator@127.0.0.1:5099"))
        loop.advance(1.5)  # the 2xx is retransmitted meanwhile; no REFER yet
        refers = [m for m in phone.got if isinstance(m, SipRequest) and m.method == "REFER"]
        assert refers == [] and not transfer.done()
        if acked:
            phone.ack()
            loop.advance(0.05)
            assert transfer.done() and transfer.exception() is None
            [refer] = [m for m in phone.got if isinstance(m, SipRequest) and m.method == "REFER"]
            assert refer.headers.get("Refer-To") == "<sip:operator@127.0.0.1:5099>"
            phone.bye()
        loop.advance(40.0)  # Timer H without an ACK; the REFER's transaction times out
        assert transfer.done()
        if not acked:
            assert isinstance(transfer.exception(), ValueError)
            refers = [m for m in phone.got if isinstance(m, SipRequest) and m.method == "REFER"]
            assert refers == []
        assert world.leftovers()["calls"] == 0 and world.sip._confirm_waiters == {}
    finally:
        loop.run_until_complete(world.stop())
        loop.close()
