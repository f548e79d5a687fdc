"""SipEndpoint cores in pairs (and against hand-written peers) with simulated time and loss."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import SipCallStateError
from gateway.secret import Secret
from gateway.sip.auth import Credentials, DigestServer
from gateway.sip.events import (
    CallAcked,
    CallCancelled,
    CallEndedByRemote,
    CallTerminated,
    DtmfInfoReceived,
    IncomingCallReceived,
    MediaUpdated,
    OutboundCallAnswered,
    OutboundCallFailed,
    OutboundCallProgressed,
    RequestRejected,
    TransferProgressed,
    UnexpectedInput,
)
from gateway.sip.message import SipRequest, SipResponse, make_response, parse
from gateway.sip.policy import SourcePolicy
from gateway.sip.sdp import MediaPolicy, SessionDescription, make_offer, negotiate, with_direction
from gateway.sip.transaction import T1, Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.sip_memory import (
    PairNet,
    RawPeer,
    events_of,
    in_dialog,
    invite_text,
    make_pair,
)

UAC, UAS = "10.0.0.1", "10.0.0.2"
TRUNK = Address("udp", UAS, 5060)


def place_call(
    net: PairNet, uac: SipEndpoint, uas: SipEndpoint, *, ring: bool = True, answer: bool = True
) -> tuple[int, int]:
    call = uac.invite(
        "sip:bot@10.0.0.2", make_offer(UAC, 4000), "sip:alice@10.0.0.1", TRUNK, net.now
    )
    net.flush()
    incoming = events_of(net.take(UAS), IncomingCallReceived)
    assert len(incoming) == 1
    inc = incoming[0]
    if ring:
        uas.ring(inc.call, net.now)
    if answer:
        uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, net.now)
    net.flush()
    return call, inc.call


def test_basic_call_and_bye_from_uas() -> None:
    net, uac, uas = make_pair()
    call, inc = place_call(net, uac, uas)
    events = net.take(UAC)
    assert [type(e) for e in events] == [OutboundCallProgressed, OutboundCallAnswered]
    assert events_of(events, OutboundCallAnswered)[0].answer.audio().port == 5000
    assert events_of(net.take(UAS), CallAcked) == [CallAcked(inc, None)]
    uas.hangup(inc, net.now)
    net.flush()
    assert net.take(UAC) == [CallEndedByRemote(call)]
    assert uas.active_calls == uac.active_calls == 0
    net.advance(100.0)
    assert uas.transaction_count == uac.transaction_count == 0


def test_incoming_call_event_carries_headers_and_source() -> None:
    net, uac, _uas = make_pair()
    uac.invite(
        "sip:bot@10.0.0.2",
        make_offer(UAC, 4000),
        "sip:alice@10.0.0.1",
        TRUNK,
        0.0,
        headers=[("X-Customer", "42")],
    )
    net.flush()
    inc = events_of(net.take(UAS), IncomingCallReceived)[0]
    assert inc.headers["X-Customer"] == "42"
    assert inc.from_uri == "sip:alice@10.0.0.1" and inc.to_uri == "sip:bot@10.0.0.2"
    assert inc.source == Address("udp", UAC, 5060)
    with pytest.raises(TypeError):
        inc.headers["X-Customer"] = "x"  # type: ignore[index]


def test_lost_200_is_retransmitted_until_ack() -> None:
    net, uac, uas = make_pair()
    dropped: list[str] = []

    def drop(msg: SipRequest | SipResponse, src: str, dst: str) -> bool:
        if isinstance(msg, SipResponse) and msg.status == 200 and len(dropped) < 2:
            dropped.append("200")
            return True
        return False

    net.drop = drop
    _call, _inc = place_call(net, uac, uas)
    assert not events_of(net.take(UAC), OutboundCallAnswered)
    net.advance(2.0)
    assert events_of(net.take(UAC), OutboundCallAnswered)  # third copy at 1.5 s got through
    assert events_of(net.take(UAS), CallAcked)
    assert len(net.sent(UAS, "200")) == 3
    net.advance(40.0)
    assert len(net.sent(UAS, "200")) == 3  # the ACK stopped it


def test_no_ack_ends_the_call_with_bye_after_64_t1() -> None:
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "ACK"
    _call, inc = place_call(net, uac, uas)
    net.advance(64 * T1 + 1)
    times = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(net.sent(UAS, "200")) >= len(times)  # 2xx retransmissions (+ the BYE's 200)
    assert events_of(net.take(UAS), CallTerminated) == [CallTerminated(inc, "ack_timeout")]
    assert net.sent(UAS, "BYE")
    assert events_of(net.take(UAC), CallEndedByRemote)
    net.advance(200.0)
    assert uas.active_calls == uac.active_calls == 0
    assert uas.transaction_count == uac.transaction_count == 0


def test_lost_invite_is_retransmitted_and_makes_one_call() -> None:
    net, uac, _uas = make_pair()
    drops = {"n": 0}

    def drop(msg: SipRequest | SipResponse, src: str, dst: str) -> bool:
        if isinstance(msg, SipRequest) and msg.method == "INVITE" and drops["n"] < 1:
            drops["n"] += 1
            return True
        return False

    net.drop = drop
    uac.invite("sip:bot@10.0.0.2", make_offer(UAC, 4000), "sip:alice@10.0.0.1", TRUNK, 0.0)
    net.flush()
    assert not net.take(UAS)
    net.advance(0.6)
    assert len(events_of(net.take(UAS), IncomingCallReceived)) == 1


def test_invite_retransmission_in_proceeding_gets_the_last_provisional() -> None:
    net, uac, uas = make_pair()
    _call, _inc = place_call(net, uac, uas, ring=True, answer=False)
    net.advance(1.6)  # timer A is off after the 1xx, so no copy yet: send one by hand
    invite = net.sent(UAC, "INVITE")[0]
    uas.receive(invite.serialize(), Address("udp", UAC, 5060), net.now)
    out = uas.messages_to_send()
    assert len(out) == 1 and parse(out[0][0]).status == 180  # type: ignore[union-attr]
    assert not events_of(net.take(UAS), IncomingCallReceived)


def test_cancel_from_uac() -> None:
    net, uac, uas = make_pair()
    call, inc = place_call(net, uac, uas, ring=True, answer=False)
    uac.hangup(call, net.now)
    net.flush()
    assert net.take(UAS) == [CallCancelled(inc)]
    assert events_of(net.take(UAC), CallTerminated) == [CallTerminated(call, "cancelled")]
    assert [r.status for r in net.sent(UAS, "487")] == [487]
    assert net.sent(UAC, "ACK")  # the 487 was ACKed
    with pytest.raises(SipCallStateError):
        uas.accept(inc, make_offer(UAS, 5000), net.now)
    net.advance(100.0)
    assert uas.transaction_count == uac.transaction_count == 0


def test_hangup_before_any_provisional_waits_to_cancel() -> None:
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipResponse) and m.status == 100
    call = uac.invite("sip:bot@10.0.0.2", make_offer(UAC, 4000), "sip:a@10.0.0.1", TRUNK, 0.0)
    net.flush()
    inc = events_of(net.take(UAS), IncomingCallReceived)[0]
    uac.hangup(call, 0.1)
    net.flush()
    assert not net.sent(UAC, "CANCEL")  # §9.1: not before a provisional response
    uas.ring(inc.call, 0.2)
    net.flush()
    assert net.sent(UAC, "CANCEL")
    assert net.take(UAS) == [CallCancelled(inc.call)]


def test_reinvite_hold_and_resume_both_sides_see_media_updates() -> None:
    net, uac, uas = make_pair()
    call, _inc = place_call(net, uac, uas)
    net.take(UAC), net.take(UAS)
    hold = with_direction(make_offer(UAC, 4000, session_version=1), "sendonly")
    assert hold.session_version == 2
    uac.reinvite(call, hold, net.now)
    net.flush()
    (remote,) = events_of(net.take(UAS), MediaUpdated)
    assert remote.negotiated.on_hold and remote.negotiated.direction == "sendonly"
    assert remote.negotiated.answer.audio().direction == "recvonly"
    assert remote.negotiated.answer.session_version == 2  # changed: version bumped
    (local,) = events_of(net.take(UAC), MediaUpdated)
    assert local.negotiated.direction == "recvonly"
    uac.reinvite(call, with_direction(hold, "sendrecv"), net.now)
    net.flush()
    (resumed,) = events_of(net.take(UAS), MediaUpdated)
    assert not resumed.negotiated.on_hold
    assert resumed.negotiated.answer.session_version == 3


def test_reinvite_with_new_address_and_codec() -> None:
    net, uac, uas = make_pair()
    call, _inc = place_call(net, uac, uas)
    net.take(UAS)
    uac.reinvite(
        call,
        make_offer("10.0.0.9", 4100, MediaPolicy(codecs=("pcma",)), session_version=2),
        net.now,
    )
    net.flush()
    (update,) = events_of(net.take(UAS), MediaUpdated)
    assert update.negotiated.remote_rtp == ("10.0.0.9", 4100)
    assert update.negotiated.codec == "pcma"


def test_reinvite_with_no_common_codec_gets_488_and_the_call_survives() -> None:
    net, uac, uas = make_pair()
    call, inc = place_call(net, uac, uas)
    bad = make_offer(UAC, 4000)
    bad.media[0].formats = ["18"]
    bad.media[0].attributes = [("rtpmap", "18 G729/8000")]
    uac.reinvite(call, bad, net.now)
    net.flush()
    assert net.sent(UAS, "488")
    uas.hangup(inc, net.now)
    net.flush()
    assert events_of(net.take(UAC), CallEndedByRemote)


def test_dtmf_info_and_refer_and_notify_between_two_endpoints() -> None:
    net, uac, uas = make_pair()
    call, inc = place_call(net, uac, uas)
    net.take(UAS)
    # INFO from the caller: our endpoint has no INFO command, so build it from the dialog
    ep_call = uac._core.calls[call]
    assert ep_call.dialog is not None
    for ctype, body in [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
        ("application/dtmf", b"#"),
        ("application/dtmf-relay", b"Signal=11\r\n"),
    ]:
        uac._core.send_in_dialog(ep_call, "INFO", net.now, [("Content-Type", ctype)], body)
        net.flush()
    assert net.take(UAS) == [
        DtmfInfoReceived(inc, "5", 160),
        DtmfInfoReceived(inc, "#", 0),
        DtmfInfoReceived(inc, "#", 0),
    ]
    uas.refer(inc, "sip:agent@10.0.0.9", net.now)
    net.flush()
    assert [r.status for r in net.sent(UAC, "405")] == [405]  # our UA does not take REFER
    assert net.take(UAS) == [TransferProgressed(inc, 405, True)]


def answered_raw_call(
    extra: str = "", body: str | None = None
) -> tuple[SipEndpoint, RawPeer, int, str, list[Any]]:
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(uas)
    out = peer.send(invite_text(peer, extra=extra, body=body))
    assert [m.status for m in out] == [100]  # type: ignore[union-attr]
    events = peer.events()
    inc = events_of(events, IncomingCallReceived)[0]
    sdp = negotiate(inc.offer, UAS, 5000).answer if inc.offer else make_offer(UAS, 5000)
    uas.accept(inc.call, sdp, 0.0)
    ok = parse(uas.messages_to_send()[0][0])
    assert isinstance(ok, SipResponse) and ok.status == 200
    return uas, peer, inc.call, ok.to.tag or "", events


def ack_text(peer: RawPeer, tag: str, cseq: int = 1, body: str = "") -> str:
    return in_dialog(
        peer, "ACK", tag, cseq, body=body, extra="Content-Type: application/sdp\n" if body else ""
    )


def test_offer_from_raw_peer_negotiates_its_ptime_and_dynamic_dtmf_pt() -> None:
    _uas, _peer, _call, _tag, events = answered_raw_call()
    inc = events_of(events, IncomingCallReceived)[0]
    n = negotiate(inc.offer, UAS, 5000)
    assert (n.codec, n.payload_type, n.dtmf_payload_type, n.ptime) == ("pcma", 8, 96, 30)
    assert n.remote_rtp == ("10.0.0.5", 7000)


def test_late_offer_answer_comes_in_the_ack() -> None:
    _uas, peer, _call, tag, events = answered_raw_call(body="")
    assert events_of(events, IncomingCallReceived)[0].offer is None
    answer = "v=0\no=- 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\nm=audio 7002 RTP/AVP 0\n"
    peer.send(ack_text(peer, tag, body=answer.replace("\n", "\r\n")))
    (acked,) = events_of(peer.events(), CallAcked)
    assert acked.answer is not None and acked.answer.audio().port == 7002


def test_update_with_sdp_and_session_refresh() -> None:
    uas, peer, _call, tag, _ = answered_raw_call(extra="Session-Expires: 120\nSupported: timer\n")
    peer.send(ack_text(peer, tag))
    peer.events()
    hold = (
        "v=0\no=- 1 2 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n"
        "m=audio 7000 RTP/AVP 0\na=inactive\n"
    )
    (resp,) = peer.send(
        in_dialog(peer, "UPDATE", tag, 2, body=hold, extra="Content-Type: application/sdp\n"),
        now=10.0,
    )
    assert resp.status == 200 and b"a=inactive" in resp.body  # type: ignore[union-attr]
    (update,) = events_of(peer.events(), MediaUpdated)
    assert update.negotiated.on_hold and update.negotiated.direction == "inactive"
    # a body-less UPDATE refreshes the session timer
    (resp,) = peer.send(
        in_dialog(peer, "UPDATE", tag, 3, extra="Session-Expires: 120\nSupported: timer\n"),
        now=100.0,
    )
    assert resp.status == 200 and "refresher=uac" in (resp.headers.get("Session-Expires") or "")
    assert methods_sent(uas, 100.0 + 120 - 32 - 0.01) == []
    assert methods_sent(uas, 100.0 + 120 - 32) == ["BYE"]  # §10: expiry minus min(32, SE/3)


def methods_sent(endpoint: SipEndpoint, until: float) -> list[str]:
    """Fire the endpoint's timers up to `until`; the methods of the requests it sent."""
    out: list[str] = []
    while (when := endpoint.get_timer()) is not None and when <= until:
        endpoint.handle_timer(when)
        out += [
            m.method
            for d, _ in endpoint.messages_to_send()
            if isinstance(m := parse(d), SipRequest)
        ]
    return out


