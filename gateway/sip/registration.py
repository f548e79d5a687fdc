"""Outbound registration (RFC 3261 §10.2): one binding per trunk, kept fresh, sans-I/O.

Theory of operation: each `[trunks.NAME]` with `register = true` is one `Registration`, driven by
one table, `TABLE[(state, input)] → (next state, steps)`, h11 style. The inputs are the
application's commands (start, stop), the final responses to our REGISTER by kind (2xx, a digest
challenge we can answer, 423 with a larger Min-Expires, any other failure), our transaction
timing out (timer F), and the registration's own two timers (refresh, retry). A pair the table
lacks is reported as `UnexpectedInput(machine="registration")`, never a silent fallthrough.

    IDLE ──start──▶ REGISTERING ──2xx──▶ REGISTERED ──refresh timer──▶ REFRESHING ──2xx──┐
                      │  ▲  401/407: again with credentials (§22.2)            ▲          │
                      │  └─ 423: again with Min-Expires (§10.2.8)              └──────────┘
                      └─ failure/timeout ─▶ BACKOFF ──retry timer──▶ REGISTERING
    any ──stop──▶ UNREGISTERING (Expires: 0) ──final/timeout──▶ STOPPED
    (a REGISTER still out when stop comes: UNREGISTER_DUE until its answer, §10.2: one at a time)

Rules kept as data: one Call-ID for the registration's life and a CSeq one higher on every
REGISTER, retries included (§10.2.4); the expiry granted is the 2xx's `expires` parameter on our
Contact, else its Expires header, else what we asked (§10.2.4), and the refresh goes out at the
later of half of it and a minute before its end; a failure waits
`min(cap, base·2^(n-1))`, scaled by 50-100 % with the jitter given in (RFC 5626 §4.5's shape),
and at least a 503's Retry-After. A digest challenge is answered once per REGISTER (again only
when `stale=true`): a second 401 means the credentials are wrong, a failure.

Time comes in as `now`; requests go out through the `UaCore`'s client transactions (purpose
`register`), and the deadlines are read by `SipEndpoint.get_timer()`. Nothing here logs.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import SipParseError
from gateway.sip import routing
from gateway.sip.auth import Credentials, authorization, pick_challenge
from gateway.sip.events import RegistrationUpdated, UnexpectedInput
from gateway.sip.message import Headers, NameAddr, SipRequest, SipResponse, SipUri
from gateway.sip.transaction import Address
from gateway.sip.ua_core import ALLOW, UaCore

#: RFC 5626 §4.5: base and cap of the wait after consecutive failures (seconds)
BACKOFF_BASE = 30.0
BACKOFF_CAP = 1800.0
#: refresh this long before the binding runs out (but never later than half its life)
REFRESH_MARGIN = 60.0
MIN_REFRESH = 1.0  # a registrar granting 1 s must not make us spin
MAX_EXPIRES = 86400  # a 423's Min-Expires above this is a failure, not a retry


class RegState(enum.Enum):
    IDLE = "idle"  # made, not started
    REGISTERING = "registering"  # a REGISTER is out, no binding known
    REGISTERED = "registered"  # bound until `expires_at`; the refresh timer is armed
    REFRESHING = "refreshing"  # bound, the refresh REGISTER is out
    BACKOFF = "backoff"  # the last REGISTER failed; the retry timer is armed
    UNREGISTER_DUE = "unregister_due"  # stop came while a REGISTER was out (§10.2: one at a time)
    UNREGISTERING = "unregistering"  # our REGISTER with Expires: 0 is out
    STOPPED = "stopped"


class RegInput(enum.Enum):
    START = "register_start"
    STOP = "register_stop"
    OK = "register_2xx"
    CHALLENGE = "register_challenge"  # 401/407 we can still answer
    TOO_BRIEF = "register_423"  # 423 with a usable, larger Min-Expires
    FAILURE = "register_failure"  # any other final response
    TIMEOUT = "register_timeout"  # our transaction timed out (timer F)
    TIMER_REFRESH = "register_refresh_timer"
    TIMER_RETRY = "register_retry_timer"


_SENDING = (RegState.REGISTERING, RegState.REFRESHING)

TABLE: dict[tuple[RegState, RegInput], tuple[RegState, tuple[str, ...]]] = {
    (RegState.IDLE, RegInput.START): (RegState.REGISTERING, ("send_register",)),
    (RegState.IDLE, RegInput.STOP): (RegState.STOPPED, ()),
    **{
        (state, inp): entry
        for state in _SENDING
        for inp, entry in {
            RegInput.OK: (RegState.REGISTERED, ("bound",)),
            RegInput.CHALLENGE: (state, ("send_with_auth",)),
            RegInput.TOO_BRIEF: (state, ("raise_expires", "send_register")),
            RegInput.FAILURE: (RegState.BACKOFF, ("back_off",)),
            RegInput.TIMEOUT: (RegState.BACKOFF, ("back_off",)),
            RegInput.STOP: (RegState.UNREGISTER_DUE, ()),
        }.items()
    },
    (RegState.REGISTERED, RegInput.TIMER_REFRESH): (RegState.REFRESHING, ("send_register",)),
    (RegState.REGISTERED, RegInput.STOP): (RegState.UNREGISTERING, ("send_unregister",)),
    (RegState.BACKOFF, RegInput.TIMER_RETRY): (RegState.REGISTERING, ("send_register",)),
    (RegState.BACKOFF, RegInput.STOP): (RegState.UNREGISTERING, ("send_unregister",)),
    # the REGISTER that was out has its answer: now the un-REGISTER (if anything may be bound)
    (RegState.UNREGISTER_DUE, RegInput.OK): (RegState.UNREGISTERING, ("send_unregister",)),
    (RegState.UNREGISTER_DUE, RegInput.CHALLENGE): (RegState.UNREGISTERING, ("send_unregister",)),
    (RegState.UNREGISTER_DUE, RegInput.TOO_BRIEF): (RegState.UNREGISTERING, ("send_unregister",)),
    (RegState.UNREGISTER_DUE, RegInput.FAILURE): (RegState.UNREGISTERING, ("send_unregister",)),
    (RegState.UNREGISTER_DUE, RegInput.TIMEOUT): (RegState.STOPPED, ("unbound",)),
    (RegState.UNREGISTER_DUE, RegInput.STOP): (RegState.UNREGISTER_DUE, ()),
    (RegState.UNREGISTERING, RegInput.OK): (RegState.STOPPED, ("unbound",)),
    (RegState.UNREGISTERING, RegInput.CHALLENGE): (RegState.UNREGISTERING, ("send_with_auth",)),
    (RegState.UNREGISTERING, RegInput.TOO_BRIEF): (RegState.STOPPED, ("unbound",)),
    (RegState.UNREGISTERING, RegInput.FAILURE): (RegState.STOPPED, ("unbound",)),
    (RegState.UNREGISTERING, RegInput.TIMEOUT): (RegState.STOPPED, ("unbound",)),
    (RegState.UNREGISTERING, RegInput.STOP): (RegState.UNREGISTERING, ()),
    (RegState.STOPPED, RegInput.STOP): (RegState.STOPPED, ()),
    (RegState.STOPPED, RegInput.START): (RegState.REGISTERING, ("send_register",)),
}

#: what a registration reports (metrics label values, /readyz), by state
REPORTED = {
    RegState.IDLE: "unregistered",
    RegState.REGISTERING: "registering",
    RegState.REGISTERED: "registered",
    RegState.REFRESHING: "registered",
    RegState.BACKOFF: "failed",
    RegState.UNREGISTER_DUE: "unregistering",
    RegState.UNREGISTERING: "unregistering",
    RegState.STOPPED: "unregistered",
}
REPORTED_STATES = ("registering", "registered", "failed", "unregistering", "unregistered")
#: the outcome of one REGISTER transaction (bounded labels of gateway_sip_registrations_total)
RESULTS = ("registered", "unregistered", "interval_too_brief", "rejected", "timeout")


@dataclass(frozen=True)
class RegistrationConfig:
    """One trunk's registration: the registrar's URI (the Request-URI, §10.2), the
    address-of-record (From and To), the user part of our Contact (how INVITEs to the binding
    are told apart), where REGISTERs go, the expiry asked for and the digest credentials."""

    trunk: str
    registrar: str
    aor: str
    contact_user: str
    destination: Address
    expires: int = 3600
    credentials: Credentials | None = None


@dataclass
class Registration:
    """One registration's data; `state` moves by `TABLE` only."""

    handle: int
    config: RegistrationConfig
    call_id: str
    from_tag: str
    state: RegState = RegState.IDLE
    cseq: int = 0
    expires: int = 0  # asked for (raised by a 423's Min-Expires)
    branch: str = ""  # of the REGISTER that is out; responses to others are old
    request: SipRequest | None = None
    auth_tries: int = 0
    failures: int = 0  # consecutive, for the backoff
    granted: int = 0  # the expiry of the binding the registrar confirmed
    expires_at: float | None = None  # the binding runs out (as far as we know)
    refresh_at: float | None = None
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A final response or a timeout, as the table's steps need it."""

    now: float
    response: SipResponse | None = None


