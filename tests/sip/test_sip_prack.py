"""Reliable provisionals (RFC 3262, gateway/sip/prack.py): two SipEndpoints in memory, and
hand-written peers, in simulated time."""

from __future__ import annotations

import pytest

from gateway.errors import SipCallStateError
from gateway.sip.events import (
    CallAcked,
    CallTerminated,
    IncomingCallReceived,
    OutboundCallAnswered,
    OutboundCallProgressed,
)
from gateway.sip.message import SipRequest, SipResponse, make_response, parse
from gateway.sip.sdp import make_offer, negotiate
from gateway.sip.transaction import T1, Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.sip_memory import PairNet, RawPeer, events_of, in_dialog, invite_text, make_pair

UAC, UAS = "10.0.0.1", "10.0.0.2"
TRUNK = Address("udp", UAS, 5060)
REQUIRE = [("Require", "100rel")]
SUPPORTED = [("Supported", "100rel")]


def dial(
    net: PairNet, uac: SipEndpoint, headers: list[tuple[str, str]]
) -> tuple[int, IncomingCallReceived]:
    call = uac.invite(
        "sip:bot@10.0.0.2",
        make_offer(UAC, 4000),
        "sip:alice@10.0.0.1",
        TRUNK,
        net.now,
        headers=headers,
    )
    net.flush()
    (inc,) = events_of(net.take(UAS), IncomingCallReceived)
    return call, inc


def test_our_invite_says_we_support_100rel_and_prack() -> None:
    net, uac, _uas = make_pair()
    dial(net, uac, [])
    (invite,) = net.sent(UAC, "INVITE")
    assert "100rel" in invite.headers.get_all("Supported")
    assert "PRACK" in (invite.headers.get("Allow") or "")


def test_require_100rel_gets_reliable_ringing_prack_then_200() -> None:
    """A caller requiring 100rel (once 420): our 180 carries RSeq and Require: 100rel, the UAC
    core PRACKs it with the right RAck, the PRACK gets 200, then the call is answered."""
    net, uac, uas = make_pair()
    call, inc = dial(net, uac, REQUIRE)
    uas.ring(inc.call, net.now)
    net.flush()
    (ringing,) = net.sent(UAS, "180")
    assert isinstance(ringing, SipResponse)
    rseq = int(ringing.headers.get("RSeq") or "0")
    assert 0 < rseq < 2**31 and "100rel" in ringing.headers.get_all("Require")
    (prack,) = net.sent(UAC, "PRACK")
    assert isinstance(prack, SipRequest)
    assert prack.headers.get("RAck") == f"{rseq} 1 INVITE"
    assert prack.to.tag == ringing.to.tag and prack.cseq.seq == 2
    assert [r.cseq.method for r in net.sent(UAS, "200")] == ["PRACK"]
    assert events_of(net.take(UAC), OutboundCallProgressed) == [OutboundCallProgressed(call, 180)]
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, net.now)
    net.flush()
    assert isinstance(net.take(UAC)[0], OutboundCallAnswered)
    assert events_of(net.take(UAS), CallAcked)
    # the early dialog became the call's: the BYE counts the PRACK (CSeq 3)
    uac.hangup(call, net.now)
    net.flush()
    (bye,) = net.sent(UAC, "BYE")
    assert bye.cseq.seq == 3 and bye.to.tag == ringing.to.tag
    assert uac.active_calls == uas.active_calls == 0


def test_200_waits_for_the_prack_of_a_reliable_provisional() -> None:
    """§3: accepted while the reliable 1xx awaits its PRACK: the 2xx goes out after it."""
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "PRACK" and net.now < 1
    _call, inc = dial(net, uac, REQUIRE)
    uas.ring(inc.call, net.now)
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, net.now)
    net.flush()
    assert not [r for r in net.sent(UAS, "200") if r.cseq.method == "INVITE"]
    # the 180 is re-sent at T1 (and the PRACK by its own transaction) until one arrives
    net.advance(1.6)
    assert len(net.sent(UAS, "180")) >= 2
    assert [r.cseq.method for r in net.sent(UAS, "200")] == ["PRACK", "INVITE"]
    assert events_of(net.take(UAC), OutboundCallAnswered)
    assert events_of(net.take(UAS), CallAcked)


def test_supported_100rel_gets_a_reliable_183_with_sdp_and_the_same_sdp_in_the_200() -> None:
    net, uac, uas = make_pair()
    _call, inc = dial(net, uac, SUPPORTED)
    uas.ring(inc.call, net.now)  # Supported only: a 180 without SDP stays unreliable
    answer = negotiate(inc.offer, UAS, 5000).answer
    uas.progress(inc.call, answer, net.now)
    net.flush()
    (ringing,) = net.sent(UAS, "180")
    assert ringing.headers.get("RSeq") is None
    (progress,) = net.sent(UAS, "183")
    assert progress.headers.get("RSeq") is not None and progress.body == answer.serialize()
    assert len(net.sent(UAC, "PRACK")) == 1
    progressed = events_of(net.take(UAC), OutboundCallProgressed)
    assert [p.status for p in progressed] == [180, 183]
    assert progressed[1].early is not None and progressed[1].early.audio().port == 5000
    uas.accept(inc.call, answer, net.now)
    net.flush()
    (ok,) = [r for r in net.sent(UAS, "200") if r.cseq.method == "INVITE"]
    assert ok.body == answer.serialize()