def test_session_timer_expiry_sends_bye() -> None:
    uas, peer, call, tag, _ = answered_raw_call(
        extra="Session-Expires: 90;refresher=uac\nSupported: timer\n"
    )
    peer.send(ack_text(peer, tag))
    peer.events()
    assert methods_sent(uas, 59.99) == []
    assert methods_sent(uas, 60.0) == ["BYE"]
    assert events_of(peer.events(), CallTerminated) == [CallTerminated(call, "session_expired")]


def test_session_expires_too_small_gets_422() -> None:
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(uas)
    (resp,) = peer.send(invite_text(peer, extra="Session-Expires: 30\nSupported: timer\n"))
    assert resp.status == 422 and resp.headers.get("Min-SE") == "90"  # type: ignore[union-attr]


def test_info_dtmf_and_bye_from_raw_peer() -> None:
    _uas, peer, call, tag, _ = answered_raw_call()
    peer.send(ack_text(peer, tag))
    peer.events()
    (resp,) = peer.send(
        in_dialog(
            peer,
            "INFO",
            tag,
            2,
            body="Signal=*\nDuration=100\n",
            extra="Content-Type: application/dtmf-relay\n",
        )
    )
    assert resp.status == 200  # type: ignore[union-attr]
    (resp,) = peer.send(
        in_dialog(
            peer, "INFO", tag, 3, body="Signal=Z\n", extra="Content-Type: application/dtmf-relay\n"
        )
    )
    assert resp.status == 400 and "DTMF" in resp.reason  # type: ignore[union-attr]
    (resp,) = peer.send(
        in_dialog(peer, "INFO", tag, 4, body="<xml/>", extra="Content-Type: application/xml\n")
    )
    assert resp.status == 415  # type: ignore[union-attr]
    assert events_of(peer.events(), DtmfInfoReceived) == [DtmfInfoReceived(call, "*", 100)]
    (resp,) = peer.send(
        in_dialog(
            peer, "INFO", tag, 1, body="Signal=1\n", extra="Content-Type: application/dtmf-relay\n"
        )
    )
    assert resp.status == 500  # CSeq went backwards (§12.2.2)
    (resp,) = peer.send(in_dialog(peer, "BYE", tag, 5))
    assert resp.status == 200  # type: ignore[union-attr]
    assert peer.events() == [CallEndedByRemote(call)]
    (again,) = peer.send(in_dialog(peer, "BYE", tag, 5))  # retransmission: same answer
    assert again.status == 200  # type: ignore[union-attr]
    (resp,) = peer.send(in_dialog(peer, "BYE", tag, 6))
    assert resp.status == 481  # type: ignore[union-attr]


