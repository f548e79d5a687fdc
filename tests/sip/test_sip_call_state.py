"""The call state table (gateway/sip/call_state.py), checked h2 style against real endpoints.

A recipe brings a real call into one state (two `SipEndpoint`s in a `PairNet`, simulated time,
messages dropped where the recipe needs it); an injector then produces one input the way the far
end, the application or time would (a request or response crafted from the dialog, a command,
the clock run to a deadline). Every transition the endpoint makes is recorded: each must be the
table's, and each input the table has no entry for must be reported (`UnexpectedInput`, or
`SipCallStateError` for a command) with the state left as it was. Hypothesis samples recipes and
runs of inputs; every recipe with every input, and a few longer scripts, reach every row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SipCallStateError
from gateway.secret import Secret
from gateway.sip.auth import Credentials, DigestServer
from gateway.sip.call_state import COMMANDS, REQUESTS, ROWS, STEPS, TABLE, CallInput, CallState
from gateway.sip.events import UnexpectedInput
from gateway.sip.message import REASONS, Headers, SipRequest, SipResponse, make_response
from gateway.sip.sdp import SessionDescription, make_offer, negotiate
from gateway.sip.session_timer import session_expires
from gateway.sip.transaction import Address, ClientTransaction, build_cancel
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import ALLOW, CALL_TIMERS, EndpointConfig, SipCall, Trigger
from tests.support.sip_memory import PairNet

A, B, RAW = "10.0.0.1", "10.0.0.2", "10.0.0.3"  # caller, callee, a hand-written far end
S, In = CallState, CallInput


# --- the world: two endpoints, a lossy wire, and a record of every transition


@dataclass
class Transition:
    before: CallState
    input: CallInput
    after: CallState
    handle: int


@dataclass
class World:
    a: SipEndpoint
    b: SipEndpoint
    net: PairNet
    drops: list[Callable[[SipRequest | SipResponse, str], bool]] = field(default_factory=list)
    blackhole: bool = False
    seen: list[Transition] = field(default_factory=list)
    unexpected: list[UnexpectedInput] = field(default_factory=list)
    seq: int = 100

    def flush(self) -> None:
        self.net.flush()
        for host in (A, B):
            for event in self.net.take(host):
                if isinstance(event, UnexpectedInput):
                    self.unexpected.append(event)

    def advance(self, until: float) -> None:
        self.net.advance(until)
        self.flush()


def make_world() -> World:
    config = {"min_session_expires": 10, "answer_timeout": 60.0}
    a = SipEndpoint(EndpointConfig(A, 5060, **config))  # type: ignore[arg-type]
    b = SipEndpoint(EndpointConfig(B, 5060, **config))  # type: ignore[arg-type]
    world = World(a, b, PairNet(a, b))

    def drop(message: SipRequest | SipResponse, src: str, dst: str) -> bool:
        return world.blackhole or any(rule(message, src) for rule in world.drops)

    world.net.drop = drop
    for ep in (a, b):
        core = ep._core
        fire = core.fire

        def recording(call: SipCall, trigger: Trigger, fire: Callable[..., None] = fire) -> None:
            before = call.state
            fire(call, trigger)
            world.seen.append(Transition(before, trigger.input, call.state, call.handle))

        core.fire = recording  # type: ignore[method-assign]
    return world


def calls(ep: SipEndpoint) -> dict[int, SipCall]:
    return ep._core.calls


def client_tx(ep: SipEndpoint) -> list[tuple[ClientTransaction, int | None, str]]:
    return list(ep._core.client_tx.values())


def send_in_dialog(
    ep: SipEndpoint,
    call: SipCall,
    method: str,
    now: float,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    ep._core.send_in_dialog(call, method, now, headers)


def newest(ep: SipEndpoint) -> int:
    return max(calls(ep))


def dropping(method: str, src: str) -> Callable[[SipRequest | SipResponse, str], bool]:
    return lambda m, s: s == src and isinstance(m, SipRequest) and m.method == method


# --- recipes: a real call brought into one state; returns the endpoint under test and its call

SE = [("Session-Expires", "40;refresher=uac"), ("Supported", "timer")]


def _invite(
    w: World, headers: list[tuple[str, str]] = SE, alternates: tuple[Address, ...] = ()
) -> int:
    offer = make_offer(A, 4000)
    creds = Credentials("u", Secret("pw"))
    dest = Address("udp", B, 5060)
    return w.a.invite(
        f"sip:bot@{B}",
        offer,
        f"sip:x@{A}",
        dest,
        w.net.now,
        credentials=creds,
        headers=headers,
        alternates=alternates,
    )


def _accept(w: World) -> None:
    call = calls(w.b)[newest(w.b)]
    offer = call.remote_sdp
    assert offer is not None
    w.b.accept(call.handle, negotiate(offer, B, 5000).answer, w.net.now)
    w.flush()


def incoming(w: World) -> tuple[SipEndpoint, int]:
    _invite(w)
    w.flush()
    return w.b, newest(w.b)


def answered(w: World) -> tuple[SipEndpoint, int]:
    incoming(w)
    w.drops.append(dropping("ACK", A))
    _accept(w)
    return w.b, newest(w.b)


def answered_we_refresh(w: World) -> tuple[SipEndpoint, int]:
    """The caller asks us to refresh (RFC 4028 §9)."""
    _invite(w, [("Session-Expires", "20;refresher=uas")])
    w.flush()
    w.drops.append(dropping("ACK", A))
    _accept(w)
    return w.b, newest(w.b)


def answered_we_refresh_by_reinvite(w: World) -> tuple[SipEndpoint, int]:
    """The caller asks us to refresh, and its Allow lacks UPDATE (we would re-INVITE)."""
    _invite(w, [("Session-Expires", "20;refresher=uas")])
    ((data, _),) = w.a.messages_to_send()  # the INVITE, its Allow rewritten on the way
    data = data.replace(f"Allow: {ALLOW}".encode(), b"Allow: INVITE, ACK, CANCEL, BYE")
    w.b.receive(data, Address("udp", A, 5060), w.net.now)
    w.flush()
    w.drops.append(dropping("ACK", A))
    _accept(w)
    return w.b, newest(w.b)


def bye_after_ack(w: World) -> tuple[SipEndpoint, int]:
    ep, h = answered(w)
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def bye_after_ack_we_refresh(w: World) -> tuple[SipEndpoint, int]:
    ep, h = answered_we_refresh(w)
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def confirmed_uas(w: World) -> tuple[SipEndpoint, int]:
    incoming(w)
    _accept(w)
    return w.b, newest(w.b)


def confirmed_uac(w: World) -> tuple[SipEndpoint, int]:
    confirmed_uas(w)
    return w.a, newest(w.a)


def _reinviting(w: World, ep: SipEndpoint, h: int) -> tuple[SipEndpoint, int]:
    w.drops.append(dropping("INVITE", ep.config.host))
    ep.reinvite(h, make_offer(ep.config.host, 4002), w.net.now)
    w.flush()
    return ep, h


def reinviting_uas(w: World) -> tuple[SipEndpoint, int]:
    return _reinviting(w, *confirmed_uas(w))


def reinviting_uac(w: World) -> tuple[SipEndpoint, int]:
    return _reinviting(w, *confirmed_uac(w))


def _reinvited(w: World, ep: SipEndpoint, h: int, offer: bool) -> tuple[SipEndpoint, int]:
    peer = w.a if ep is w.b else w.b
    peer_call = calls(peer)[newest(peer)]
    w.drops.append(dropping("ACK", peer.config.host))
    if offer:
        peer.reinvite(peer_call.handle, make_offer(peer.config.host, 4004), w.net.now)
    else:  # our UA never sends an INVITE without an offer: the far end's, built from its dialog
        send_in_dialog(peer, peer_call, "INVITE", w.net.now, (("Supported", "timer"),))
    w.flush()
    return ep, h


def reinvited_uas(w: World) -> tuple[SipEndpoint, int]:
    return _reinvited(w, *confirmed_uas(w), offer=True)


def reinvited_uac(w: World) -> tuple[SipEndpoint, int]:
    return _reinvited(w, *confirmed_uac(w), offer=True)


def reinvited_no_offer_uas(w: World) -> tuple[SipEndpoint, int]:
    return _reinvited(w, *confirmed_uas(w), offer=False)


def reinvited_no_offer_uac(w: World) -> tuple[SipEndpoint, int]:
    return _reinvited(w, *confirmed_uac(w), offer=False)


def _ending(w: World, ep: SipEndpoint, h: int) -> tuple[SipEndpoint, int]:
    w.drops.append(dropping("BYE", ep.config.host))
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def ending_uas(w: World) -> tuple[SipEndpoint, int]:
    return _ending(w, *confirmed_uas(w))


def ending_uac(w: World) -> tuple[SipEndpoint, int]:
    return _ending(w, *confirmed_uac(w))


def calling(w: World) -> tuple[SipEndpoint, int]:
    w.drops.append(lambda m, s: s == A)
    _invite(w)
    w.flush()
    return w.a, newest(w.a)


def proceeding(w: World) -> tuple[SipEndpoint, int]:
    incoming(w)
    w.b.ring(newest(w.b), w.net.now)
    w.flush()
    return w.a, newest(w.a)


#: a second target of the trunk's name (RFC 3263 §4.3): the same far end on another port
ALTERNATE = (Address("udp", B, 5062),)


def calling_alt(w: World) -> tuple[SipEndpoint, int]:
    w.drops.append(lambda m, s: s == A)
    _invite(w, alternates=ALTERNATE)
    w.flush()
    return w.a, newest(w.a)


def proceeding_alt(w: World) -> tuple[SipEndpoint, int]:
    _invite(w, alternates=ALTERNATE)
    w.flush()
    w.b.ring(newest(w.b), w.net.now)
    w.flush()
    return w.a, newest(w.a)


def cancel_due_alt(w: World) -> tuple[SipEndpoint, int]:
    ep, h = calling_alt(w)
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def cancelling_alt(w: World) -> tuple[SipEndpoint, int]:
    ep, h = proceeding_alt(w)
    w.drops.append(dropping("CANCEL", A))
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def cancel_due(w: World) -> tuple[SipEndpoint, int]:
    ep, h = calling(w)
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


def cancelling(w: World) -> tuple[SipEndpoint, int]:
    ep, h = proceeding(w)
    w.drops.append(dropping("CANCEL", A))
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


REL = [*SE, ("Require", "100rel")]


def incoming_100rel(w: World) -> tuple[SipEndpoint, int]:
    _invite(w, REL)
    w.flush()
    return w.b, newest(w.b)


def await_prack(w: World) -> tuple[SipEndpoint, int]:
    incoming_100rel(w)
    w.drops.append(dropping("PRACK", A))
    w.b.ring(newest(w.b), w.net.now)
    w.flush()
    return w.b, newest(w.b)


def await_prack_late(w: World) -> tuple[SipEndpoint, int]:
    """Rung reliably late: the no-answer deadline comes before the PRACK's."""
    incoming_100rel(w)
    w.advance(50.0)
    w.drops.append(dropping("PRACK", A))
    w.b.ring(newest(w.b), w.net.now)
    w.flush()
    return w.b, newest(w.b)


