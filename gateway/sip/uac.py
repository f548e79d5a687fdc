"""The user agent client side of a call: our INVITE through a trunk, its responses, the one
digest retry, our CANCEL, and the ACK of a 2xx (RFC 3261 §8.1, §9.1, §13.2, §22.2).

`invite()` starts a call in `CALLING`; responses come back classified by `response_input`
(1xx, 2xx, a challenge we can still answer, any other failure) and move the call by the table
(call_state.py). A CANCEL waits for a provisional response (§9.1, `CANCEL_DUE`); a 2xx that
arrives anyway is ACKed and the call ended with BYE. A 2xx that outlives its transaction is
ACKed again, statelessly (`stray_response`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.sip.auth import Credentials, authorization, pick_challenge
from gateway.sip.call_state import CallInput, CallState
from gateway.sip.dialog import Dialog
from gateway.sip.events import (
    CallTerminated,
    OutboundCallAnswered,
    OutboundCallFailed,
    OutboundCallFailedOver,
    OutboundCallProgressed,
)
from gateway.sip.locate import fail_over
from gateway.sip.message import Headers, NameAddr, SipRequest, SipResponse, SipUri
from gateway.sip.prack import Prack
from gateway.sip.routing import learn_target, new_tag, target_addr
from gateway.sip.sdp import MediaPolicy, SessionDescription
from gateway.sip.session_timer import too_brief_retry
from gateway.sip.transaction import T1, Address, build_cancel
from gateway.sip.ua_core import ALLOW, SUPPORTED, SipCall, Step, Trigger, UaCore, sdp_of


def _challenge(response: SipResponse) -> dict[str, str] | None:
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    return pick_challenge(response.headers.get_all(header))


class Uac:
    """Outbound INVITEs and what answers them."""

    def __init__(self, core: UaCore) -> None:
        self.core = core

    def steps(self) -> dict[str, Step]:
        return {
            "report_progress": self._progress,
            "make_dialog": self._make_dialog,
            "send_ack": self._send_ack,
            "report_answer": self._answered,
            "retry_with_auth": self._retry_with_auth,
            "retry_with_min_se": self._retry_with_min_se,
            "send_cancel": self._send_cancel,
            "report_failure": self._failed,
            "report_cancelled": self._cancelled,
            "report_invite_timeout": self._timed_out,
            "fail_over": self._fail_over,
        }

    def invite(
        self,
        target_uri: str,
        offer: SessionDescription | None,
        from_uri: str,
        destination: Address,
        now: float,
        *,
        credentials: Credentials | None = None,
        headers: Sequence[tuple[str, str]] = (),
        alternates: Sequence[Address] = (),
        session_expires: int | None = None,
        min_se: int | None = None,
        from_display: str = "",
        media: MediaPolicy | None = None,
    ) -> int:
        """Place a call to `target_uri` via `destination` (a trunk); returns the call.
        `alternates`: the next targets of the trunk's name, tried in order on a 503, a timeout
        or a transport error (RFC 3263 §4.3). With `session_expires`, the INVITE asks for that
        session interval, and `Min-SE` (RFC 4028 §7.1: no refresher parameter, so that the UAS
        chooses). The From is `from_uri` with `from_display` as its display name; `headers` are
        added as given (the caller allow-lists them: identity headers, X-*). `media`: the call's
        codecs, ptime and SRTP for later offers and answers (the trunk's)."""
        core = self.core
        SipUri.parse(target_uri)
        handle = core.new_handle()
        tag = new_tag()
        from_ = NameAddr(SipUri.parse(from_uri), from_display or None, {"tag": tag})
        h = Headers()
        h.add("Via", core.via(destination))
        h.add("Max-Forwards", "70")
        h.add("From", str(from_))
        h.add("To", f"<{target_uri}>")
        h.add("Call-ID", f"{new_tag()}{new_tag()}@{core.config.host}")
        h.add("CSeq", "1 INVITE")
        # §8.1.1.8: a sips: Request-URI gets a sips: Contact (over TLS)
        h.add("Contact", core.contact(destination, sips=target_uri[:5].lower() == "sips:"))
        h.add("Allow", ALLOW)
        h.add("Supported", SUPPORTED)
        if session_expires is not None:
            h.add("Session-Expires", str(session_expires))
        if min_se is not None:
            h.add("Min-SE", str(min_se))
        h.add("User-Agent", core.config.user_agent)
        for name, value in headers:
            h.add(name, value)
        body = b""
        if offer is not None:
            h.add("Content-Type", "application/sdp")
            body = offer.serialize()
        request = SipRequest("INVITE", target_uri, h, body)
        call = SipCall(handle, "uac", CallState.CALLING, request, destination, tag, local_sdp=offer)
        if media is not None:
            call.media = media
        call.credentials = credentials
        call.alternates = list(alternates)
        call.min_se = min_se or 0
        core.add_call(call)
        core.start_client(request, destination, handle, "invite", now)
        return handle

    def response_input(self, call: SipCall, response: SipResponse) -> CallInput:
        """A response to our INVITE, by class; a 401/407 is a challenge while we have
        credentials and have not retried yet (one retry, §22.2)."""
        status = response.status
        if status < 200:
            return Prack.provisional_input(call, response)
        if status < 300:
            return CallInput.INVITE_2XX
        if (
            status in (401, 407)
            and call.credentials is not None
            and call.auth_tries < 1
            and _challenge(response) is not None
        ):
            return CallInput.INVITE_CHALLENGE
        if fail_over(call.alternates, status) is not None:
            return CallInput.INVITE_FAILOVER
        if too_brief_retry(call, call.invite, response) is not None:
            return CallInput.INVITE_TOO_BRIEF
        return CallInput.INVITE_FAILURE

    def timeout_trigger(
        self, call: SipCall, now: float, transport_error: bool, reason: str = ""
    ) -> Trigger:
        """Our INVITE's transaction ended with no response: timer B, or a transport error
        (§8.1.3.1: taken as a 503 whose phrase says why). The next target if one is left
        (RFC 3263 §4.3)."""
        if fail_over(call.alternates, None) is not None:
            return Trigger(
                CallInput.INVITE_FAILOVER, now, reason="transport" if transport_error else "timeout"
            )
        if transport_error:
            why = re.sub(r"[^\x20-\x7e]", "?", reason or "transport")[:80]
            return Trigger(
                CallInput.TIMEOUT_INVITE, now, status=503, reason=f"Service Unavailable ({why})"
            )
        return Trigger(CallInput.TIMEOUT_INVITE, now)

    def stray_response(self, response: SipResponse) -> None:
        """A 2xx retransmission after our INVITE transaction ended: re-send the ACK
        (§13.2.2.4)."""
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        for call in self.core.calls.values():
            if (
                call.dialog is not None
                and call.dialog.call_id == response.call_id
                and call.ack_bytes
                and call.ack_addr is not None
            ):
                self.core.out.append((call.ack_bytes, call.ack_addr))

    # --- steps

    def _progress(self, call: SipCall, t: Trigger) -> None:
        assert t.response is not None
        if t.response.status > 100:
            early = sdp_of(t.response)  # early media (RFC 3960): the 18x's SDP
            if early is not None:
                call.remote_sdp = early
            self.core.events.append(OutboundCallProgressed(call.handle, t.response.status, early))

    def _make_dialog(self, call: SipCall, t: Trigger) -> None:
        """§12.1.2: the dialog from our INVITE and its (first) 2xx."""
        assert t.response is not None
        if call.dialog is None:
            early = call.early.get(t.response.to.tag or "")
            if early is not None:  # RFC 3262: the early dialog of our PRACKs, now confirmed
                call.dialog = early[0]
                call.dialog.refresh_target(t.response)
                call.dialog.route_set = [str(r) for r in reversed(t.response.record_routes)]
            else:
                call.dialog = Dialog.as_uac(call.invite, t.response)
            call.early.clear()
            learn_target(call.dialog, t.source)  # a private Contact in the 2xx (NAT)
            self.core.dialogs[call.dialog.key] = call.handle
            call.keys.append(call.dialog.key)

    def _send_ack(self, call: SipCall, t: Trigger) -> None:
        """§13.2.2.4: ACK for a 2xx, a new transaction-less request, re-sent per 2xx copy."""
        response = t.response
        assert call.dialog is not None and response is not None
        core = self.core
        dest = target_addr(call.peer, call.dialog)
        ack = call.dialog.create_request(
            "ACK", core.via(dest), core.contact(dest, call), cseq=response.cseq.seq
        )
        for name in ("Authorization", "Proxy-Authorization"):
            value = call.invite.headers.get(name)
            if value is not None and response.cseq.seq == call.invite.cseq.seq:
                ack.headers.add(name, value)
        call.ack_bytes = ack.serialize()
        call.ack_addr = dest
        core.out.append((call.ack_bytes, dest))

    def _answered(self, call: SipCall, t: Trigger) -> None:
        assert t.response is not None
        # a 2xx may leave out the answer a (reliable) 18x gave (RFC 3262 §5, RFC 3960)
        answer = sdp_of(t.response) or call.remote_sdp
        call.remote_sdp = answer
        self.core.events.append(OutboundCallAnswered(call.handle, answer))

    def _retry_with_auth(self, call: SipCall, t: Trigger) -> None:
        """The INVITE again with our credentials, CSeq + 1, on a new branch (§22.2)."""
        assert t.response is not None and call.credentials is not None
        challenge = _challenge(t.response)
        assert challenge is not None
        call.auth_tries += 1
        call.early.clear()  # RSeq counts per INVITE transaction (RFC 3262 §4)
        old = call.invite
        h = old.headers.copy()
        h.set("Via", self.core.via(call.peer))
        h.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        name = "Authorization" if t.response.status == 401 else "Proxy-Authorization"
        h.set(name, authorization(challenge, "INVITE", old.uri, call.credentials))
        call.invite = SipRequest("INVITE", old.uri, h, old.body)
        self.core.start_client(call.invite, call.peer, call.handle, "invite", t.now)

    def _retry_with_min_se(self, call: SipCall, t: Trigger) -> None:
        """RFC 4028 §7.3: the INVITE again, CSeq + 1, Session-Expires and Min-SE raised to the
        422's Min-SE."""
        assert t.response is not None
        interval = too_brief_retry(call, call.invite, t.response)
        assert interval is not None
        call.too_brief_tries += 1
        call.min_se = interval
        old = call.invite
        h = old.headers.copy()
        h.set("Via", self.core.via(call.peer))
        h.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        h.set("Session-Expires", str(interval))
        h.set("Min-SE", str(interval))
        call.invite = SipRequest("INVITE", old.uri, h, old.body)
        self.core.start_client(call.invite, call.peer, call.handle, "invite", t.now)

    def _send_cancel(self, call: SipCall, t: Trigger) -> None:
        call.cancel_deadline = t.now + 64 * T1  # §9.1: give up on the INVITE after that
        cancel = build_cancel(call.invite)
        self.core.start_client(cancel, call.peer, call.handle, "cancel", t.now)

    def _failed(self, call: SipCall, t: Trigger) -> None:
        assert t.response is not None
        self.core.events.append(
            OutboundCallFailed(call.handle, t.response.status, t.response.reason)
        )

    def _cancelled(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "cancelled"))

    def _timed_out(self, call: SipCall, t: Trigger) -> None:
        status, reason = (t.status, t.reason) if t.status else (408, "Request Timeout")
        self.core.events.append(OutboundCallFailed(call.handle, status, reason))

    def _fail_over(self, call: SipCall, t: Trigger) -> None:
        """RFC 3263 §4.3: the INVITE again to the next target, in a new client transaction (new
        branch, CSeq + 1; same Call-ID and From tag). The new server gets no credentials made
        for the old one's challenge: it may challenge afresh."""
        failed = call.peer
        reason = t.reason or (str(t.response.status) if t.response is not None else "timeout")
        dest = call.alternates.pop(0)
        old = call.invite
        h = old.headers.copy()
        h.set("Via", self.core.via(dest))
        h.set("Contact", self.core.contact(dest))
        h.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        for name in ("Authorization", "Proxy-Authorization"):
            h.remove(name)
        call.auth_tries = 0
        call.invite = SipRequest("INVITE", old.uri, h, old.body)
        call.peer = dest
        self.core.start_client(call.invite, dest, call.handle, "invite", t.now)
        self.core.events.append(OutboundCallFailedOver(call.handle, reason, failed, dest))