def test_refer_followed_by_notify_sipfrag() -> None:
    uas, peer, call, tag, _ = answered_raw_call()
    peer.send(ack_text(peer, tag))
    peer.events()
    uas.refer(call, "sip:agent@pbx.example.com", 1.0)
    (refer,) = [parse(d) for d, _ in uas.messages_to_send()]
    assert isinstance(refer, SipRequest) and refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:agent@pbx.example.com>"
    assert refer.uri == "sip:peer@10.0.0.5:5062"  # the remote target from Contact
    peer.send(make_response(refer, 202, "Accepted").serialize().decode(), 1.1)
    notify = "SIP/2.0 100 Trying\n"
    for frag, state, cseq in [
        ("SIP/2.0 100 Trying\n", "active", 2),
        ("SIP/2.0 200 OK\n", "terminated;reason=noresource", 3),
    ]:
        (resp,) = peer.send(
            in_dialog(
                peer,
                "NOTIFY",
                tag,
                cseq,
                body=frag,
                extra=f"Event: refer\nSubscription-State: {state}\nContent-Type: message/sipfrag\n",
            ),
            1.2,
        )
        assert resp.status == 200  # type: ignore[union-attr]
    assert notify
    assert peer.events() == [
        TransferProgressed(call, 202, False),
        TransferProgressed(call, 100, False),
        TransferProgressed(call, 200, True),
    ]


