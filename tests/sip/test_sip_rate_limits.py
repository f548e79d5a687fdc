"""Rate limits in simulated time (issue 13, item 3): the messages of calls in progress are never
charged, new INVITEs spend their trunk's call budget and get 503 with Retry-After beyond it (at a
bounded rate), and a flood from unlisted sources is dropped before it is parsed."""

from __future__ import annotations

from typing import Any

from gateway.secret import Secret
from gateway.sip.auth import Credentials, DigestServer, authorization, pick_challenge
from gateway.sip.events import CallAcked, CallEndedByRemote, IncomingCallReceived, RequestRejected
from gateway.sip.message import SipResponse, parse
from gateway.sip.policy import SourcePolicy, TrunkPolicy
from gateway.sip.sdp import make_offer, negotiate
from gateway.sip.transaction import T1, Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.sip_memory import PairNet, RawPeer, events_of, in_dialog, invite_text

UAC, UAS = "10.0.0.1", "10.0.0.2"
TRUNK = Address("udp", UAS, 5060)


def rejections(events: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.reason, e.method, e.status) for e in events_of(events, RequestRejected)]


def answer_all(net: PairNet, uas: SipEndpoint) -> list[int]:
    handles = []
    for inc in events_of(net.take(UAS), IncomingCallReceived):
        uas.accept(inc.call, negotiate(inc.offer, UAS, 5000 + 2 * inc.call).answer, net.now)
        handles.append(inc.call)
    net.flush()
    return handles


def test_messages_of_calls_in_progress_are_never_charged() -> None:
    # a message budget of 6 in the same instant: on the old code the 5 INVITEs spend 5, and 4 of
    # the 5 ACKs that follow are dropped (the 200 OKs re-sent, the BYEs lost)
    uac = SipEndpoint(EndpointConfig(UAC, 5060))
    uas = SipEndpoint(
        EndpointConfig(UAS, 5060), policy=SourcePolicy([f"{UAC}/32"], rate=6, burst=6)
    )
    net = PairNet(uac, uas)
    calls = [
        uac.invite(f"sip:bot@{UAS}", make_offer(UAC, 4000 + 2 * i), f"sip:a@{UAC}", TRUNK, 0.0)
        for i in range(5)
    ]
    net.flush()
    answered = answer_all(net, uas)
    assert len(answered) == 5
    # the caller hangs up every call in the same instant
    for call in calls:
        uac.hangup(call, net.now)
    net.flush()
    events = net.take(UAS)
    assert len(events_of(events, CallAcked)) == 5
    assert len(events_of(events, CallEndedByRemote)) == 5
    assert rejections(events) == []
    assert [m.status for m in net.sent(UAS, "200")].count(200) == 10  # one per INVITE, per BYE
    net.advance(64 * T1)
    assert uas.active_calls == uac.active_calls == 0
    assert rejections(net.take(UAS)) == []


def test_retransmissions_cancel_in_dialog_and_responses_pass_an_empty_budget() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], rate=1, burst=1, calls_per_second=1, calls_burst=2)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    peer = RawPeer(uas)
    assert [m.status for m in peer.send(invite_text(peer))] == [100]  # type: ignore[union-attr]
    inc = events_of(peer.events(), IncomingCallReceived)[0]
    # the INVITE retransmitted three times: the transaction answers each, nothing is charged
    for _ in range(3):
        assert [m.status for m in peer.send(invite_text(peer))] == [100]  # type: ignore[union-attr]
    # an OPTIONS out of dialog spends the one message token; a second is dropped
    opt = in_dialog(peer, "OPTIONS", "x", 1, call_id="probe-1").replace(";tag=x", "")
    assert len(peer.send(opt)) == 1
    assert peer.send(opt.replace("probe-1", "probe-2").replace("OPTIONS1", "OPTIONS2")) == []
    assert rejections(peer.events()) == [("rate_limited", "OPTIONS", 0)]
    # the call's messages still pass: answer, ACK, INFO, BYE
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, 0.0)
    ok = parse(uas.messages_to_send()[0][0])
    assert isinstance(ok, SipResponse)
    tag = ok.to.tag or ""
    ack = in_dialog(peer, "ACK", tag, 1, branch="z9hG4bK-ack")
    assert peer.send(ack) == []
    assert events_of(peer.events(), CallAcked)
    info = in_dialog(
        peer, "INFO", tag, 2, extra="Content-Type: application/dtmf-relay\n", body="Signal=5\n"
    )
    assert [m.status for m in peer.send(info)] == [200]  # type: ignore[union-attr]
    assert [m.status for m in peer.send(in_dialog(peer, "BYE", tag, 3))] == [200]  # type: ignore[union-attr]
    # a BYE retransmission after the call ended: still the call's, answered by its transaction
    assert [m.status for m in peer.send(in_dialog(peer, "BYE", tag, 3))] == [200]  # type: ignore[union-attr]
    assert rejections(peer.events()) == []


