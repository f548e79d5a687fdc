"""RFC 4028 session timers and digest on in-dialog requests, in the sans-I/O endpoint with
simulated time: our endpoint places or answers a call, a hand-written far end answers with the
headers under test, and the clock is run to the deadlines (no event loop, no sockets)."""

from __future__ import annotations

from gateway.secret import Secret
from gateway.sip.auth import AuthResult, Credentials, DigestServer, parse_digest
from gateway.sip.events import CallTerminated
from gateway.sip.message import SipRequest, SipResponse, make_response, parse
from gateway.sip.sdp import make_offer, negotiate
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.sip_memory import RawPeer, in_dialog, invite_text

US, FAR = "10.0.0.1", "10.0.0.9"
FAR_ADDR = Address("udp", FAR, 5060)
ALLOW_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
ALLOW_NO_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS"
CREDS = Credentials("trunkuser", Secret("s3cret"))


class Far:
    """The far end of an outbound call of `ep`: answers what it sends, by hand."""

    def __init__(self, ep: SipEndpoint) -> None:
        self.ep = ep
        self.now = 0.0
        self.sent: list[SipRequest] = []  # the endpoint's requests, in order

    def take(self) -> list[SipRequest]:
        """The requests the endpoint sent since the last take (responses, ACKs dropped)."""
        out = []
        for data, _ in self.ep.messages_to_send():
            msg = parse(data)
            if isinstance(msg, SipRequest) and msg.method != "ACK":
                out.append(msg)
        self.sent += out
        return out

    def answer(
        self, request: SipRequest, status: int, headers: list[tuple[str, str]], body: bytes = b""
    ) -> None:
        response = make_response(request, status, "X", to_tag="far1", headers=headers, body=body)
        self.ep.receive(response.serialize(), FAR_ADDR, self.now)

    def run_until(self, until: float) -> list[tuple[float, SipRequest]]:
        """Fire the endpoint's timers up to `until`: the requests it sent, with their times
        (retransmissions left out)."""
        out: list[tuple[float, SipRequest]] = []
        while (when := self.ep.get_timer()) is not None and when <= until:
            self.now = when
            self.ep.handle_timer(when)
            out += [(when, r) for r in self.take()]
        self.now = until
        seen: set[tuple[str, str]] = set()
        fresh = []
        for when, r in out:
            key = (r.top_via.branch or "", r.method)
            if key not in seen:
                seen.add(key)
                fresh.append((when, r))
        return fresh

    def events(self) -> list[object]:
        out = []
        while (e := self.ep.next_event()) is not None:
            out.append(e)
        return out


def outbound(
    se_header: str | None,
    allow: str = ALLOW_UPDATE,
    *,
    session_expires: int | None = 1800,
    min_se: int | None = 90,
) -> tuple[Far, int, SipRequest]:
    """An outbound call answered 200 with `Session-Expires: se_header` (None: none) and
    `Allow: allow`; returns the far end, the call and our INVITE."""
    ep = SipEndpoint(EndpointConfig(US, 5060))
    far = Far(ep)
    handle = ep.invite(
        f"sip:1000@{FAR}",
        make_offer(US, 4000),
        f"sip:gw@{US}",
        FAR_ADDR,
        0.0,
        credentials=CREDS,
        session_expires=session_expires,
        min_se=min_se,
    )
    (invite,) = far.take()
    headers = [("Contact", f"<sip:far@{FAR}:5060>"), ("Allow", allow)]
    if se_header is not None:
        headers += [("Session-Expires", se_header), ("Require", "timer")]
    answer = negotiate(make_offer(US, 4000).__class__.parse(invite.body), FAR, 6000).answer
    headers.append(("Content-Type", "application/sdp"))
    far.answer(invite, 200, headers, answer.serialize())
    far.take()
    far.events()
    return far, handle, invite


# --- outbound: the 2xx's Session-Expires decides