def test_outbound_invite_with_digest_auth_sha256() -> None:
    net, uac, uas = make_pair()
    uas.auth = DigestServer("gw", {"trunk": Secret("pw")})
    call = uac.invite(
        "sip:bot@10.0.0.2",
        make_offer(UAC, 4000),
        "sip:a@10.0.0.1",
        TRUNK,
        0.0,
        credentials=Credentials("trunk", Secret("pw")),
    )
    net.flush()
    (challenge,) = net.sent(UAS, "401")
    assert [
        v.split("algorithm=")[1].split(",")[0]
        for v in challenge.headers.get_all("WWW-Authenticate")
    ] == ["SHA-256", "MD5"]
    inc = events_of(net.take(UAS), IncomingCallReceived)[0]
    retry = net.sent(UAC, "INVITE")[-1]
    assert "algorithm=SHA-256" in (retry.headers.get("Authorization") or "")
    assert retry.cseq.seq == 2
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, 0.0)
    net.flush()
    assert events_of(net.take(UAC), OutboundCallAnswered)
    assert call in uac._core.calls


def test_outbound_invite_wrong_password_fails() -> None:
    net, uac, uas = make_pair()
    uas.auth = DigestServer("gw", {"trunk": Secret("pw")})
    call = uac.invite(
        "sip:bot@10.0.0.2",
        make_offer(UAC, 4000),
        "sip:a@10.0.0.1",
        TRUNK,
        0.0,
        credentials=Credentials("trunk", Secret("wrong")),
    )
    net.flush()
    assert events_of(net.take(UAC), OutboundCallFailed) == [
        OutboundCallFailed(call, 401, "Unauthorized")
    ]
    assert [r.reason for r in events_of(net.take(UAS), RequestRejected)] == [
        "auth_required",
        "auth_failed",
    ]