def answer_held(w: World) -> tuple[SipEndpoint, int]:
    await_prack(w)
    _accept(w)
    return w.b, newest(w.b)


def proceeding_reliable(w: World) -> tuple[SipEndpoint, int]:
    incoming_100rel(w)
    w.b.ring(newest(w.b), w.net.now)
    w.flush()
    return w.a, newest(w.a)


def cancelling_reliable(w: World) -> tuple[SipEndpoint, int]:
    ep, h = proceeding_reliable(w)
    w.drops.append(dropping("CANCEL", A))
    ep.hangup(h, w.net.now)
    w.flush()
    return ep, h


Recipe = Callable[[World], tuple[SipEndpoint, int]]
Injector = Callable[[World, SipEndpoint, int], bool]  # False: the input cannot be made now
RECIPES: dict[str, tuple[CallState, Recipe]] = {
    "incoming": (S.INCOMING, incoming),
    "answered": (S.ANSWERED, answered),
    "answered_we_refresh": (S.ANSWERED, answered_we_refresh),
    "answered_we_refresh_by_reinvite": (S.ANSWERED, answered_we_refresh_by_reinvite),
    "bye_after_ack": (S.BYE_AFTER_ACK, bye_after_ack),
    "bye_after_ack_we_refresh": (S.BYE_AFTER_ACK, bye_after_ack_we_refresh),
    "calling": (S.CALLING, calling),
    "proceeding": (S.PROCEEDING, proceeding),
    "cancel_due": (S.CANCEL_DUE, cancel_due),
    "cancelling": (S.CANCELLING, cancelling),
    "calling_alt": (S.CALLING, calling_alt),
    "proceeding_alt": (S.PROCEEDING, proceeding_alt),
    "cancel_due_alt": (S.CANCEL_DUE, cancel_due_alt),
    "cancelling_alt": (S.CANCELLING, cancelling_alt),
    "confirmed_uas": (S.CONFIRMED, confirmed_uas),
    "confirmed_uac": (S.CONFIRMED, confirmed_uac),
    "reinviting_uas": (S.REINVITING, reinviting_uas),
    "reinviting_uac": (S.REINVITING, reinviting_uac),
    "reinvited_uas": (S.REINVITED, reinvited_uas),
    "reinvited_uac": (S.REINVITED, reinvited_uac),
    "reinvited_no_offer_uas": (S.REINVITED_NO_OFFER, reinvited_no_offer_uas),
    "reinvited_no_offer_uac": (S.REINVITED_NO_OFFER, reinvited_no_offer_uac),
    "ending_uas": (S.ENDING, ending_uas),
    "ending_uac": (S.ENDING, ending_uac),
    "incoming_100rel": (S.INCOMING, incoming_100rel),
    "await_prack": (S.AWAIT_PRACK, await_prack),
    "await_prack_late": (S.AWAIT_PRACK, await_prack_late),
    "answer_held": (S.ANSWER_HELD, answer_held),
    "proceeding_reliable": (S.PROCEEDING, proceeding_reliable),
    "cancelling_reliable": (S.CANCELLING, cancelling_reliable),
}


