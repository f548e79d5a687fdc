"""Outbound registration (RFC 3261 §10.2) in simulated time: the endpoint's REGISTERs against a
hand-written registrar in memory (digest checked by the gateway's own `DigestServer`), with no
event loop. The real registrar (Kamailio) and sipp are in tests/e2e_sip/test_e2e_sip_register.py.
"""

from __future__ import annotations

import itertools

import pytest

from gateway.secret import Secret
from gateway.sip.auth import AuthResult, Credentials, DigestServer
from gateway.sip.events import RegistrationUpdated, SipEvent, UnexpectedInput
from gateway.sip.message import NameAddr, SipRequest, make_response, parse
from gateway.sip.registration import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    TABLE,
    RegInput,
    RegistrationConfig,
    RegState,
    _Outcome,
    refresh_delay,
)
from gateway.sip.transaction import T1, Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig

REGISTRAR = Address("udp", "10.0.0.9", 5060)
SECRET = Secret("s3cret-pw")


def config(**over: object) -> RegistrationConfig:
    values: dict[str, object] = {
        "trunk": "pbx",
        "registrar": "sip:10.0.0.9",
        "aor": "sip:1001@10.0.0.9",
        "contact_user": "1001",
        "destination": REGISTRAR,
        "expires": 600,
        "credentials": Credentials("1001", SECRET),
    }
    values.update(over)
    return RegistrationConfig(**values)  # type: ignore[arg-type]


class Registrar:
    """The far end in memory: takes the endpoint's REGISTERs, answers what the test says."""

    def __init__(self, jitter: float = 1.0) -> None:
        self.ep = SipEndpoint(
            EndpointConfig(host="10.0.0.1", port=5060), registration_jitter=lambda: jitter
        )
        self.now = 0.0
        self.events: list[SipEvent] = []
        self.digest = DigestServer("pbx.example", {"1001": SECRET})

    def sent(self) -> list[SipRequest]:
        out = []
        for data, addr in self.ep.messages_to_send():
            assert addr == REGISTRAR
            msg = parse(data)
            assert isinstance(msg, SipRequest) and msg.method == "REGISTER"
            out.append(msg)
        while (ev := self.ep.next_event()) is not None:
            self.events.append(ev)
        return out

    def one(self) -> SipRequest:
        [request] = self.sent()
        return request

    def answer(self, request: SipRequest, status: int, headers: list[tuple[str, str]]) -> None:
        reply = make_response(request, status, "X", to_tag="reg", headers=headers)
        self.ep.receive(reply.serialize(), REGISTRAR, self.now)

    def ok(self, request: SipRequest, expires: int | None = None) -> None:
        contact = request.headers.get("Contact")
        assert contact is not None
        granted = request.headers.get("Expires") if expires is None else str(expires)
        self.answer(request, 200, [("Contact", f"{contact};expires={granted}")])

    def challenge(self, request: SipRequest) -> None:
        self.answer(request, 401, self.digest.challenge(self.now))

    def advance(self, until: float) -> None:
        """Run the endpoint's timers up to `until` (retransmissions, refresh, retry)."""
        while (when := self.ep.get_timer()) is not None and when <= until:
            self.now = when
            self.ep.handle_timer(when)
        self.now = until

    def next_register_at(self) -> float:
        """Run the endpoint's timers until it has a REGISTER to send; when that was."""
        while not self.ep._core.out:  # what messages_to_send() would return
            when = self.ep.get_timer()
            assert when is not None, "no REGISTER coming"
            self.advance(when)
        return self.now

    def updates(self) -> list[RegistrationUpdated]:
        while (ev := self.ep.next_event()) is not None:
            self.events.append(ev)
        return [e for e in self.events if isinstance(e, RegistrationUpdated) and e.result]