def _challenge(response: SipResponse) -> dict[str, str] | None:
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    return pick_challenge(response.headers.get_all(header))


def _int_header(response: SipResponse, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value.split(";")[0].strip())
    except ValueError:
        return None


def granted_expiry(response: SipResponse, contact: SipUri, asked: int) -> int:
    """§10.2.4: the `expires` parameter of our Contact in the 2xx, else its Expires header,
    else what we asked for."""
    for value in response.headers.get_all("Contact"):
        try:
            bound = NameAddr.parse(value)
        except (SipParseError, ValueError):
            continue
        same = (bound.uri.user, bound.uri.host.lower(), bound.uri.port or 5060) == (
            contact.user,
            contact.host.lower(),
            contact.port or 5060,
        )
        expires = bound.params.get("expires")
        if same and expires is not None and expires.isdecimal():
            return int(expires)
    header = _int_header(response, "Expires")
    return asked if header is None else header


def refresh_delay(granted: int) -> float:
    """When to refresh a binding granted for `granted` seconds: a minute before its end, but
    never later than halfway (and never sooner than MIN_REFRESH)."""
    return max(MIN_REFRESH, granted / 2, granted - REFRESH_MARGIN)


def backoff_delay(failures: int, jitter: float, base: float, cap: float) -> float:
    """RFC 5626 §4.5: `min(cap, base·2^(failures-1))`, scaled into 50-100 % by `jitter` (0-1)."""
    doubled = base * float(2 ** max(0, failures - 1))
    return min(cap, doubled) * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))


