"""RFC 3261 §17 transactions: state tables, retransmission timers, timeouts (simulated time)."""

from __future__ import annotations

import itertools

import pytest

from gateway.errors import TransactionStateError
from gateway.sip.message import Headers, SipRequest, make_response
from gateway.sip.transaction import (
    T1,
    T2,
    T4,
    Address,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    build_ack_for_error,
    build_cancel,
    server_key,
)

UDP = Address("udp", "192.0.2.1", 5060)
TCP = Address("tcp", "192.0.2.1", 5060, 7)


def request(method: str = "INVITE", branch: str = "z9hG4bK-1") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}")
    h.add("Route", "<sip:proxy.example.com;lr>")
    h.add("From", "<sip:a@example.com>;tag=f")
    h.add("To", "<sip:b@example.com>")
    h.add("Call-ID", "c1")
    h.add("CSeq", f"1 {method}")
    return SipRequest(method, "sip:b@example.com", h)


def run_until(
    tx: InviteServerTransaction
    | InviteClientTransaction
    | NonInviteClientTransaction
    | NonInviteServerTransaction,
    until: float,
) -> list[float]:
    """Fire timers up to `until`; return the times at which something was sent."""
    sent: list[float] = []
    while (when := tx.get_timer()) is not None and when <= until:
        before = len(tx.out)
        tx.handle_timer(when)
        if len(tx.out) > before:
            sent.append(round(when, 3))
    return sent


REMOTE_INPUTS = {
    InviteServerTransaction: ("request", "ack"),
    NonInviteServerTransaction: ("request", "ack"),
    # the transport's report that a request could not be sent (§17.1.4) can come in any state
    InviteClientTransaction: ("1xx", "2xx", "final", "transport_error"),
    NonInviteClientTransaction: ("1xx", "2xx", "final", "transport_error"),
}


@pytest.mark.parametrize("cls", [InviteClientTransaction, NonInviteClientTransaction])
def test_a_transport_error_ends_the_request_being_sent_and_nothing_later(cls: type) -> None:
    """§17.1.4 / §8.1.3.1: while the request is being sent, a transport error ends the
    transaction at once (no retransmission, no timer B/F wait); after a response it is
    absorbed."""
    method = "BYE" if cls is NonInviteClientTransaction else "INVITE"
    out: list[tuple[bytes, Address]] = []
    tx = cls(request(method), UDP, out)
    tx.start(0.0)
    assert tx.transport_error(0.01) is True
    assert tx.terminated and tx.transport_failed and not tx.timed_out
    assert tx.get_timer() is None and len(out) == 1
    late = cls(request(method), UDP, out)
    late.start(0.0)
    late.receive_response(make_response(late.request, 486, "Busy", to_tag="t"), 0.1)
    assert late.transport_error(0.2) is False and not late.transport_failed


@pytest.mark.parametrize("cls", list(REMOTE_INPUTS))
def test_every_peer_input_is_in_every_state_of_the_table(cls: type) -> None:
    states = {s for s, _ in cls.TABLE} | {new for new, _ in cls.TABLE.values()}
    for state in states:
        for name in REMOTE_INPUTS[cls]:
            assert (state, name) in cls.TABLE, (cls.__name__, state, name)


def test_local_input_outside_the_table_raises() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteServerTransaction(request(), UDP, out)
    tx.send_response(make_response(tx.request, 486, "Busy Here", to_tag="t"), 0.0)
    with pytest.raises(TransactionStateError):
        tx.send_response(make_response(tx.request, 200, "OK", to_tag="t"), 0.0)


def test_invite_server_non2xx_timer_g_h() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteServerTransaction(request(), UDP, out)
    tx.send_response(make_response(tx.request, 100, "Trying"), 0.0)
    assert tx.receive_request(request(), 0.1) is False  # retransmission: 100 again
    assert len(out) == 2 and out[0] == out[1]
    tx.send_response(make_response(tx.request, 486, "Busy Here", to_tag="t"), 1.0)
    sent = run_until(tx, 100.0)
    # timer G: T1, 2T1, 4T1 ... capped at T2, until timer H (64*T1) gives up
    expected, t, interval = [], 1.0 + T1, T1
    while t < 1.0 + 64 * T1:
        expected.append(round(t, 3))
        interval = min(2 * interval, T2)
        t += interval
    assert sent == expected
    assert tx.terminated and tx.timed_out


