"""RFC 3263 §4.3 fail-over of our INVITE in the sans-I/O endpoint: on timer B, a 503 or a
transport error (§17.1.4) the same call tries the trunk's next target in a new client
transaction; anything else is final. Simulated time, no event loop, no sockets."""

from __future__ import annotations

import pytest

from gateway.sip.events import OutboundCallAnswered, OutboundCallFailed, OutboundCallFailedOver
from gateway.sip.message import SipRequest, make_response, parse
from gateway.sip.sdp import make_offer
from gateway.sip.transaction import T1, Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig

FIRST = Address("udp", "127.0.0.1", 5070)
SECOND = Address("udp", "127.0.0.2", 5071)
THIRD = Address("tcp", "127.0.0.3", 5072)


def place(alternates: tuple[Address, ...] = (SECOND, THIRD)) -> tuple[SipEndpoint, int]:
    ep = SipEndpoint(EndpointConfig("127.0.0.9", 5060))
    handle = ep.invite(
        "sip:bot@trunk.test",
        make_offer("127.0.0.9", 4000),
        "sip:gw@127.0.0.9",
        FIRST,
        0.0,
        alternates=alternates,
    )
    return ep, handle


def invites(ep: SipEndpoint) -> list[tuple[SipRequest, Address]]:
    out = []
    for data, addr in ep.messages_to_send():
        message = parse(data)
        if isinstance(message, SipRequest) and message.method == "INVITE":
            out.append((message, addr))
    return out


def events(ep: SipEndpoint) -> list[object]:
    got = []
    while (event := ep.next_event()) is not None:
        got.append(event)
    return got


def answer(ep: SipEndpoint, invite: SipRequest, status: int, now: float) -> None:
    response = make_response(invite, status, "X", to_tag="far")
    ep.receive(response.serialize(), Address("udp", "127.0.0.1", 5070), now)


def run_timers(ep: SipEndpoint, until: float) -> None:
    while (when := ep.get_timer()) is not None and when <= until:
        ep.handle_timer(when)


def test_timer_b_moves_to_the_next_target_same_call_new_transaction() -> None:
    ep, handle = place()
    [(first, to)] = invites(ep)
    assert to == FIRST
    run_timers(ep, 64 * T1 - 0.01)  # timer A retransmits to the first target meanwhile
    assert {addr for _, addr in invites(ep)} == {FIRST} and events(ep) == []
    run_timers(ep, 64 * T1)  # timer B
    [(second, to)] = invites(ep)
    assert to == SECOND
    assert events(ep) == [OutboundCallFailedOver(handle, "timeout", FIRST, SECOND)]
    # RFC 3263 §4.3: a new client transaction of the same call
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.top_via.branch != first.top_via.branch
    assert second.cseq.seq == first.cseq.seq + 1
    # the next target answers: the call is answered
    answer(ep, second, 200, 64 * T1 + 0.1)
    assert any(isinstance(e, OutboundCallAnswered) for e in events(ep))


def test_a_503_moves_on_to_a_tcp_target_with_its_own_via() -> None:
    ep, handle = place()
    [(first, _)] = invites(ep)
    answer(ep, first, 503, 0.1)
    [(second, to)] = invites(ep)
    assert to == SECOND and events(ep) == [OutboundCallFailedOver(handle, "503", FIRST, SECOND)]
    answer(ep, second, 503, 0.2)
    [(third, to)] = invites(ep)
    assert to == THIRD and third.top_via.transport == "TCP"
    assert "transport=tcp" in (third.headers.get("Contact") or "")
    answer(ep, third, 503, 0.3)  # none left: the 503 is the call's answer
    assert invites(ep) == []
    assert events(ep) == [
        OutboundCallFailedOver(handle, "503", SECOND, THIRD),
        OutboundCallFailed(handle, 503, "X"),
    ]


def test_any_other_failure_is_final() -> None:
    ep, handle = place()
    [(first, _)] = invites(ep)
    answer(ep, first, 486, 0.1)
    assert invites(ep) == []
    assert events(ep) == [OutboundCallFailed(handle, 486, "X")]


def test_a_transport_error_fails_over_at_once_not_after_timer_b() -> None:
    """§17.1.4: the transport reports the error to the transaction; before this change a send
    error was only counted, and the call waited 32 s for timer B."""
    ep, handle = place()
    invites(ep)
    ep.transport_error(FIRST, 0.05)
    [(_, to)] = invites(ep)
    assert to == SECOND
    assert events(ep) == [OutboundCallFailedOver(handle, "transport", FIRST, SECOND)]
    # an error for an address no transaction of ours is sending to changes nothing
    ep.transport_error(Address("udp", "127.0.0.99", 5060), 0.06)
    assert invites(ep) == [] and events(ep) == []


def test_a_transport_error_with_no_target_left_fails_the_call_as_a_503() -> None:
    ep, handle = place(alternates=())
    invites(ep)
    ep.transport_error(FIRST, 0.05)
    assert events(ep) == [OutboundCallFailed(handle, 503, "Service Unavailable (transport)")]
    assert ep.active_calls == 0 and ep.get_timer() is None


@pytest.mark.parametrize("status", [503, None])
def test_a_call_hung_up_before_any_answer_does_not_fail_over(status: int | None) -> None:
    ep, handle = place()
    [(first, _)] = invites(ep)
    ep.hangup(handle, 0.01)  # no provisional yet: the CANCEL waits (§9.1)
    if status is None:
        ep.transport_error(FIRST, 0.02)
    else:
        answer(ep, first, status, 0.02)
    assert invites(ep) == []
    assert [type(e).__name__ for e in events(ep)] == ["CallTerminated"]
    assert ep.active_calls == 0