class Registrations:
    """The registration role of one user agent: every trunk's registration, its table, its
    REGISTER requests and its timers."""

    def __init__(
        self,
        core: UaCore,
        *,
        jitter: Callable[[], float] = random.random,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.core = core
        self.jitter = jitter
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.regs: dict[int, Registration] = {}
        self._by_trunk: dict[str, int] = {}
        self._steps: dict[str, Callable[[Registration, _Outcome], None]] = {
            "send_register": self._send_register,
            "send_with_auth": self._send_with_auth,
            "send_unregister": self._send_unregister,
            "raise_expires": self._raise_expires,
            "bound": self._bound,
            "unbound": self._unbound,
            "back_off": self._back_off,
        }

    # --- commands

    def start(self, config: RegistrationConfig, now: float) -> None:
        """Register `config.trunk` and keep it registered (again after `stop`)."""
        handle = self._by_trunk.get(config.trunk)
        if handle is None:
            handle = self.core.new_handle()  # never a call's handle: responses route by it
            call_id = f"{routing.new_tag()}{routing.new_tag()}@{self.core.config.host}"
            self.regs[handle] = Registration(handle, config, call_id, routing.new_tag())
            self._by_trunk[config.trunk] = handle
        reg = self.regs[handle]
        if (reg.state, RegInput.START) in TABLE:  # else reported by _fire, nothing changed
            reg.config = config
            reg.expires = config.expires
            reg.failures = 0
        self._fire(reg, RegInput.START, _Outcome(now))

    def stop(self, trunk: str, now: float) -> None:
        """Un-register (Expires: 0) and stop; nothing happens for an unknown trunk."""
        handle = self._by_trunk.get(trunk)
        if handle is not None:
            self._fire(self.regs[handle], RegInput.STOP, _Outcome(now))

    def states(self) -> dict[str, str]:
        """Each trunk's reported state (`REPORTED_STATES`)."""
        return {reg.config.trunk: REPORTED[reg.state] for reg in self.regs.values()}

    def trunk_of_contact(self, user: str) -> str | None:
        """The trunk whose registered Contact has this user part (an INVITE to our binding)."""
        for reg in self.regs.values():
            if reg.config.contact_user == user:
                return reg.config.trunk
        return None

    # --- inputs from the endpoint

    def on_response(
        self, handle: int | None, branch: str, response: SipResponse, now: float
    ) -> None:
        """A final response to one of our REGISTERs (provisional ones are the transaction's)."""
        reg = self.regs.get(handle) if handle is not None else None
        if reg is None or branch != reg.branch or response.status < 200:
            return  # an answer to a REGISTER we no longer wait for
        self._fire(reg, self._classify(reg, response), _Outcome(now, response))

    def on_timeout(self, handle: int | None, branch: str, now: float) -> None:
        reg = self.regs.get(handle) if handle is not None else None
        if reg is not None and branch == reg.branch:
            self._fire(reg, RegInput.TIMEOUT, _Outcome(now))

    def timer(self) -> float | None:
        times = [
            t for reg in self.regs.values() for t in (reg.refresh_at, reg.retry_at) if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for reg in list(self.regs.values()):
            if reg.refresh_at is not None and now >= reg.refresh_at:
                reg.refresh_at = None
                self._fire(reg, RegInput.TIMER_REFRESH, _Outcome(now))
            if reg.retry_at is not None and now >= reg.retry_at:
                reg.retry_at = None
                self._fire(reg, RegInput.TIMER_RETRY, _Outcome(now))

    # --- the table

    def _classify(self, reg: Registration, response: SipResponse) -> RegInput:
        status = response.status
        if status < 300:
            return RegInput.OK
        if status in (401, 407) and reg.config.credentials is not None:
            challenge = _challenge(response)
            stale = challenge is not None and challenge.get("stale", "").lower() == "true"
            if challenge is not None and (reg.auth_tries < 1 or stale):
                return RegInput.CHALLENGE
        if status == 423:  # §10.3 step 7, §20.23
            least = _int_header(response, "Min-Expires")
            if least is not None and reg.expires < least <= MAX_EXPIRES:
                return RegInput.TOO_BRIEF
        return RegInput.FAILURE

    def _fire(self, reg: Registration, inp: RegInput, outcome: _Outcome) -> None:
        entry = TABLE.get((reg.state, inp))
        if entry is None:
            self.core.events.append(UnexpectedInput("registration", reg.state.value, inp.value))
            return
        self.core.timer_dirty = True
        before = REPORTED[reg.state]
        next_state, steps = entry
        for name in steps:
            self._steps[name](reg, outcome)
        reg.state = next_state
        if next_state is not RegState.REGISTERED:
            reg.refresh_at = None
        if next_state is not RegState.BACKOFF:
            reg.retry_at = None
        result = self._result(inp, before == "unregistering")
        if result is not None or REPORTED[next_state] != before:
            response = outcome.response
            self.core.events.append(
                RegistrationUpdated(
                    reg.config.trunk,
                    REPORTED[next_state],
                    result,
                    response.status if response is not None else 0,
                    response.reason if response is not None else "",
                    reg.granted if next_state is RegState.REGISTERED else 0,
                    round(reg.retry_at - outcome.now, 3) if reg.retry_at is not None else None,
                )
            )

    @staticmethod
    def _result(inp: RegInput, unregistering: bool) -> str | None:
        """What one REGISTER transaction came to (None: no final outcome, or a challenge)."""
        if inp is RegInput.OK:
            return "unregistered" if unregistering else "registered"
        return {
            RegInput.TIMEOUT: "timeout",
            RegInput.TOO_BRIEF: "interval_too_brief",
            RegInput.FAILURE: "rejected",
        }.get(inp)

    # --- steps

    def _send(
        self,
        reg: Registration,
        expires: int,
        now: float,
        auth: tuple[str, str] | None = None,
    ) -> None:
        """A REGISTER on a new branch with the next CSeq (§10.2.4), in its own transaction."""
        core, config = self.core, reg.config
        dest = config.destination
        reg.cseq += 1
        h = Headers()
        h.add("Via", core.via(dest))
        h.add("Max-Forwards", "70")
        h.add("From", f"<{config.aor}>;tag={reg.from_tag}")
        h.add("To", f"<{config.aor}>")
        h.add("Call-ID", reg.call_id)
        h.add("CSeq", f"{reg.cseq} REGISTER")
        h.add("Contact", self.contact(reg))
        h.add("Expires", str(expires))
        h.add("Allow", ALLOW)
        h.add("User-Agent", core.config.user_agent)
        if auth is not None:
            h.add(*auth)
        request = SipRequest("REGISTER", config.registrar, h)
        reg.request = request
        reg.branch = request.top_via.branch or ""
        core.start_client(request, dest, reg.handle, "register", now)

    def contact(self, reg: Registration) -> str:
        dest = reg.config.destination
        return routing.contact(reg.config.contact_user, self.core.hostport(dest.transport), dest)

    def _send_register(self, reg: Registration, o: _Outcome) -> None:
        reg.auth_tries = 0
        self._send(reg, reg.expires, o.now)

    def _send_unregister(self, reg: Registration, o: _Outcome) -> None:
        reg.auth_tries = 0
        self._send(reg, 0, o.now)

    def _send_with_auth(self, reg: Registration, o: _Outcome) -> None:
        """§22.2: the same REGISTER again with credentials for the challenge."""
        assert o.response is not None and reg.request is not None
        assert reg.config.credentials is not None
        challenge = _challenge(o.response)
        assert challenge is not None
        reg.auth_tries += 1
        name = "Authorization" if o.response.status == 401 else "Proxy-Authorization"
        value = authorization(challenge, "REGISTER", reg.config.registrar, reg.config.credentials)
        expires = int(reg.request.headers.get("Expires") or 0)
        self._send(reg, expires, o.now, (name, value))

    def _raise_expires(self, reg: Registration, o: _Outcome) -> None:
        """§10.2.8: 423 Interval Too Brief: ask again for at least its Min-Expires."""
        assert o.response is not None
        least = _int_header(o.response, "Min-Expires")
        assert least is not None
        reg.expires = least

    def _bound(self, reg: Registration, o: _Outcome) -> None:
        assert o.response is not None
        contact = NameAddr.parse(self.contact(reg)).uri
        reg.granted = granted_expiry(o.response, contact, reg.expires)
        reg.failures = 0
        reg.expires_at = o.now + reg.granted
        reg.refresh_at = o.now + refresh_delay(reg.granted)

    def _unbound(self, reg: Registration, o: _Outcome) -> None:
        reg.expires_at = None
        reg.granted = 0

    def _back_off(self, reg: Registration, o: _Outcome) -> None:
        reg.failures += 1
        delay = backoff_delay(reg.failures, self.jitter(), self.backoff_base, self.backoff_cap)
        if o.response is not None and o.response.status in (500, 503):
            retry_after = _int_header(o.response, "Retry-After")  # §20.33
            if retry_after is not None:
                delay = max(delay, min(float(retry_after), self.backoff_cap))
        if reg.expires_at is not None and o.now >= reg.expires_at:
            reg.expires_at = None
        reg.retry_at = o.now + delay