def test_invite_server_ack_confirms_then_timer_i() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteServerTransaction(request(), UDP, out)
    tx.send_response(make_response(tx.request, 486, "Busy Here", to_tag="t"), 0.0)
    ack = build_ack_for_error(tx.request, make_response(tx.request, 486, "Busy", to_tag="t"))
    assert tx.receive_request(ack, 0.2) is False  # absorbed, never to the TU
    assert tx.state is State.CONFIRMED
    assert tx.get_timer() == pytest.approx(0.2 + T4)
    assert tx.receive_request(request(), 1.0) is False and len(out) == 1  # absorbed
    run_until(tx, 10.0)
    assert tx.terminated and not tx.timed_out


def test_invite_server_2xx_accepted_state_passes_ack() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteServerTransaction(request(), UDP, out)
    tx.send_response(make_response(tx.request, 200, "OK", to_tag="t"), 0.0)
    assert tx.state is State.ACCEPTED
    assert tx.receive_request(request(), 0.1) is False and len(out) == 1  # RFC 6026 absorb
    assert tx.get_timer() == pytest.approx(64 * T1)


def test_reliable_transport_has_no_retransmission_timers() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteServerTransaction(request(), TCP, out)
    tx.send_response(make_response(tx.request, 486, "Busy Here", to_tag="t"), 0.0)
    assert run_until(tx, 100.0) == []
    assert tx.terminated and tx.timed_out
    nict = NonInviteClientTransaction(request("BYE"), TCP, out)
    nict.start(0.0)
    assert run_until(nict, 100.0) == []


def test_non_invite_server_timer_j() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = NonInviteServerTransaction(request("BYE"), UDP, out)
    assert tx.receive_request(request("BYE"), 0.0) is False and out == []  # Trying: absorbed
    tx.send_response(make_response(tx.request, 200, "OK"), 0.0)
    tx.receive_request(request("BYE"), 1.0)
    assert len(out) == 2  # Completed: final re-sent
    run_until(tx, 64 * T1 - 0.01)
    assert not tx.terminated
    run_until(tx, 64 * T1)
    assert tx.terminated


def test_non_invite_client_timer_e_f() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = NonInviteClientTransaction(request("BYE"), UDP, out)
    tx.start(0.0)
    sent = run_until(tx, 100.0)
    assert sent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # doubling up to T2
    assert all(b - a == pytest.approx(T2) for a, b in itertools.pairwise(sent[3:]))
    assert tx.terminated and tx.timed_out
    assert len(out) == 1 + len(sent)


def test_non_invite_client_provisional_then_final_then_k() -> None:
    out: list[tuple[bytes, Address]] = []
    req = request("REFER")
    tx = NonInviteClientTransaction(req, UDP, out)
    tx.start(0.0)
    assert tx.receive_response(make_response(req, 100, "Trying"), 0.1) is True
    sent = run_until(tx, 6.0)
    assert sent == [0.5, 4.5]  # Proceeding: E fires at T2 intervals
    assert tx.receive_response(make_response(req, 202, "Accepted", to_tag="x"), 6.0) is True
    assert tx.receive_response(make_response(req, 202, "Accepted", to_tag="x"), 6.1) is False
    run_until(tx, 6.0 + T4)
    assert tx.terminated and not tx.timed_out


def test_invite_client_timer_a_b_and_ack_for_error() -> None:
    out: list[tuple[bytes, Address]] = []
    req = request()
    tx = InviteClientTransaction(req, UDP, out)
    tx.start(0.0)
    assert run_until(tx, 3.0) == [0.5, 1.5]  # timer A doubles without a cap
    assert tx.receive_response(make_response(req, 180, "Ringing", to_tag="x"), 3.0) is True
    assert run_until(tx, 20.0) == []  # Proceeding: no retransmissions
    busy = make_response(req, 486, "Busy Here", to_tag="x")
    assert tx.receive_response(busy, 20.0) is True
    ack = out[-1][0]
    assert ack.startswith(b"ACK sip:b@example.com SIP/2.0") and b"CSeq: 1 ACK" in ack
    assert b"branch=z9hG4bK-1" in ack and b"tag=x" in ack and b"Route:" in ack
    assert tx.receive_response(busy, 20.5) is False and out[-1][0] == ack  # ACK re-sent
    run_until(tx, 60.0)
    assert tx.terminated and not tx.timed_out