# --- injectors: one input, as the far end, the application or time produces it


def _far_request(
    w: World,
    call: SipCall,
    method: str,
    *,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    cseq: int | None = None,
) -> SipRequest:
    """A request of the far end in the call's dialog (its tags mirrored from ours)."""
    if call.dialog is not None:
        d = call.dialog
        from_, to, call_id = d.remote_party, d.local_party, d.call_id
    else:  # early dialog of an incoming call: the tag our 1xx would carry
        from_ = call.invite.headers.get("From") or ""
        to = f"{call.invite.headers.get('To')};tag={call.local_tag}"
        call_id = call.invite.call_id
    w.seq += 1
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {RAW}:5060;branch=z9hG4bK-raw{w.seq};rport")
    h.add("Max-Forwards", "70")
    h.add("From", from_)
    h.add("To", to)
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq if cseq is not None else w.seq} {method}")
    h.add("Contact", f"<sip:far@{RAW}:5060>")
    for name, value in headers:
        h.add(name, value)
    return SipRequest(method, f"sip:gateway@{B}", h, body)


def _deliver(w: World, ep: SipEndpoint, message: SipRequest | SipResponse) -> None:
    ep.receive(message.serialize(), Address("udp", RAW, 5060), w.net.now)
    w.flush()


def _send(
    method: str,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    cseq: int | None = None,
) -> Injector:
    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        request = _far_request(w, calls(ep)[h], method, body=body, headers=headers, cseq=cseq)
        _deliver(w, ep, request)
        return True

    return inject