def test_our_invite_asks_the_trunks_interval_and_min_se() -> None:
    _far, _h, invite = outbound(None, session_expires=600, min_se=120)
    assert invite.headers.get("Session-Expires") == "600"  # no refresher: the UAS picks (§7.1)
    assert invite.headers.get("Min-SE") == "120"
    assert "timer" in invite.headers.get_all("Supported")


def test_refresher_uac_in_the_2xx_we_update_at_half_the_interval() -> None:
    far, _h, _invite = outbound("90;refresher=uac")
    assert far.run_until(44.9) == []
    [(when, update)] = far.run_until(45.0)
    assert (when, update.method) == (45.0, "UPDATE")
    # the refresher, seen from the UPDATE's own transaction: we, its UAC (§7.4)
    assert update.headers.get("Session-Expires") == "90;refresher=uac"
    assert update.headers.get("Min-SE") == "90" and update.body == b""
    far.answer(update, 200, [("Session-Expires", "90;refresher=uac"), ("Require", "timer")])
    [(when, again)] = far.run_until(90.0)
    assert (when, again.method) == (90.0, "UPDATE")  # re-armed by the 2xx, N/2 later


def test_no_update_in_their_allow_we_refresh_with_the_unchanged_offer() -> None:
    far, _h, invite = outbound("90;refresher=uac", allow=ALLOW_NO_UPDATE)
    [(when, reinvite)] = far.run_until(45.0)
    assert (when, reinvite.method) == (45.0, "INVITE")
    assert reinvite.headers.get("Session-Expires") == "90;refresher=uac"
    assert reinvite.body == invite.body  # same SDP, same o= version (RFC 3264 §8)
    assert reinvite.cseq.seq == invite.cseq.seq + 1


def test_no_refresher_parameter_in_the_2xx_we_the_uac_refresh() -> None:
    far, _h, _invite = outbound("120")
    [(when, update)] = far.run_until(60.0)
    assert (when, update.method) == (60.0, "UPDATE")


def test_refresher_uas_and_no_refresh_comes_we_bye_before_the_interval() -> None:
    far, handle, _invite = outbound("90;refresher=uas")
    assert far.run_until(59.9) == []
    [(when, bye)] = far.run_until(60.0)  # §10: 90 - min(32, 90/3)
    assert (when, bye.method) == (60.0, "BYE")
    assert CallTerminated(handle, "session_expired") in far.events()


def test_their_refresh_resets_the_expiry_and_our_2xx_names_them_refresher() -> None:
    far, _h, invite = outbound("90;refresher=uas")
    far.run_until(50.0)
    peer = RawPeer(far.ep, FAR, 5060)
    # their UPDATE, they are its UAC and keep refreshing: refresher=uac in our 2xx
    text = (
        f"UPDATE sip:gw@{US}:5060 SIP/2.0\nVia: SIP/2.0/UDP {FAR}:5060;branch=z9hG4bK-u1\n"
        f"From: <sip:1000@{FAR}>;tag=far1\nTo: {invite.headers.get('From')}\n"
        f"Call-ID: {invite.call_id}\nCSeq: 1 UPDATE\nContact: <sip:far@{FAR}:5060>\n"
        "Session-Expires: 90;refresher=uac\nSupported: timer\nContent-Length: 0\n\n"
    )
    (ok,) = peer.send(text, now=50.0)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert far.run_until(109.9) == []
    [(when, bye)] = far.run_until(110.0)
    assert (when, bye.method) == (110.0, "BYE")


def test_no_session_expires_in_the_2xx_no_timer() -> None:
    far, _h, _invite = outbound(None)
    assert far.run_until(4000.0) == []


def test_refresh_answered_481_or_408_ends_the_call_with_bye() -> None:
    for status in (481, 408):
        far, handle, _invite = outbound("90;refresher=uac")
        [(_, update)] = far.run_until(45.0)
        far.answer(update, status, [])
        (bye,) = far.take()
        assert bye.method == "BYE"
        assert CallTerminated(handle, "refresh_failed") in far.events()