def test_cancel_of_a_known_invite_passes_an_empty_budget() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], rate=1, burst=1, calls_per_second=1, calls_burst=1)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    peer = RawPeer(uas)
    peer.send(invite_text(peer))
    peer.send(in_dialog(peer, "OPTIONS", "x", 1, call_id="o").replace(";tag=x", ""))  # spent
    cancel = invite_text(peer).replace("INVITE sip:", "CANCEL sip:").replace("1 INVITE", "1 CANCEL")
    cancel = cancel.split("Content-Type")[0] + "Content-Length: 0\n\n"
    out = peer.send(cancel)
    assert sorted(m.status for m in out) == [200, 487]  # type: ignore[union-attr]
    assert rejections(peer.events()) == []


def test_invites_over_the_budget_get_503_with_retry_after_at_a_bounded_rate() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], calls_per_second=0.5, calls_burst=2, reply_rate=3)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    peer = RawPeer(uas)
    answers = [
        [m.status for m in peer.send(invite_text(peer, call_id=f"c{i}", branch=f"z9hG4bK-{i}"))]  # type: ignore[union-attr]
        for i in range(8)
    ]
    assert answers == [[100], [100], [503], [503], [503], [], [], []]
    events = peer.events()
    assert len(events_of(events, IncomingCallReceived)) == 2
    assert (
        rejections(events)
        == [("rate_limited", "INVITE", 503)] * 3 + [("rate_limited", "INVITE", 0)] * 3
    )
    assert uas.transaction_count == 2  # the refusals are stateless
    # the 503 carries Retry-After and a To tag, and its ACK is absorbed, not charged
    (refusal,) = peer.send(invite_text(peer, call_id="c9", branch="z9hG4bK-9"), now=0.5)
    assert isinstance(refusal, SipResponse) and refusal.status == 503
    assert refusal.headers.get("Retry-After") == "2" and refusal.to.tag  # a token in 2 s
    ack = in_dialog(peer, "ACK", refusal.to.tag, 1, branch="z9hG4bK-9", call_id="c9")
    assert peer.send(ack, now=0.5) == []
    assert rejections(peer.events()) == [("rate_limited", "INVITE", 503)]
    # two seconds in, one more call fits in the budget
    out = peer.send(invite_text(peer, call_id="c10", branch="z9hG4bK-10"), now=2.0)
    assert [m.status for m in out] == [100]  # type: ignore[union-attr]


def test_an_invite_that_would_be_dropped_is_dropped_before_parsing() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], calls_per_second=1, calls_burst=1, reply_rate=0)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    peer = RawPeer(uas)
    assert [m.status for m in peer.send(invite_text(peer))] == [100]  # type: ignore[union-attr]
    peer.events()
    # neither a call token nor a 503 left: even a malformed INVITE is not parsed (not 400)
    assert uas.receive(b"INVITE garbage\r\n\r\n", peer.addr, 0.0) is None
    assert uas.messages_to_send() == []
    assert rejections(peer.events()) == [("rate_limited", "INVITE", 0)]


def test_unlisted_flood_is_dropped_unparsed_but_a_call_of_that_address_passes() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], rate=5, burst=5, unlisted_total_rate=5)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    proxy = RawPeer(uas, "10.0.0.5")  # allowed: the call comes in through it
    proxy.send(invite_text(proxy, call_id="call-1"))
    inc = events_of(proxy.events(), IncomingCallReceived)[0]
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, 0.0)
    ok = parse(uas.messages_to_send()[0][0])
    assert isinstance(ok, SipResponse)
    # the phone itself (not allow-listed) floods: garbage is dropped unparsed once its budget
    # is spent (5 parsed and answered 400/ignored, the rest silently dropped and counted)
    phone = RawPeer(uas, "192.0.2.9", 5070)
    for _ in range(200):
        phone.send("INVITE sip:x SIP/2.0\nbroken\n\n")
    reasons = [r for r, _, _ in rejections(phone.events())]
    assert reasons.count("malformed") == 5 and reasons.count("rate_limited") == 195
    # yet its requests in the call's dialog pass: the ACK and a BYE sent straight from it
    tag = ok.to.tag or ""
    assert phone.send(in_dialog(phone, "ACK", tag, 1, call_id="call-1")) == []
    bye = in_dialog(phone, "BYE", tag, 2, call_id="call-1")
    assert [m.status for m in phone.send(bye)] == [200]  # type: ignore[union-attr]
    events = phone.events()
    assert events_of(events, CallAcked) and events_of(events, CallEndedByRemote)
    assert rejections(events) == []