def recv_ack(w: World, ep: SipEndpoint, h: int) -> bool:
    call = calls(ep)[h]
    if call.retransmit is None:
        return False  # nothing of ours awaits an ACK: any ACK is a stray one
    _deliver(w, ep, _far_request(w, call, "ACK", cseq=call.retransmit.cseq))
    return True


def recv_cancel(w: World, ep: SipEndpoint, h: int) -> bool:
    call = calls(ep)[h]
    if call.role != "uas":
        return False  # only the far end's own INVITE can be cancelled
    ep.receive(build_cancel(call.invite).serialize(), Address("udp", A, 5060), w.net.now)
    w.flush()
    return True


def _respond(
    purpose: str | tuple[str, ...],
    status: int,
    *,
    sdp: bool = False,
    challenge: bool = False,
    again: bool = False,
    rseq: str = "",
    extra: tuple[tuple[str, str], ...] = (),
) -> Injector:
    """A response to the call's newest request of `purpose` (one of them) still awaiting its
    final one; with `again`, a retransmission of the final response to the oldest one that had
    it. `extra` headers go in; a `Min-SE` of 0 becomes 10 s above what the request asked."""
    purposes = (purpose,) if isinstance(purpose, str) else purpose

    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        mine = [c for c, hd, p in client_tx(ep) if hd == h and p in purposes]
        if again:
            mine = [c for c in mine if c.final is not None and not c.terminated][:1]
        else:
            mine = [c for c in mine if c.final is None and not c.terminated][-1:]
        for ctx in mine:
            call = calls(ep)[h]
            tag = call.dialog.remote_tag if call.dialog is not None else "far1"
            headers: list[tuple[str, str]] = [("Contact", f"<sip:far@{RAW}:5060>")]
            if rseq:  # a reliable 1xx (RFC 3262): a new RSeq, or the last one again
                tag = next(iter(call.early), tag)
                seen = call.early.get(tag)
                if rseq == "same" and seen is None:
                    return False
                n = seen[1] if seen is not None else 0
                headers += [("Require", "100rel"), ("RSeq", str(n if rseq == "same" else n + 1))]
            body = b""
            if sdp and ctx.request.body:
                offer = SessionDescription.parse(ctx.request.body)
                body = negotiate(offer, RAW, 4020).answer.serialize()
                headers.append(("Content-Type", "application/sdp"))
            if challenge:
                headers += DigestServer("far", {"u": Secret("pw")}).challenge(w.net.now)
            for name, value in extra:
                if name == "Min-SE" and value == "0":
                    asked = session_expires(ctx.request)
                    value = str((asked or 0) + 10)
                headers.append((name, value))
            response = make_response(
                ctx.request,
                status,
                REASONS.get(status, "X"),
                to_tag=tag,
                headers=headers,
                body=body,
            )
            _deliver(w, ep, response)
            return True
        return False

    return inject


def _command(run: Callable[[SipEndpoint, int, float], None]) -> Injector:
    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        run(ep, h, w.net.now)
        w.flush()
        return True

    return inject


def _accept_cmd(ep: SipEndpoint, h: int, now: float) -> None:
    ep.accept(h, make_offer(ep.config.host, 5002), now)