def test_register_with_digest_one_call_id_rising_cseq_and_refresh_before_expiry() -> None:
    reg = Registrar()
    reg.ep.register(config(), reg.now)
    first = reg.one()
    assert first.uri == "sip:10.0.0.9"
    assert first.headers.get("Expires") == "600"
    assert NameAddr.parse(first.headers.get("To") or "").uri.user == "1001"
    assert NameAddr.parse(first.headers.get("Contact") or "").uri.user == "1001"
    assert "Authorization" not in first.headers
    assert reg.ep.registrations == {"pbx": "registering"}
    reg.challenge(first)
    second = reg.one()
    assert reg.digest.verify(second, reg.now) is AuthResult.OK
    assert second.call_id == first.call_id  # §10.2.4: one Call-ID ...
    assert second.cseq.seq == first.cseq.seq + 1  # ... and a CSeq one higher each time
    assert second.top_via.branch != first.top_via.branch
    reg.ok(second, expires=120)  # granted less than asked: the Contact's expires wins
    assert reg.ep.registrations == {"pbx": "registered"}
    [update] = [u for u in reg.updates() if u.result == "registered"]
    assert update.expires == 120 and update.state == "registered"
    # refreshed before the binding runs out: at max(half, expiry - 60 s) = 60 s
    assert reg.sent() == []
    assert reg.next_register_at() == pytest.approx(60.0)
    refresh = reg.one()
    assert refresh.call_id == first.call_id and refresh.cseq.seq == second.cseq.seq + 1
    assert refresh.headers.get("Expires") == "600"
    assert reg.ep.registrations == {"pbx": "registered"}  # still bound while refreshing
    reg.answer(refresh, 200, [("Expires", "300")])  # no Contact param: the Expires header
    assert reg.next_register_at() == pytest.approx(60.0 + 240.0)


def test_refresh_delay_is_a_minute_before_expiry_but_never_after_half() -> None:
    assert refresh_delay(3600) == 3540
    assert refresh_delay(60) == 30
    assert refresh_delay(4) == 2
    assert refresh_delay(0) == 1.0  # never a spin


def test_423_is_retried_with_min_expires() -> None:
    reg = Registrar()
    reg.ep.register(config(expires=60, credentials=None), reg.now)
    first = reg.one()
    assert first.headers.get("Expires") == "60"
    reg.answer(first, 423, [("Min-Expires", "1800")])
    retry = reg.one()  # at once, not after a backoff
    assert retry.headers.get("Expires") == "1800"
    assert retry.call_id == first.call_id and retry.cseq.seq == first.cseq.seq + 1
    reg.ok(retry)
    assert reg.ep.registrations == {"pbx": "registered"}
    assert [u.result for u in reg.updates()] == ["interval_too_brief", "registered"]
    # a 423 that asks for no more than we did is a failure (no loop)
    reg2 = Registrar()
    reg2.ep.register(config(expires=600, credentials=None), reg2.now)
    reg2.answer(reg2.one(), 423, [("Min-Expires", "300")])
    assert reg2.sent() == [] and reg2.ep.registrations == {"pbx": "failed"}


@pytest.mark.parametrize("status", [500, 403])
def test_failures_back_off_exponentially_to_a_cap(status: int) -> None:
    reg = Registrar(jitter=1.0)
    reg.ep.register(config(credentials=None), reg.now)
    request = reg.one()
    waits = []
    for _ in range(8):
        sent_at = reg.now
        reg.answer(request, status, [])
        assert reg.ep.registrations == {"pbx": "failed"}
        assert reg.sent() == []
        retried_at = reg.next_register_at()
        waits.append(round(retried_at - sent_at, 6))
        request = reg.one()
    assert waits == [min(BACKOFF_CAP, BACKOFF_BASE * 2**n) for n in range(8)]
    assert waits[-1] == BACKOFF_CAP
    # the retry_in of each failure is reported (the adapter logs it)
    assert [u.retry_in for u in reg.updates() if u.result == "rejected"] == waits
    # success resets the count: the next failure waits the base again
    reg.ok(request)
    refresh_at = reg.next_register_at()
    reg.answer(reg.one(), status, [])
    assert reg.next_register_at() - refresh_at == pytest.approx(BACKOFF_BASE)


def test_jitter_scales_the_wait_into_half_to_all_of_it() -> None:
    reg = Registrar(jitter=0.0)
    reg.ep.register(config(credentials=None), reg.now)
    reg.answer(reg.one(), 500, [])
    assert reg.next_register_at() == pytest.approx(BACKOFF_BASE / 2)


def test_503_retry_after_is_honoured_when_longer() -> None:
    reg = Registrar(jitter=1.0)
    reg.ep.register(config(credentials=None), reg.now)
    reg.answer(reg.one(), 503, [("Retry-After", "120")])
    assert reg.next_register_at() == pytest.approx(120.0)


