"""Admission: the policy a request meets before any call exists, and what OPTIONS tells
balancers about it.

In order: scanners are dropped; a datagram is screened by its raw Call-ID before parsing; what
matches no transaction or dialog spends its source's message budget; a new INVITE must come
from the allow-list, spend a token of its trunk's call budget (beyond it `503` + Retry-After at
a bounded rate, §21.5.4), find us not draining, and pass digest authentication (RFC 7616; the
authenticated retry costs no new token). Every refusal is a `RequestRejected` with a bounded
reason, so a refused INVITE costs no media port and no `IncomingCallReceived`.

Rate limits (`SourcePolicy`) never touch a message that belongs to a transaction or dialog in
progress (a retransmission, ACK, CANCEL of a known INVITE, an in-dialog request, a response to
our request). Everything else is charged once. Before parsing, a datagram whose Call-ID (read
from the raw bytes) belongs to no call the endpoint knows is charged to its source's message
budget if the source is outside the allow-list, and dropped silently beyond it: a flood stays
cheap. After parsing, what matches no transaction or dialog is charged if it was not before: a
new INVITE from an allowed source to its trunk's call budget, anything else to the message
budget.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from gateway.sip.auth import AuthResult, DigestServer
from gateway.sip.events import RequestRejected
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.policy import SourcePolicy, is_scanner
from gateway.sip.transaction import Address, ServerTransaction
from gateway.sip.ua_core import ALLOW, RECENT_CALL_IDS, SUPPORTED, UaCore

# the Call-ID of a datagram, read without parsing it (compact form `i`, §7.3.3)
_RAW_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")


class Admission:
    """Allow-list, budgets, scanners, digest, draining and provider availability."""

    def __init__(
        self, core: UaCore, policy: SourcePolicy | None, auth: DigestServer | None
    ) -> None:
        self.core = core
        self.policy = policy
        self.auth = auth
        self.draining = False
        self.unavailable: str | None = None
        self.unavailable_retry = 10
        # Call-IDs we sent a digest challenge for: the authenticated retry costs no new token
        self.challenged: OrderedDict[str, None] = OrderedDict()
        self.paid = False  # the message being handled was charged before parsing

    # --- before parsing

    def screen_datagram(self, data: bytes, addr: Address, now: float) -> bool:
        """A raw datagram or framed message: False drops it (counted)."""
        self.paid = False
        if self.policy is None:
            return True
        end = data.find(b"\r\n\r\n")  # the Call-ID is looked for in the headers only
        found = _RAW_CALL_ID.search(data, 0, end if end > 0 else len(data))
        call_id = found.group(1).decode("utf-8", "replace") if found else ""
        return self._screen(addr, now, call_id, data.startswith(b"INVITE "))

    def screen_message(self, message: SipRequest | SipResponse, addr: Address, now: float) -> bool:
        """A message parsed by the stream framer: False drops it (counted)."""
        self.paid = False
        if self.policy is None:
            return True
        invite = isinstance(message, SipRequest) and message.method == "INVITE"
        return self._screen(addr, now, message.call_id, invite)

    def known_call_id(self, call_id: str) -> bool:
        return (
            call_id in self.core.live_call_ids
            or call_id in self.core.recent_call_ids
            or call_id in self.challenged
        )

    def _screen(self, addr: Address, now: float, call_id: str, invite: bool) -> bool:
        """A message carrying the Call-ID of a known call passes (what it is gets checked after
        parsing); otherwise a source outside the allow-list spends its message budget here, and
        an INVITE from an allowed source is dropped only if it would get neither a call nor a
        503."""
        assert self.policy is not None
        if call_id and self.known_call_id(call_id):
            return True
        if not self.policy.is_allowed(addr.host):
            if self.policy.admit(addr.host, now):
                self.paid = True
                return True
        elif not (invite and self.policy.calls_exhausted(addr.host, now)):
            return True
        method = "INVITE" if invite else ""
        self.core.events.append(RequestRejected("rate_limited", method, 0, addr))
        return False

    # --- after parsing

    def refuse_scanner(self, request: SipRequest, addr: Address) -> bool:
        """Scanners (friendly-scanner, sipvicious, ...) are dropped unanswered."""
        if not is_scanner(request.headers.get("User-Agent")):
            return False
        self.core.events.append(RequestRejected("scanner", request.method, 0, addr))
        return True

    def charge_message(self, request: SipRequest, addr: Address, now: float) -> bool:
        """A request that matches no transaction or dialog spends its source's message budget,
        unless it paid before parsing. False: dropped, counted."""
        if self.policy is None or self.paid or self.policy.admit(addr.host, now):
            self.paid = True
            return True
        self.core.events.append(RequestRejected("rate_limited", request.method, 0, addr))
        return False

    def admit_call(self, request: SipRequest, addr: Address, now: float) -> bool:
        """A new INVITE: from the allow-list (else 403), and one token of its trunk's call
        budget (else 503 + Retry-After, or dropped beyond the reply budget)."""
        if self.policy is None:
            return True
        if not self.policy.is_allowed(addr.host):
            if self.charge_message(request, addr, now):
                self.core.stateless(request, addr, 403, "not_allowed")
            return False
        # one token per call attempt: the retry after our digest challenge is free, once
        if request.call_id in self.challenged:
            del self.challenged[request.call_id]
            return True
        if self.policy.admit_call(addr.host, now):
            return True
        if self.policy.admit_reply(now):
            retry = str(self.policy.retry_after(addr.host))
            self.core.stateless(request, addr, 503, "rate_limited", [("Retry-After", retry)])
        else:
            self.core.events.append(RequestRejected("rate_limited", "INVITE", 0, addr))
        return False

    def refuse_draining(self, request: SipRequest, addr: Address) -> bool:
        """While draining, a new INVITE gets 503 with Retry-After (statelessly)."""
        if not self.draining:
            return False
        self.core.stateless(request, addr, 503, "draining", [("Retry-After", "30")])
        return True

    def authorize(
        self, request: SipRequest, tx: ServerTransaction, addr: Address, now: float
    ) -> bool:
        """Digest (RFC 7616): False when the INVITE was challenged (401/407) or refused."""
        if self.auth is None:
            return True
        result = self.auth.verify(request, now)
        if result is AuthResult.OK:
            return True
        reason = "auth_failed" if result is AuthResult.FAILED else "auth_required"
        headers = self.auth.challenge(now, stale=result is AuthResult.STALE)
        self.core.tx_respond(tx, self.auth.status, now, headers)
        self.challenged[request.call_id] = None
        if len(self.challenged) > RECENT_CALL_IDS:
            self.challenged.popitem(last=False)
        self.core.events.append(RequestRejected(reason, "INVITE", self.auth.status, addr))
        return False

    def answer_options(
        self, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        """OPTIONS outside a dialog: 200, or 503 + Retry-After while draining or while the
        provider is unavailable (so a balancer probing with OPTIONS moves away)."""
        if self.policy is not None and not self.policy.is_allowed(addr.host):
            self.core.stateless(request, addr, 403, "not_allowed")
            return
        refusal = "draining" if self.draining else self.unavailable
        tx = self.core.server(request, addr, key)
        extra = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)]
        if refusal is not None:
            extra.append(("Retry-After", "30" if self.draining else str(self.unavailable_retry)))
            self.core.events.append(RequestRejected(refusal, request.method, 503, addr))
        self.core.tx_respond(tx, 200 if refusal is None else 503, now, extra)
