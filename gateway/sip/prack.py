"""Reliable provisional responses (RFC 3262, 100rel), both sides of a call.

UAS: an INVITE with `Require: 100rel` gets every 18x of ours reliably, one with
`Supported: 100rel` gets our 183 with SDP (early media) reliably: `RSeq` and `Require: 100rel`,
re-sent with T1 doubling until the PRACK whose `RAck` names it (answered 200), for at most
64*T1 (then the INVITE is refused with 500, §3). One reliable provisional is outstanding at a
time (`AWAIT_PRACK`); an `accept` meanwhile holds our 2xx back until the PRACK (`ANSWER_HELD`,
§3). A PRACK that matches nothing gets 481.

UAC: a 1xx to our INVITE with `Require: 100rel` and an `RSeq` one above the last of its early
dialog (or the first) is PRACKed in that early dialog (`RAck: rseq cseq INVITE`, §7.2); one
whose RSeq is not new is a retransmission, neither PRACKed again nor reported (§4: our PRACK's
own transaction re-sends it). The early dialog becomes the call's dialog when its 2xx comes,
so the CSeq of later requests counts the PRACKs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from gateway.sip.call_state import CallInput
from gateway.sip.dialog import Dialog
from gateway.sip.events import CallTerminated, RequestRejected
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.routing import target_addr
from gateway.sip.sdp import SessionDescription
from gateway.sip.transaction import T1
from gateway.sip.ua_core import ALLOW, ReliableProvisional, SipCall, Step, Trigger, UaCore

#: how the 2xx is sent once the PRACK came (`Uas.answer`)
Answer = Callable[[SipCall, SessionDescription | bytes, float], None]

OPTION = "100rel"


def has_option(message: SipRequest | SipResponse, header: str) -> bool:
    """Whether `header` (Require or Supported) lists 100rel."""
    return any(o.strip().lower() == OPTION for o in message.headers.get_all(header))


def rel100_of(invite: SipRequest) -> str:
    """What an INVITE says of 100rel: "required", "supported" or ""."""
    if has_option(invite, "Require"):
        return "required"
    return "supported" if has_option(invite, "Supported") else ""


def rack_of(request: SipRequest) -> tuple[int, int, str] | None:
    """A PRACK's `RAck: rseq cseq method` (§7.2), None if absent or unreadable."""
    parts = (request.headers.get("RAck") or "").split()
    if len(parts) != 3 or not (parts[0].isdecimal() and parts[1].isdecimal()):
        return None
    return int(parts[0]), int(parts[1]), parts[2].upper()


def rseq_of(response: SipResponse) -> int | None:
    """A reliable provisional's RSeq (1 to 2**31-1, §7.1), None if it is not one."""
    value = (response.headers.get("RSeq") or "").strip()
    if not value.isdecimal() or not has_option(response, "Require"):
        return None
    rseq = int(value)
    return rseq if 0 < rseq < 2**31 else None