def test_timeout_backs_off_after_timer_f() -> None:
    reg = Registrar(jitter=1.0)
    reg.ep.register(config(credentials=None), reg.now)
    request = reg.one()
    reg.advance(64 * T1 + 0.01)  # retransmissions (timer E), then timer F
    resent = reg.sent()
    assert resent and all(r.cseq.seq == request.cseq.seq for r in resent)
    assert reg.ep.registrations == {"pbx": "failed"}
    assert [u.result for u in reg.updates()] == ["timeout"]
    assert reg.next_register_at() == pytest.approx(64 * T1 + BACKOFF_BASE, abs=0.02)
    assert reg.one().cseq.seq == request.cseq.seq + 1


def test_wrong_password_is_a_failure_not_a_loop() -> None:
    reg = Registrar()
    reg.ep.register(config(credentials=Credentials("1001", Secret("wrong"))), reg.now)
    reg.challenge(reg.one())
    second = reg.one()
    assert reg.digest.verify(second, reg.now) is AuthResult.FAILED
    reg.challenge(second)  # a second challenge: the credentials are wrong
    assert reg.sent() == []
    assert reg.ep.registrations == {"pbx": "failed"}
    [update] = reg.updates()[-1:]
    assert update.result == "rejected" and update.status == 401


def test_unregister_sends_expires_0_for_our_contact() -> None:
    reg = Registrar()
    reg.ep.register(config(credentials=None), reg.now)
    first = reg.one()
    reg.ok(first)
    reg.ep.unregister("pbx", reg.now)
    bye = reg.one()
    assert bye.headers.get("Expires") == "0"
    assert bye.headers.get("Contact") == first.headers.get("Contact")  # ours, never "*"
    assert bye.call_id == first.call_id and bye.cseq.seq == first.cseq.seq + 1
    assert reg.ep.registrations == {"pbx": "unregistering"}
    reg.challenge(bye)  # no credentials: a failure ends it just the same
    assert reg.ep.registrations == {"pbx": "unregistered"}
    assert reg.ep.get_timer() is not None  # only the transaction's timer K
    reg.advance(100.0)
    assert reg.sent() == [] and reg.ep.get_timer() is None


def test_unregister_while_a_register_is_out_waits_for_its_answer() -> None:
    reg = Registrar()
    reg.ep.register(config(), reg.now)
    first = reg.one()
    reg.ep.unregister("pbx", reg.now)
    assert reg.sent() == []  # §10.2: not before the REGISTER that is out has its answer
    reg.challenge(first)
    bye = reg.one()
    assert bye.headers.get("Expires") == "0" and "Authorization" not in bye.headers
    reg.challenge(bye)
    authed = reg.one()
    assert authed.headers.get("Expires") == "0"
    assert reg.digest.verify(authed, reg.now) is AuthResult.OK
    reg.ok(authed, expires=0)
    assert reg.ep.registrations == {"pbx": "unregistered"}
    assert reg.updates()[-1].result == "unregistered"


def test_responses_to_older_registers_are_ignored() -> None:
    reg = Registrar()
    reg.ep.register(config(), reg.now)
    first = reg.one()
    reg.challenge(first)
    second = reg.one()
    reg.ok(first)  # a late 200 to the challenged REGISTER (its transaction is completed)
    assert reg.ep.registrations == {"pbx": "registering"}
    reg.ok(second)
    assert reg.ep.registrations == {"pbx": "registered"}


def test_the_contact_user_routes_back_to_its_trunk() -> None:
    reg = Registrar()
    reg.ep.register(config(contact_user="gw-pbx"), reg.now)
    assert reg.ep.registered_trunk("gw-pbx") == "pbx"
    assert reg.ep.registered_trunk("1001") is None


def test_every_pair_outside_the_table_is_reported_not_applied() -> None:
    reg = Registrar()
    reg.ep.register(config(), reg.now)
    reg.sent()
    core = reg.ep._registrations  # the table itself, every gap
    [registration] = core.regs.values()
    gaps = [(s, i) for s, i in itertools.product(RegState, RegInput) if (s, i) not in TABLE]
    assert gaps
    for state, inp in gaps:
        registration.state = state
        core._fire(registration, inp, _Outcome(reg.now))
        assert registration.state is state
    assert reg.sent() == []
    reported = {(e.state, e.input) for e in reg.events if isinstance(e, UnexpectedInput)}
    assert reported == {(s.value, i.value) for s, i in gaps}
    assert all(e.machine == "registration" for e in reg.events if isinstance(e, UnexpectedInput))