def test_183_without_100rel_is_plain() -> None:
    ep = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(ep)
    peer.send(invite_text(peer))
    (inc,) = events_of(peer.events(), IncomingCallReceived)
    answer = negotiate(inc.offer, UAS, 5000).answer
    ep.progress(inc.call, answer, 0.0)
    (progress,) = [parse(d) for d, _ in ep.messages_to_send()]
    assert isinstance(progress, SipResponse) and progress.status == 183
    assert progress.headers.get("RSeq") is None and progress.body == answer.serialize()


def test_an_18x_sdp_is_the_answer_when_the_200_has_none() -> None:
    """Early media from a carrier without 100rel (RFC 3960): the 18x's SDP is reported, and a
    2xx without SDP leaves it the answer."""
    net, uac, _uas = make_pair()
    net.drop = lambda m, s, d: s == UAS  # the far end below is written by hand
    _call, inc = dial(net, uac, [])
    (invite,) = net.sent(UAC, "INVITE")
    assert isinstance(invite, SipRequest)
    answer = negotiate(inc.offer, UAS, 5000).answer
    sdp = [("Content-Type", "application/sdp"), ("Contact", "<sip:far@10.0.0.2>")]
    progress = make_response(
        invite, 183, "Session Progress", to_tag="t1", headers=sdp, body=answer.serialize()
    )
    uac.receive(progress.serialize(), TRUNK, net.now)
    (progressed,) = events_of(net.take(UAC), OutboundCallProgressed)
    assert progressed.early is not None and progressed.early.audio().port == 5000
    assert not net.sent(UAC, "PRACK")
    ok = make_response(invite, 200, "OK", headers=sdp[1:], to_tag="t1")
    uac.receive(ok.serialize(), TRUNK, net.now)
    (answered,) = events_of(net.take(UAC), OutboundCallAnswered)
    assert answered.answer is not None and answered.answer.audio().port == 5000


def test_a_retransmitted_reliable_1xx_is_not_prack_ed_again() -> None:
    """§4: the same RSeq again is a retransmission: no second PRACK, no second event."""
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "PRACK"
    _call, inc = dial(net, uac, REQUIRE)
    uas.ring(inc.call, net.now)
    net.advance(1.0)  # the 180 re-sent at T1 (its PRACK lost)
    assert len(net.sent(UAS, "180")) == 2
    pracks = net.sent(UAC, "PRACK")
    assert len({p.top_via.branch for p in pracks}) == 1  # one transaction, re-sent by timer E
    assert len(events_of(net.take(UAC), OutboundCallProgressed)) == 1


def test_no_prack_in_64_t1_refuses_the_invite_with_500() -> None:
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "PRACK"
    _call, inc = dial(net, uac, REQUIRE)
    uas.ring(inc.call, net.now)
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, net.now)
    net.advance(64 * T1 + 0.1)
    assert CallTerminated(inc.call, "prack_timeout") in net.take(UAS)
    finals = [m for m in net.sent(UAS, "500") if m.cseq.method == "INVITE"]
    assert len(finals) == 1 and finals[0].reason == "No PRACK"
    assert not [r for r in net.sent(UAS, "200") if r.cseq.method == "INVITE"]
    assert uas.active_calls == 0


def test_a_second_reliable_provisional_waits_for_the_prack() -> None:
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "PRACK"
    _call, inc = dial(net, uac, REQUIRE)
    uas.ring(inc.call, net.now)
    with pytest.raises(SipCallStateError):
        uas.progress(inc.call, negotiate(inc.offer, UAS, 5000).answer, net.now)


def _raw_call(extra: str = "Require: 100rel\n") -> tuple[SipEndpoint, RawPeer, SipResponse]:
    ep = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(ep)
    peer.send(invite_text(peer, extra=extra))
    (inc,) = events_of(peer.events(), IncomingCallReceived)
    ep.ring(inc.call, 0.0)
    (ringing,) = [m for d, _ in ep.messages_to_send() if isinstance(m := parse(d), SipResponse)]
    return ep, peer, ringing


def test_a_prack_that_matches_nothing_gets_481() -> None:
    _ep, peer, ringing = _raw_call()
    tag = ringing.to.tag or ""
    rseq = int(ringing.headers.get("RSeq") or "0")
    (resp,) = peer.send(in_dialog(peer, "PRACK", tag, 2, extra=f"RAck: {rseq + 5} 1 INVITE\n"))
    assert isinstance(resp, SipResponse) and resp.status == 481
    (resp,) = peer.send(in_dialog(peer, "PRACK", tag, 3, extra=f"RAck: {rseq} 1 INVITE\n"))
    assert isinstance(resp, SipResponse) and resp.status == 200
    # acknowledged already: a new PRACK for it matches nothing (§3)
    (resp,) = peer.send(in_dialog(peer, "PRACK", tag, 4, extra=f"RAck: {rseq} 1 INVITE\n"))
    assert isinstance(resp, SipResponse) and resp.status == 481
    # outside any dialog
    (resp,) = peer.send(in_dialog(peer, "PRACK", "nope", 5, extra=f"RAck: {rseq} 1 INVITE\n"))
    assert isinstance(resp, SipResponse) and resp.status == 481


def test_require_100rel_and_timer_together_are_accepted() -> None:
    ep = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(ep)
    out = peer.send(invite_text(peer, extra="Require: timer, 100rel\nSupported: timer\n"))
    assert [m.status for m in out if isinstance(m, SipResponse)] == [100]