def _provisional(rel100: str, sdp: bool) -> Injector:
    """ring / progress on a call whose INVITE said `rel100` of 100rel (RFC 3262)."""

    def run(ep: SipEndpoint, h: int, now: float) -> None:
        calls(ep)[h].rel100 = rel100
        if sdp:
            ep.progress(h, make_offer(ep.config.host, 5002), now)
        else:
            ep.ring(h, now)

    return _command(run)


def recv_prack(w: World, ep: SipEndpoint, h: int) -> bool:
    """A PRACK of our outstanding reliable 1xx (RAck of none: matches nothing)."""
    call = calls(ep)[h]
    rel = call.reliable
    rack = f"{rel.rseq} {call.invite.cseq.seq} INVITE" if rel is not None else "1 1 INVITE"
    _deliver(w, ep, _far_request(w, call, "PRACK", headers=(("RAck", rack),)))
    return True


def _until(deadline: Callable[[SipCall], float | None]) -> Injector:
    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        when = deadline(calls(ep)[h])
        if when is None:
            return False
        w.advance(when)
        return True

    return inject


def _timeout(purpose: str) -> Injector:
    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        if not any(p == purpose and hd == h for _, hd, p in client_tx(ep)):
            return False
        w.advance(w.net.now + 40.0)  # nobody answers (the world is a black hole by now)
        return True

    return inject


def _refresh_after(interval: int) -> Injector:
    def inject(w: World, ep: SipEndpoint, h: int) -> bool:
        """An UPDATE that makes us the refresher, then the clock to the refresh."""
        se = (("Session-Expires", f"{interval};refresher=uas"), ("Supported", "timer"))
        _deliver(w, ep, _far_request(w, calls(ep)[h], "UPDATE", headers=se))
        call = calls(ep).get(h)
        if call is None or call.refresh_at is None:
            return False
        w.advance(call.refresh_at)
        return True

    return inject


_refresh = _refresh_after(20)


def _refresh_reinvite(w: World, ep: SipEndpoint, h: int) -> bool:
    """An UPDATE that makes us the refresher, from a peer whose Allow lacks UPDATE; then the
    clock to the refresh (a re-INVITE, RFC 4028 §10)."""
    se = (
        ("Session-Expires", "20;refresher=uas"),
        ("Supported", "timer"),
        ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
    )
    _deliver(w, ep, _far_request(w, calls(ep)[h], "UPDATE", headers=se))
    call = calls(ep).get(h)
    if call is None or call.refresh_at is None:
        return False
    w.advance(call.refresh_at)
    return True


def _wait(w: World, ep: SipEndpoint, h: int) -> bool:
    w.advance(w.net.now + 1.0)
    return True


def _retransmit_at(c: SipCall) -> float | None:
    return c.retransmit.next_at if c.retransmit else None


def _ack_deadline(c: SipCall) -> float | None:
    return c.retransmit.give_up_at if c.retransmit else None