def test_outbound_invite_to_nobody_times_out() -> None:
    net, uac, _uas = make_pair()
    call = uac.invite(
        "sip:x@10.0.0.7", None, "sip:a@10.0.0.1", Address("udp", "10.0.0.7", 5060), 0.0
    )
    net.advance(64 * T1 + 1)
    assert events_of(net.take(UAC), OutboundCallFailed) == [
        OutboundCallFailed(call, 408, "Request Timeout")
    ]
    assert uac.active_calls == 0


def rejected(uas: SipEndpoint) -> list[tuple[str, str, int]]:
    out = []
    while (e := uas.next_event()) is not None:
        if isinstance(e, RequestRejected):
            out.append((e.reason, e.method, e.status))
    return out


def test_policy_rejections_cost_nothing() -> None:
    uas = SipEndpoint(
        EndpointConfig(UAS, 5060), policy=SourcePolicy(["10.0.0.0/30"], rate=5, burst=5)
    )
    stranger = RawPeer(uas, "192.0.2.66")
    (resp,) = stranger.send(invite_text(stranger))
    assert resp.status == 403  # type: ignore[union-attr]
    scanner = RawPeer(uas, "192.0.2.67")
    assert scanner.send(invite_text(scanner, extra="User-Agent: friendly-scanner\n")) == []
    assert rejected(uas) == [("not_allowed", "INVITE", 403), ("scanner", "INVITE", 0)]
    assert uas.transaction_count == 0 and uas.active_calls == 0
    trunk = RawPeer(uas, "10.0.0.2")
    for i in range(6):
        out = trunk.send(
            f"OPTIONS sip:gw@10.0.0.2 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK{i}"
            f"\nFrom: <sip:t@h>;tag=1\nTo: <sip:gw@h>\nCall-ID: o{i}\nCSeq: 1 OPTIONS\n\n"
        )
        assert len(out) == (1 if i < 5 else 0)  # the sixth in the same instant: dropped
    assert rejected(uas) == [("rate_limited", "OPTIONS", 0)]
    # new calls have their own budget: the message budget being spent does not refuse them
    assert [m.status for m in trunk.send(invite_text(trunk))] == [100]  # type: ignore[union-attr]