def test_refresh_answered_500_keeps_the_session_until_it_expires() -> None:
    far, handle, _invite = outbound("90;refresher=uac")
    [(_, update)] = far.run_until(45.0)
    far.answer(update, 500, [])
    assert far.take() == []
    assert far.run_until(89.9) == []
    [(when, bye)] = far.run_until(90.0)
    assert (when, bye.method) == (90.0, "BYE")
    assert CallTerminated(handle, "session_expired") in far.events()


def test_refresh_timing_out_ends_the_call_with_bye() -> None:
    far, _h, _invite = outbound("180;refresher=uac")
    sent = far.run_until(90.0 + 32.0)  # timer F: 64*T1 after the UPDATE
    assert [r.method for _, r in sent] == ["UPDATE", "BYE"]


# --- 422 (RFC 4028 §7.3)


def test_422_to_our_invite_is_retried_with_its_min_se() -> None:
    ep = SipEndpoint(EndpointConfig(US, 5060))
    far = Far(ep)
    ep.invite(
        f"sip:1000@{FAR}",
        make_offer(US, 4000),
        f"sip:gw@{US}",
        FAR_ADDR,
        0.0,
        session_expires=90,
        min_se=90,
    )
    (invite,) = far.take()
    far.answer(invite, 422, [("Min-SE", "300")])
    (retry,) = far.take()
    assert retry.method == "INVITE" and retry.cseq.seq == invite.cseq.seq + 1
    assert retry.headers.get("Session-Expires") == "300"
    assert retry.headers.get("Min-SE") == "300"
    assert retry.top_via.branch != invite.top_via.branch
    # a 422 whose Min-SE is no higher than what we asked is a failure, not a loop
    far.answer(retry, 422, [("Min-SE", "300")])
    assert far.take() == []


def test_422_to_our_refresh_is_retried_with_its_min_se() -> None:
    far, _h, _invite = outbound("90;refresher=uac")
    [(_, update)] = far.run_until(45.0)
    far.answer(update, 422, [("Min-SE", "200")])
    (retry,) = far.take()
    assert retry.method == "UPDATE" and retry.cseq.seq == update.cseq.seq + 1
    assert retry.headers.get("Session-Expires") == "200;refresher=uac"
    assert retry.headers.get("Min-SE") == "200"
    far.answer(retry, 200, [("Session-Expires", "200;refresher=uac")])
    [(when, _next)] = far.run_until(45.0 + 100.0)
    assert when == 145.0


def test_their_too_brief_refresh_gets_422_with_our_min_se() -> None:
    uas = SipEndpoint(EndpointConfig("10.0.0.2", 5060))
    peer = RawPeer(uas)
    responses = peer.send(invite_text(peer, extra="Session-Expires: 1800\nSupported: timer\n"))
    handle = next(e.call for e in peer.events() if hasattr(e, "offer"))
    call = uas._core.calls[handle]
    assert call.remote_sdp is not None
    uas.accept(handle, negotiate(call.remote_sdp, "10.0.0.2", 5000).answer, 0.0)
    (ok,) = [parse(d) for d, _ in uas.messages_to_send()]
    assert isinstance(ok, SipResponse) and ok.headers.get("Session-Expires") == (
        "1800;refresher=uac"
    )
    tag = ok.to.tag or ""
    peer.send(in_dialog(peer, "ACK", tag, 1))
    (resp,) = peer.send(
        in_dialog(peer, "UPDATE", tag, 2, extra="Session-Expires: 60\nSupported: timer\n")
    )
    assert isinstance(resp, SipResponse) and resp.status == 422
    assert resp.headers.get("Min-SE") == "90"
    assert responses[0].status == 100  # type: ignore[union-attr]