SDP_BODY = make_offer(RAW, 4010).serialize()
SDP_HEADERS = (("Content-Type", "application/sdp"),)
INJECT: dict[CallInput, Injector] = {
    In.RING: _provisional("", sdp=False),
    In.RING_RELIABLE: _provisional("required", sdp=False),
    In.PROGRESS: _provisional("", sdp=True),
    In.PROGRESS_RELIABLE: _provisional("supported", sdp=True),
    In.ACCEPT: _command(_accept_cmd),
    In.REJECT: _command(lambda ep, h, now: ep.reject(h, 486, now)),
    In.HANGUP: _command(lambda ep, h, now: ep.hangup(h, now)),
    In.REFER: _command(lambda ep, h, now: ep.refer(h, "sip:agent@10.0.0.9", now)),
    In.REINVITE: _command(lambda ep, h, now: ep.reinvite(h, make_offer(ep.config.host, 4006), now)),
    In.RECV_CANCEL: recv_cancel,
    In.RECV_ACK: recv_ack,
    In.RECV_STRAY_ACK: _send("ACK", cseq=99999),
    In.RECV_BYE: _send("BYE"),
    In.RECV_REINVITE: _send("INVITE", body=SDP_BODY, headers=SDP_HEADERS),
    In.RECV_REINVITE_NO_SDP: _send("INVITE"),
    In.RECV_UPDATE: _send("UPDATE", body=SDP_BODY, headers=SDP_HEADERS),
    In.RECV_INFO: _send("INFO", body=b"5", headers=(("Content-Type", "application/dtmf"),)),
    In.RECV_NOTIFY: _send(
        "NOTIFY",
        body=b"SIP/2.0 200 OK\r\n",
        headers=(("Event", "refer"), ("Content-Type", "message/sipfrag")),
    ),
    In.RECV_OPTIONS: _send("OPTIONS"),
    In.RECV_OTHER: _send("MESSAGE", body=b"hi", headers=(("Content-Type", "text/plain"),)),
    In.RECV_PRACK: recv_prack,
    In.INVITE_1XX: _respond("invite", 180),
    In.INVITE_1XX_RELIABLE: _respond("invite", 183, rseq="next"),
    In.INVITE_1XX_REPEAT: _respond("invite", 183, rseq="same"),
    In.INVITE_2XX: _respond("invite", 200, sdp=True),
    In.INVITE_CHALLENGE: _respond("invite", 401, challenge=True),
    In.INVITE_TOO_BRIEF: _respond("invite", 422, extra=(("Min-SE", "0"),)),
    In.INVITE_FAILURE: _respond("invite", 486),
    In.INVITE_FAILOVER: _respond("invite", 503),  # with a target left; else a failure
    In.REINVITE_1XX: _respond("reinvite", 180),
    In.REINVITE_2XX: _respond("reinvite", 200, sdp=True),
    In.REINVITE_FAILURE: _respond("reinvite", 488),
    In.REINVITE_GONE: _respond("reinvite", 481),
    In.BYE_1XX: _respond("bye", 100),
    In.BYE_2XX: _respond("bye", 200),
    In.BYE_FAILURE: _respond("bye", 481),
    In.REFER_1XX: _respond("refer", 100),
    In.REFER_2XX: _respond("refer", 202),
    In.REFER_FAILURE: _respond("refer", 405),
    In.UPDATE_2XX: _respond("update", 200),
    In.UPDATE_FAILURE: _respond("update", 500),
    In.UPDATE_GONE: _respond("update", 481),
    In.REQUEST_CHALLENGE: _respond(("reinvite", "update", "refer", "bye"), 401, challenge=True),
    In.REQUEST_TOO_BRIEF: _respond(("reinvite", "update"), 422, extra=(("Min-SE", "0"),)),
    In.TIMER_NO_ANSWER: _until(lambda c: c.answer_deadline),
    In.TIMER_ACK: _until(_ack_deadline),
    In.TIMER_2XX_RETRANSMIT: _until(_retransmit_at),
    In.TIMER_CANCEL: _until(lambda c: c.cancel_deadline),
    In.TIMER_1XX_RETRANSMIT: _until(lambda c: c.reliable.next_at if c.reliable else None),
    In.TIMER_PRACK: _until(lambda c: c.reliable.give_up_at if c.reliable else None),
    In.TIMER_SESSION_EXPIRED: _until(lambda c: c.session_expires),
    In.TIMER_SESSION_REFRESH: _refresh,
    In.TIMER_SESSION_REFRESH_REINVITE: _refresh_reinvite,
    In.TIMEOUT_INVITE: _timeout("invite"),
    In.TIMEOUT_REINVITE: _timeout("reinvite"),
    In.TIMEOUT_REFER: _timeout("refer"),
    In.TIMEOUT_BYE: _timeout("bye"),
    In.TIMEOUT_UPDATE: _timeout("update"),
}
#: by name, each with the input it produces: one per input, and a few more ways to produce one
INJECTORS: dict[str, tuple[CallInput | None, Injector]] = {
    **{inp.value: (inp, inject) for inp, inject in INJECT.items()},
    "wait_1s": (None, _wait),
    # a refresh UPDATE of ours 40 s into an 80 s session: its transaction outlives timer F
    "refresh_long": (In.TIMER_SESSION_REFRESH, _refresh_after(80)),
    # the far end lost our ACK and retransmits its 2xx to an earlier re-INVITE of ours
    "reinvite_2xx_again": (In.REINVITE_2XX, _respond("reinvite", 200, sdp=True, again=True)),
    "invite_2xx_again": (In.INVITE_2XX, _respond("invite", 200, sdp=True, again=True)),
}


# --- the checks


def check_transitions(w: World) -> None:
    """Every transition made is the table's; every input without an entry was reported."""
    reported = [(u.call, u.state, u.input) for u in w.unexpected]
    for t in w.seen:
        entry = TABLE.get((t.before, t.input))
        if entry is None:
            assert t.after is t.before, t
            assert (t.handle, t.before.value, t.input.value) in reported, t
            continue
        next_state, steps = entry
        # a 488/400/422 (or a PRACK's 200) leaves the state
        refusing = ("answer_reinvite", "offer_in_2xx", "prack_ok")
        refused = any(step in steps for step in refusing) and t.after is t.before
        assert t.after is next_state or refused, t
    assert len(reported) == sum((t.before, t.input) not in TABLE for t in w.seen)


def apply(w: World, ep: SipEndpoint, h: int, name: str) -> bool:
    """Run an injector if the call still lives; a command absent from the table must raise."""
    call = calls(ep).get(h)
    if call is None:
        return False
    before = call.state
    inp, inject = INJECTORS[name]
    try:
        return inject(w, ep, h)
    except SipCallStateError:
        assert inp in COMMANDS and (before, inp) not in TABLE, (before, inp)
        assert call.state is before
        return False