def test_a_digest_retry_costs_no_second_call_token() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], calls_per_second=1, calls_burst=1, reply_rate=10)
    digest = DigestServer("gw", {"trunk": Secret("pw")})
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy, auth=digest)
    peer = RawPeer(uas)
    (challenge,) = peer.send(invite_text(peer))
    assert isinstance(challenge, SipResponse) and challenge.status == 401
    ack = in_dialog(peer, "ACK", challenge.to.tag or "", 1, branch="z9hG4bK-r1")
    peer.send(ack)
    picked = pick_challenge(challenge.headers.get_all("WWW-Authenticate"))
    assert picked is not None
    creds = authorization(picked, "INVITE", "sip:bot@10.0.0.2", Credentials("trunk", Secret("pw")))
    retry = invite_text(peer, branch="z9hG4bK-r2", extra=f"Authorization: {creds}\n")
    retry = retry.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    assert [m.status for m in peer.send(retry)] == [100]  # type: ignore[union-attr]
    events = peer.events()
    assert len(events_of(events, IncomingCallReceived)) == 1
    assert rejections(events) == [("auth_required", "INVITE", 401)]
    # the budget was spent once: another new call now is over it
    (over,) = peer.send(invite_text(peer, call_id="raw-2", branch="z9hG4bK-r3"))
    assert isinstance(over, SipResponse) and over.status == 503


def test_a_known_call_id_is_no_free_pass_for_new_requests() -> None:
    policy = SourcePolicy(["10.0.0.0/24"], rate=1, burst=1, calls_per_second=1, calls_burst=1)
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    peer = RawPeer(uas)
    assert [m.status for m in peer.send(invite_text(peer))] == [100]  # type: ignore[union-attr]
    peer.events()
    # a second INVITE reusing the live call's Call-ID with a new transaction: a new call attempt
    again = invite_text(peer, branch="z9hG4bK-again").replace("tag=p1", "tag=p2")
    assert [m.status for m in peer.send(again)] == [503]  # type: ignore[union-attr]
    # out-of-dialog requests with that Call-ID spend the message budget like any other
    opt = in_dialog(peer, "OPTIONS", "x", 5, call_id="raw-1").replace(";tag=x", "")
    assert len(peer.send(opt)) == 1
    assert peer.send(opt.replace("OPTIONS5", "OPTIONS6")) == []
    bogus = in_dialog(peer, "BYE", "no-such-tag", 7, call_id="raw-1")
    assert peer.send(bogus) == []  # an unknown dialog: charged, and the budget is spent
    assert [r for r, _, _ in rejections(peer.events())] == ["rate_limited"] * 3


def test_a_trunk_shares_one_budget_across_its_sources_and_is_allowed() -> None:
    trunk = TrunkPolicy.of("carrier", ["198.51.100.0/28"], calls_per_second=1, calls_burst=3)
    policy = SourcePolicy(["10.0.0.0/24"], calls_per_second=1, calls_burst=1, trunks=[trunk])
    assert policy.is_allowed("198.51.100.3") and policy.trunk_of("198.51.100.3") == "carrier"
    assert policy.trunk_of("10.0.0.9") is None and not policy.is_allowed("198.51.100.99")
    uas = SipEndpoint(EndpointConfig(UAS, 5060), policy=policy)
    statuses = []
    for i in range(4):  # four addresses of the trunk, one budget of 3
        peer = RawPeer(uas, f"198.51.100.{i + 1}")
        out = peer.send(invite_text(peer, call_id=f"t{i}", branch=f"z9hG4bK-t{i}"))
        statuses += [m.status for m in out]  # type: ignore[union-attr]
    assert statuses == [100, 100, 100, 503]
    # an allow-listed address outside the trunk has its own budget (of 1)
    other = RawPeer(uas, "10.0.0.9")
    assert [m.status for m in other.send(invite_text(other, call_id="o1"))] == [100]  # type: ignore[union-attr]
    out = other.send(invite_text(other, call_id="o2", branch="z9hG4bK-o2"))
    assert [m.status for m in out] == [503]  # type: ignore[union-attr]


def test_policy_budgets_in_simulated_time() -> None:
    policy = SourcePolicy(["10.0.0.0/8"], rate=10, burst=5, calls_per_second=50, calls_burst=100)
    assert [policy.admit_call("10.0.0.1", 0.0) for _ in range(101)] == [True] * 100 + [False]
    assert not policy.calls_exhausted("10.0.0.1", 0.0)  # no call token, but a 503 to spare
    assert policy.admit_call("10.0.0.1", 0.02)  # 50/s: one token per 20 ms
    assert policy.retry_after("10.0.0.1") == 1
    # messages and calls are separate budgets
    assert [policy.admit("10.0.0.1", 0.02) for _ in range(6)] == [True] * 5 + [False]
    replies = SourcePolicy(["10.0.0.0/8"], calls_per_second=1, calls_burst=1, reply_rate=2)
    assert replies.admit_call("10.0.0.2", 0.0) and not replies.admit_call("10.0.0.2", 0.0)
    assert [replies.admit_reply(0.0) for _ in range(3)] == [True, True, False]
    assert replies.calls_exhausted("10.0.0.2", 0.0)
    assert not replies.calls_exhausted("10.0.0.2", 0.5)  # a 503 token is back