def test_inbound_we_refresh_and_say_refresher_uac_in_our_update() -> None:
    """The caller asks us to refresh: our UPDATE, of which we are the UAC, says uac."""
    uas = SipEndpoint(EndpointConfig("10.0.0.2", 5060))
    peer = RawPeer(uas)
    peer.send(
        invite_text(
            peer,
            extra=f"Session-Expires: 90;refresher=uas\nSupported: timer\nAllow: {ALLOW_UPDATE}\n",
        )
    )
    handle = next(e.call for e in peer.events() if hasattr(e, "offer"))
    call = uas._core.calls[handle]
    assert call.remote_sdp is not None
    uas.accept(handle, negotiate(call.remote_sdp, "10.0.0.2", 5000).answer, 0.0)
    (ok,) = [parse(d) for d, _ in uas.messages_to_send()]
    assert isinstance(ok, SipResponse)
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    peer.send(in_dialog(peer, "ACK", ok.to.tag or "", 1))
    uas.handle_timer(45.0)
    (update,) = [m for d, _ in uas.messages_to_send() if isinstance(m := parse(d), SipRequest)]
    assert update.method == "UPDATE"
    assert update.headers.get("Session-Expires") == "90;refresher=uac"


# --- digest on in-dialog requests (RFC 3261 §22.2)

SERVER = DigestServer("carrier", {"trunkuser": Secret("s3cret")})
PROXY = DigestServer("carrier", {"trunkuser": Secret("s3cret")}, proxy=True)


def _challenge(far: Far, request: SipRequest, status: int = 401) -> None:
    far.answer(request, status, (SERVER if status == 401 else PROXY).challenge(far.now))


def test_a_challenged_bye_is_sent_again_with_credentials() -> None:
    far, handle, _invite = outbound(None)
    far.ep.hangup(handle, 1.0)
    far.now = 1.0
    (bye,) = far.take()
    _challenge(far, bye)
    (retry,) = far.take()
    assert retry.method == "BYE" and retry.cseq.seq == bye.cseq.seq + 1
    assert SERVER.verify(retry, 1.0) is AuthResult.OK
    # a second challenge with the nonce already answered fails the BYE: our side ends anyway
    again = make_response(
        retry,
        401,
        "Unauthorized",
        to_tag="far1",
        headers=[
            (
                "WWW-Authenticate",
                'Digest realm="carrier", nonce="{}", algorithm=MD5, qop="auth"'.format(
                    parse_digest(retry.headers.get("Authorization") or "")["nonce"]
                ),
            )
        ],
    )
    far.ep.receive(again.serialize(), FAR_ADDR, 1.0)
    assert far.take() == []
    assert far.ep.active_calls == 0


def test_a_challenged_refresh_reinvite_is_sent_again_with_proxy_credentials() -> None:
    far, _h, _invite = outbound("90;refresher=uac", allow=ALLOW_NO_UPDATE)
    [(_, reinvite)] = far.run_until(45.0)
    _challenge(far, reinvite, 407)
    (retry,) = far.take()
    assert retry.method == "INVITE" and retry.cseq.seq == reinvite.cseq.seq + 1
    assert retry.body == reinvite.body
    assert PROXY.verify(retry, 45.0) is AuthResult.OK


def test_a_challenged_update_without_credentials_is_a_plain_failure() -> None:
    ep = SipEndpoint(EndpointConfig(US, 5060))
    far = Far(ep)
    ep.invite(f"sip:1000@{FAR}", make_offer(US, 4000), f"sip:gw@{US}", FAR_ADDR, 0.0)
    (invite,) = far.take()
    answer = negotiate(make_offer(US, 4000).__class__.parse(invite.body), FAR, 6000).answer
    far.answer(
        invite,
        200,
        [
            ("Contact", f"<sip:far@{FAR}:5060>"),
            ("Allow", ALLOW_UPDATE),
            ("Session-Expires", "90;refresher=uac"),
            ("Content-Type", "application/sdp"),
        ],
        answer.serialize(),
    )
    far.take()
    [(_, update)] = far.run_until(45.0)
    _challenge(far, update)
    assert far.take() == []  # nothing to answer it with: the session runs on to its expiry
    [(when, bye)] = far.run_until(90.0)
    assert (when, bye.method) == (90.0, "BYE")