def test_draining_unsupported_unknown() -> None:
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    peer = RawPeer(uas)
    uas.set_draining(True)
    (resp,) = peer.send(invite_text(peer))
    assert resp.status == 503 and resp.headers.get("Retry-After")  # type: ignore[union-attr]
    uas.set_draining(False)
    (resp,) = peer.send(invite_text(peer, branch="z9hG4bK-2", extra="Require: foo, 100rel\n"))
    assert resp.status == 420 and resp.headers.get("Unsupported") == "foo"  # type: ignore[union-attr]
    g729 = "v=0\no=- 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\nm=audio 7000 RTP/AVP 18\n"
    out = peer.send(invite_text(peer, branch="z9hG4bK-3", body=g729, call_id="g729"))
    assert [m.status for m in out] == [488]  # type: ignore[union-attr]
    out = peer.send(
        invite_text(peer, branch="z9hG4bK-4", extra="Max-Forwards: 0\n", call_id="mf").replace(
            "Max-Forwards: 70\n", ""
        )
    )
    assert [m.status for m in out] == [483]  # type: ignore[union-attr]
    (resp,) = peer.send(in_dialog(peer, "FOO", "x", 1).replace(";tag=x", ""))
    assert resp.status == 501 and "INVITE" in (resp.headers.get("Allow") or "")  # type: ignore[union-attr]
    (resp,) = peer.send(in_dialog(peer, "REGISTER", "x", 1).replace(";tag=x", ""))
    assert resp.status == 405  # type: ignore[union-attr]
    (resp,) = peer.send(in_dialog(peer, "BYE", "nope", 1))
    assert resp.status == 481  # type: ignore[union-attr]
    assert [r[0] for r in rejected(uas)] == [
        "draining",
        "unsupported",
        "no_codec",
        "too_many_hops",
        "not_implemented",
        "unsupported",
        "unknown_dialog",
    ]
    assert uas.active_calls == 0