class Prack:
    """RFC 3262 for the UA: our reliable provisionals and their PRACKs, and the PRACKs we send."""

    def __init__(self, core: UaCore, answer: Answer) -> None:
        self.core = core
        self.answer = answer

    def steps(self) -> dict[str, Step]:
        return {
            "send_progress": self._send_progress,
            "send_reliable": self._send_reliable,
            "resend_1xx": self._resend,
            "hold_2xx": self._hold_2xx,
            "prack_ok": self._prack_ok,
            "send_held_2xx": self._send_held_2xx,
            "send_481": self._send_481,
            "send_no_prack": self._send_no_prack,
            "report_prack_timeout": self._prack_timeout,
            "send_prack": self._send_prack,
        }

    # --- classification

    @staticmethod
    def ring_input(call: SipCall) -> CallInput:
        """180: reliable when the INVITE required 100rel (§3)."""
        return CallInput.RING_RELIABLE if call.rel100 == "required" else CallInput.RING

    @staticmethod
    def progress_input(call: SipCall) -> CallInput:
        """183 with SDP: reliable whenever the caller can PRACK it, so that the answer arrives."""
        return CallInput.PROGRESS_RELIABLE if call.rel100 else CallInput.PROGRESS

    @staticmethod
    def provisional_input(call: SipCall, response: SipResponse) -> CallInput:
        """A 1xx to our INVITE: plain, reliable and new, or a reliable one seen already (§4)."""
        rseq = rseq_of(response) if response.status > 100 else None
        if rseq is None:
            return CallInput.INVITE_1XX
        seen = call.early.get(response.to.tag or "")
        if seen is not None and rseq <= seen[1]:
            return CallInput.INVITE_1XX_REPEAT
        return CallInput.INVITE_1XX_RELIABLE

    # --- UAS steps

    def _send_progress(self, call: SipCall, t: Trigger) -> None:
        """183 Session Progress with our SDP (early media), unreliably."""
        self._provisional(call, t, reliable=False)

    def _send_reliable(self, call: SipCall, t: Trigger) -> None:
        self._provisional(call, t, reliable=True)

    def _provisional(self, call: SipCall, t: Trigger, *, reliable: bool) -> None:
        assert call.ist is not None
        headers: list[tuple[str, str]] = []
        body = b""
        if t.sdp is not None:
            sdp = t.sdp if isinstance(t.sdp, SessionDescription) else None
            body = t.sdp if isinstance(t.sdp, bytes) else t.sdp.serialize()
            call.local_sdp = sdp or SessionDescription.parse(body)
            headers.append(("Content-Type", "application/sdp"))
        if reliable:
            # §3: the first RSeq is random in 1..2**31-1, each next one 1 higher
            call.rseq = call.rseq + 1 if call.rseq else secrets.randbelow(2**30) + 1
            headers += [("Require", OPTION), ("RSeq", str(call.rseq))]
        response = self.core.call_response(call, t.status, headers, body)
        call.ist.send_response(response, t.now)
        if reliable:
            next_at = None if call.peer.reliable else t.now + T1
            call.reliable = ReliableProvisional(
                response.serialize(), call.ist.addr, call.rseq, T1, next_at, t.now + 64 * T1
            )

    def _resend(self, call: SipCall, t: Trigger) -> None:
        """§3: re-sent at T1, 2*T1, 4*T1... until the PRACK (no T2 cap for a 1xx)."""
        rel = call.reliable
        assert rel is not None
        self.core.out.append((rel.data, rel.addr))
        rel.interval *= 2
        rel.next_at = t.now + rel.interval

    def _hold_2xx(self, call: SipCall, t: Trigger) -> None:
        """§3: accepted while our reliable 1xx awaits its PRACK: the 2xx waits for it."""
        assert t.sdp is not None
        call.held_answer = t.sdp

    def _prack_ok(self, call: SipCall, t: Trigger) -> bool:
        """200 to the PRACK of our reliable 1xx (§3); 481 to one whose RAck names another."""
        assert t.request is not None and t.tx is not None
        rel = call.reliable
        rack = rack_of(t.request)
        if rel is None or rack != (rel.rseq, call.invite.cseq.seq, "INVITE"):
            self._send_481(call, t)
            return False
        call.reliable = None
        self.core.tx_respond(t.tx, 200, t.now)
        return True

    def _send_held_2xx(self, call: SipCall, t: Trigger) -> None:
        sdp, call.held_answer = call.held_answer, None
        assert sdp is not None
        self.answer(call, sdp, t.now)

    def _send_481(self, call: SipCall, t: Trigger) -> None:
        """A PRACK that acknowledges nothing of ours (§3)."""
        assert t.tx is not None and t.request is not None and t.source is not None
        self.core.tx_respond(t.tx, 481, t.now, [("Allow", ALLOW)])
        self.core.events.append(RequestRejected("unknown_dialog", t.request.method, 481, t.source))

    def _send_no_prack(self, call: SipCall, t: Trigger) -> None:
        """§3: 64*T1 without the PRACK: the INVITE is refused with a 5xx."""
        assert call.ist is not None
        call.held_answer = None
        response = self.core.call_response(call, 500, [])
        response.reason = "No PRACK"
        call.ist.send_response(response, t.now)

    def _prack_timeout(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "prack_timeout"))

    # --- UAC step

    def _send_prack(self, call: SipCall, t: Trigger) -> None:
        """§7.2: PRACK a new reliable 1xx in its early dialog (built from it, §12.1.2)."""
        response = t.response
        assert response is not None
        rseq = rseq_of(response)
        assert rseq is not None
        tag = response.to.tag or ""
        entry = call.early.get(tag)
        dialog = entry[0] if entry is not None else Dialog.as_uac(call.invite, response)
        if entry is not None:
            dialog.refresh_target(response)
        call.early[tag] = (dialog, rseq)
        core = self.core
        dest = target_addr(call.peer, dialog)
        rack = f"{rseq} {response.cseq.seq} {response.cseq.method}"
        prack = dialog.create_request(
            "PRACK", core.via(dest), core.contact(dest, call), headers=[("RAck", rack)]
        )
        core.start_client(prack, dest, call.handle, "prack", t.now)


__all__ = ["OPTION", "Prack", "has_option", "rack_of", "rel100_of", "rseq_of"]