def start(name: str) -> tuple[World, SipEndpoint, int]:
    w = make_world()
    state, recipe = RECIPES[name]
    ep, h = recipe(w)
    assert calls(ep)[h].state is state, (name, calls(ep)[h].state)
    w.blackhole = True  # from here on the far end is the injectors alone
    return w, ep, h


@given(
    st.sampled_from(sorted(RECIPES)),
    st.lists(st.sampled_from(sorted(INJECTORS)), min_size=1, max_size=5),
)
@settings(
    max_examples=int(os.environ.get("CALL_STATE_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_every_transition_is_the_tables_or_reported(recipe: str, injections: list[str]) -> None:
    w, ep, h = start(recipe)
    for name in injections:
        apply(w, ep, h, name)
    check_transitions(w)
    # what a far end, the application and the clock can produce never meets a gap in the table
    assert w.unexpected == []


#: runs that reach rows one injection after a recipe does not
SCRIPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # our REFER, our re-INVITE, then what answers them, in the states a call can be in by then
    *(
        (recipe, (first, then))
        for recipe in ("confirmed_uac", "reinvited_uas", "reinvited_no_offer_uac")
        for first in ("refer", "reinvite")
        for then in (
            "refer_1xx",
            "refer_2xx",
            "refer_failure",
            "timeout_refer",
            "reinvite_1xx",
            "reinvite_2xx",
            "reinvite_failure",
            "reinvite_gone",
            "timeout_reinvite",
            "timer_session_expired",
            "timer_session_refresh",
        )
    ),
    *(
        ("confirmed_uas", ("refer", "reinvite", "hangup", then))
        for then in (
            "refer_1xx",
            "refer_2xx",
            "refer_failure",
            "timeout_refer",
            "reinvite_1xx",
            "reinvite_2xx",
            "reinvite_failure",
            "reinvite_gone",
            "timeout_reinvite",
        )
    ),
    # the 2xx of an earlier re-INVITE of ours, retransmitted while a later one is pending,
    # confirms the dialog (as the code before the table did): the later one then meets
    # CONFIRMED, and a re-INVITE of the far end can make it REINVITED
    *(
        ("confirmed_uac", ("reinvite", "reinvite_2xx", "reinvite", "reinvite_2xx_again", *more))
        for more in (
            ("reinvite_1xx",),
            ("reinvite_failure",),
            ("reinvite_gone",),
            ("timeout_reinvite",),
            ("recv_reinvite", "reinvite_1xx"),
            ("recv_reinvite", "reinvite_failure"),
            ("recv_reinvite", "reinvite_gone"),
            ("recv_reinvite", "timeout_reinvite"),
            ("recv_reinvite_no_sdp", "reinvite_1xx"),
            ("recv_reinvite_no_sdp", "reinvite_failure"),
            ("recv_reinvite_no_sdp", "reinvite_gone"),
            ("recv_reinvite_no_sdp", "timeout_reinvite"),
        )
    ),
    ("confirmed_uac", ("invite_2xx_again",)),
    *(
        ("confirmed_uac", ("refer", "reinvite", then))
        for then in (
            "refer_1xx",
            "refer_2xx",
            "refer_failure",
            "timeout_refer",
        )
    ),
    ("confirmed_uac", ("refer", "wait_1s", "recv_reinvite", "timeout_refer")),
    *(
        ("confirmed_uac", ("reinvite", "reinvite_2xx", theirs, "reinvite_2xx_again"))
        for theirs in ("recv_reinvite", "recv_reinvite_no_sdp")
    ),
    # our refreshing UPDATE (RFC 4028 §10) and what answers it, in every dialog state
    *(
        (recipe, (*first, then))
        for recipe in (
            "confirmed_uac",
            "reinviting_uac",
            "reinvited_uac",
            "reinvited_no_offer_uac",
        )
        for first in (("timer_session_refresh",), ("timer_session_refresh", "hangup"))
        for then in (
            "update_2xx",
            "update_failure",
            "update_gone",
            "request_challenge",
            "request_too_brief",
        )
    ),
    *(
        ("confirmed_uac", (*first, "timeout_update"))
        for first in (("refresh_long",), ("refresh_long", "hangup"))
    ),
    *(
        ("confirmed_uac", ("refresh_long", "wait_1s", then, "timeout_update"))
        for then in ("reinvite", "recv_reinvite", "recv_reinvite_no_sdp")
    ),
    ("answered_we_refresh_by_reinvite", ("hangup", "timer_session_refresh_reinvite")),
)


def test_every_row_is_reached_by_a_far_end() -> None:
    """Each recipe with each injection, then the scripts: every row of the table is reached
    (a row nobody can reach is one a bug could hide behind), and never a gap."""
    runs = [(recipe, (name,)) for recipe in RECIPES for name in INJECTORS]
    reached: set[tuple[CallState, CallInput]] = set()
    for recipe, injections in (*runs, *SCRIPTS):
        w, ep, h = start(recipe)
        for name in injections:
            apply(w, ep, h, name)
        check_transitions(w)
        assert w.unexpected == [], (recipe, injections)
        reached |= {(t.before, t.input) for t in w.seen}
        for ep in (w.a, w.b):  # the deadlines get_timer() reads inline are CALL_TIMERS'
            armed = [
                t
                for call in calls(ep).values()
                for _, deadline, _ in CALL_TIMERS
                if (t := deadline(call)) is not None
            ]
            assert ep._core.calls_timer() == min(armed, default=None)
    assert set(TABLE) - reached == set()


@pytest.mark.parametrize("state", list(CallState))
@pytest.mark.parametrize("inp", sorted(set(CallInput) - COMMANDS, key=lambda i: i.value))
def test_an_input_without_an_entry_is_reported_not_swallowed(
    state: CallState, inp: CallInput
) -> None:
    """Forced into any state, a call meets any input: the table's, or an `UnexpectedInput`
    (a request so met is answered 500) with the state unchanged."""
    if (state, inp) in TABLE:
        return
    w, ep, h = start("incoming")
    call = calls(ep)[h]
    call.state = state
    tx = None
    if inp in REQUESTS:
        request = _far_request(w, call, "INFO")
        tx = ep._core.server(request, Address("udp", RAW, 5060), ("k", inp.value))
    ep._core.fire(call, Trigger(inp, w.net.now, tx=tx))
    assert call.state is state
    assert ep.next_event() == UnexpectedInput("call", state.value, inp.value, h)
    sent = ep.messages_to_send()
    if inp in REQUESTS:
        assert [data.split(b"\r\n", 1)[0] for data, _ in sent] == [
            b"SIP/2.0 500 Server Internal Error"
        ]
    else:
        assert sent == []


@pytest.mark.parametrize("state", list(CallState))
@pytest.mark.parametrize("inp", sorted(COMMANDS, key=lambda i: i.value))
def test_a_command_without_an_entry_raises(state: CallState, inp: CallInput) -> None:
    if (state, inp) in TABLE:
        return
    w, ep, h = start("incoming")
    calls(ep)[h].state = state
    with pytest.raises(SipCallStateError, match=f"{inp.value} not allowed in state {state.value}"):
        INJECT[inp](w, ep, h)


def test_the_table_is_well_formed() -> None:
    # every step the rows name has its role
    ep = SipEndpoint(EndpointConfig(A, 5060))
    assert ep._core.step_names == STEPS
    # the far end's requests are answered in every state whose dialog it can address
    addressable = {s for s in CallState if (s, In.RECV_INFO) in TABLE}
    for state in addressable:
        for inp in REQUESTS | {In.RECV_STRAY_ACK}:
            assert (state, inp) in TABLE, (state, inp)
    # the end is the end: an ended call is forgotten, its handle unknown
    assert not [i for (s, i) in TABLE if s is S.ENDED]


def render_table() -> str:
    """`call_state.ROWS` as the Markdown tables of docs/sip.md, one per kind of input."""
    timers = {i for i in CallInput if i.value.startswith(("timer_", "timeout_"))}
    requests = {i for i in CallInput if i.value.startswith("recv_")}
    kinds = (
        ("Commands of the application", COMMANDS),
        ("Requests of the far end", requests),
        ("Responses to our requests", set(CallInput) - COMMANDS - requests - timers),
        ("The call's timers, and our requests timing out", timers),
    )
    out = []
    for title, inputs in kinds:
        out += [f"**{title}**", "", "| in | on | goes to | steps |", "|---|---|---|---|"]
        for states, row_inputs, next_state, steps in ROWS:
            if row_inputs[0] not in inputs:
                continue
            out.append(
                "| "
                + ", ".join(f"`{s.value}`" for s in states)
                + " | "
                + ", ".join(f"`{i.value}`" for i in row_inputs)
                + " | "
                + ("same" if next_state is None else f"`{next_state.value}`")
                + " | "
                + (", ".join(steps) or "-")
                + " |"
            )
        out.append("")
    return "\n".join(out)


def test_the_docs_show_the_table() -> None:
    """docs/sip.md carries the table as it is (regenerate with `render_table()`)."""
    docs = Path(__file__).parents[2] / "docs" / "sip.md"
    text = docs.read_text()
    start, end = "<!-- call-state-table -->\n", "<!-- /call-state-table -->"
    assert text[text.index(start) + len(start) : text.index(end)] == render_table()