def test_malformed_request_gets_400_with_reason_routed_by_via_rport() -> None:
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    bad = (
        "OPTIONS sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKm;"
        "rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: m\r\n\r\n"
    )
    uas.receive(bad.encode(), Address("udp", "198.51.100.1", 40000), 0.0)
    ((data, dest),) = uas.messages_to_send()
    assert data.startswith(b"SIP/2.0 400 Bad Request (missing CSeq)")
    assert dest == Address("udp", "198.51.100.1", 40000)  # RFC 3581: back to the NAT binding
    assert rejected(uas) == [("malformed", "OPTIONS", 400)]


def test_response_routing_without_rport_uses_received_and_sent_by_port() -> None:
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    opt = (
        "OPTIONS sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKo\r\n"
        "From: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    uas.receive(opt.encode(), Address("udp", "198.51.100.1", 40000), 0.0)
    ((data, dest),) = uas.messages_to_send()
    assert dest == Address("udp", "198.51.100.1", 5070)  # §18.2.2: received= + sent-by port
    resp = parse(data)
    assert resp.top_via.received == "198.51.100.1"
    assert "INVITE" in (resp.headers.get("Allow") or "")


def test_commands_outside_their_state_raise() -> None:
    net, uac, uas = make_pair()
    _call, inc = place_call(net, uac, uas)
    with pytest.raises(SipCallStateError):
        uas.accept(inc, make_offer(UAS, 5000), net.now)
    with pytest.raises(SipCallStateError):
        uas.ring(inc, net.now)
    with pytest.raises(SipCallStateError):
        uas.hangup(999, net.now)
    uas.hangup(inc, net.now)
    uas.hangup(inc, net.now)  # idempotent while ending
    net.flush()
    with pytest.raises(SipCallStateError):
        uas.refer(inc, "sip:x@y", net.now)


def test_hangup_before_ack_waits_for_the_ack() -> None:
    net, uac, uas = make_pair()
    net.drop = lambda m, s, d: isinstance(m, SipRequest) and m.method == "ACK" and net.now < 1
    _call, inc = place_call(net, uac, uas)
    uas.hangup(inc, net.now)
    net.flush()
    assert not net.sent(UAS, "BYE")  # §15: not until the ACK
    net.advance(1.6)  # the 200 retransmission at 1.5 s brings an ACK that is not dropped
    assert net.sent(UAS, "BYE")
    assert events_of(net.take(UAC), CallEndedByRemote)


def test_sdp_parse_of_answer_in_events_is_typed() -> None:
    net, uac, uas = make_pair()
    _call, _inc = place_call(net, uac, uas)
    answered = events_of(net.take(UAC), OutboundCallAnswered)[0]
    assert isinstance(answered.answer, SessionDescription)


def test_unanswered_invite_gets_480_after_the_answer_timeout() -> None:
    net, uac, uas = make_pair()
    call, inc = place_call(net, uac, uas, ring=True, answer=False)
    net.take(UAS)
    net.advance(179.0)
    assert not net.sent(UAS, "480")
    net.advance(181.0)
    assert net.take(UAS) == [CallTerminated(inc, "no_answer")]
    assert events_of(net.take(UAC), OutboundCallFailed) == [
        OutboundCallFailed(call, 480, "Temporarily Unavailable")
    ]
    assert uas.active_calls == uac.active_calls == 0


@pytest.mark.parametrize(
    ("request_uri", "contact"),
    [
        ("sip:bot@10.0.0.2", "<sip:gateway@10.0.0.2:5061;transport=tls>"),
        ("sips:bot@10.0.0.2", "<sips:gateway@10.0.0.2:5061>"),  # §12.1.1: sips dialog
    ],
    ids=["sip", "sips"],
)
def test_a_call_over_tls_gets_via_and_contact_on_the_tls_port(
    request_uri: str, contact: str
) -> None:
    """Phones send in-dialog requests (ACK, BYE) to our Contact: over TLS it must name the TLS
    port, and `sip:...;transport=tls` unless the call was dialled as sips: (baresip, for one,
    cannot follow a sips: Contact on a sip: call)."""
    uas = SipEndpoint(EndpointConfig(UAS, 5060, tls_port=5061))
    peer = RawPeer(uas)
    peer.addr = Address("tls", peer.host, 40001, conn=7)
    text = invite_text(peer).replace("SIP/2.0/UDP", "SIP/2.0/TLS")
    text = text.replace("INVITE sip:bot@10.0.0.2 ", f"INVITE {request_uri} ", 1)
    assert [m.status for m in peer.send(text)] == [100]  # type: ignore[union-attr]
    [inc] = events_of(peer.events(), IncomingCallReceived)
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5000).answer, 0.0)
    [(data, addr)] = uas.messages_to_send()
    ok = parse(data)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.headers.get("Contact") == contact and addr.conn == 7
    peer.send(ack_text(peer, ok.to.tag or ""))
    uas.hangup(inc.call, 1.0)
    [(data, addr)] = uas.messages_to_send()
    bye = parse(data)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert (bye.headers.get("Via") or "").startswith("SIP/2.0/TLS 10.0.0.2:5061;")
    assert addr.transport == "tls"
    # a call over UDP to the same endpoint: the UDP port
    udp = RawPeer(uas, port=5064)
    udp.send(invite_text(udp, call_id="udp-1", branch="z9hG4bK-u1"))
    [inc] = events_of(udp.events(), IncomingCallReceived)
    uas.accept(inc.call, negotiate(inc.offer, UAS, 5002).answer, 2.0)
    [(data, _)] = uas.messages_to_send()
    ok = parse(data)
    assert (
        isinstance(ok, SipResponse) and ok.headers.get("Contact") == "<sip:gateway@10.0.0.2:5060>"
    )