def test_invite_client_timeout() -> None:
    out: list[tuple[bytes, Address]] = []
    tx = InviteClientTransaction(request(), UDP, out)
    tx.start(0.0)
    run_until(tx, 64 * T1)
    assert tx.terminated and tx.timed_out


def test_invite_client_2xx_passed_every_time() -> None:
    out: list[tuple[bytes, Address]] = []
    req = request()
    tx = InviteClientTransaction(req, UDP, out)
    tx.start(0.0)
    ok = make_response(req, 200, "OK", to_tag="x")
    assert tx.receive_response(ok, 0.1) is True
    assert tx.receive_response(ok, 0.6) is True  # RFC 6026: the TU re-sends its ACK
    assert len(out) == 1  # the transaction itself never ACKs a 2xx


def test_matching_keys() -> None:
    invite = request()
    ack = request("ACK")
    cancel = request("CANCEL")
    assert server_key(ack) == server_key(invite)  # ACK for a non-2xx matches the INVITE
    assert server_key(cancel)[:-1] == server_key(invite)[:-1]
    assert server_key(cancel) != server_key(invite)
    other_port = request()
    other_port.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1")
    assert server_key(other_port) != server_key(invite)  # sent-by is part of the key
    legacy = request(branch="old-style")
    assert server_key(legacy)[0] == "c1"  # RFC 2543 fallback


def test_build_cancel() -> None:
    cancel = build_cancel(request())
    assert cancel.method == "CANCEL" and cancel.cseq.method == "CANCEL" and cancel.cseq.seq == 1
    assert cancel.top_via.branch == "z9hG4bK-1"
    assert cancel.routes and cancel.uri == "sip:b@example.com"


CLIENT_SCRIPTS = (["1xx"], ["1xx", "final"], ["2xx"], ["final"], ["1xx", "2xx", "2xx"], [])
SERVER_SCRIPTS = (
    ["final"],
    ["1xx", "final"],
    ["2xx"],
    ["1xx", "2xx"],
    ["request", "1xx", "request", "final", "request", "ack", "ack"],
    ["2xx", "request", "ack", "ack"],
    ["final", "ack", "request"],
    ["1xx", "request"],
)


@pytest.mark.parametrize("cls", list(REMOTE_INPUTS))
def test_armed_timers_are_always_valid_in_the_current_state(cls: type) -> None:
    """Drive each transaction through the inputs of both sides: every step takes the transition
    its table names (and sends what it must); a timer firing afterwards never hits a gap."""
    method = "BYE" if cls.__name__.startswith("NonInvite") else "INVITE"
    server = not hasattr(cls, "start")
    for script in SERVER_SCRIPTS if server else CLIENT_SCRIPTS:
        out: list[tuple[bytes, Address]] = []
        req = request(method)
        tx = cls(req, UDP, out)
        if not server:
            tx.start(0.0)
        now = 0.1
        for step in script:
            status = {"1xx": 180, "2xx": 200, "final": 486}.get(step)
            inp = step if status is None else f"send_{step}" if server else step
            before, sent = tx.state, len(out)
            expected, _ = cls.TABLE[(before, inp)]
            if status is None:  # a retransmission of the request, or an ACK
                tx.receive_request(request("ACK" if step == "ack" else method), now)
            elif server:  # the TU answers
                tx.send_response(make_response(req, status, "X", to_tag="t"), now)
                assert out[-1][0].startswith(f"SIP/2.0 {status} ".encode())
            else:  # the peer answers
                tx.receive_response(make_response(req, status, "X", to_tag="t"), now)
            assert tx.state is expected, (cls.__name__, script, step, before)
            if server and status is not None:
                assert len(out) == sent + 1
            now += 0.1
        run_until(tx, 1000.0)  # must not raise TransactionStateError
        final = bool(set(script) & {"final", "2xx"})
        if server:
            # only an INVITE's error response that no ACK confirmed times out (timer H)
            acked = "final" in script and "ack" in script[script.index("final") :]
            timeout = method == "INVITE" and "final" in script and not acked
        else:
            # no final response: timer B/F, unless a 1xx put an INVITE in Proceeding for good
            timeout = not final and not (method == "INVITE" and "1xx" in script)
        assert tx.timed_out is timeout, (cls.__name__, script)
        if server and not final:
            assert tx.state is State.PROCEEDING  # no final response yet: nothing times out
        elif script != ["1xx"] or server:
            assert tx.terminated, (cls.__name__, script, tx.state)