def test_a_transaction_table_gap_is_reported_not_swallowed() -> None:
    """A timer a transaction's table has no entry for is a core bug: reported as an
    `UnexpectedInput` event (the adapter logs and counts it), and the transaction ends so the
    timer cannot spin."""
    uas = SipEndpoint(EndpointConfig(UAS, 5060))
    opt = (
        "OPTIONS sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKg\r\n"
        "From: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: g\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    uas.receive(opt.encode(), Address("udp", "10.0.0.5", 5070), 0.0)
    assert uas.next_event() is None and uas.transaction_count == 1
    (tx,) = uas._core.server_tx.values()
    tx._timers["G"] = 1.0  # timer G belongs to INVITE server transactions only
    uas.handle_timer(1.0)
    assert uas.next_event() == UnexpectedInput("non_invite_server", "completed", "timer_G")
    assert uas.transaction_count == 0


def test_an_outbound_invite_arms_its_timers_at_once() -> None:
    """`invite()` is a command like the others: the next `get_timer()` has timer A in it, so
    the adapter re-arms its one timer and a lost INVITE is retransmitted (RFC 3261 §17.1.1.2)
    even when nothing else happens on the endpoint."""
    _net, uac, _uas = make_pair()
    assert uac.get_timer() is None
    uac.invite("sip:bot@10.0.0.2", make_offer(UAC, 4000), "sip:alice@10.0.0.1", TRUNK, 5.0)
    assert uac.get_timer() == 5.0 + T1
