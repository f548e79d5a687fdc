"""The user agent server side of a call: an INVITE received becomes a call, answered (or
refused, or cancelled), its 2xx retransmitted until the ACK (RFC 3261 §13.3, §9.2, §17.2).

`on_invite` checks what the INVITE asks (after admission.py let it in): `Require` (420),
Session-Expires (422), the body (415, 488, 400). A call starts in `INCOMING` with
`IncomingCallReceived`; `ring`/`accept`/`reject`/`hangup` and the far end's CANCEL and ACK
move it by the table (call_state.py). Our 2xx to any INVITE of the call (re-INVITEs too) is
retransmitted by `start_retransmit` while its ACK is awaited.
"""

from __future__ import annotations

from types import MappingProxyType

from gateway.errors import NotAcceptable, SdpError, SipParseError
from gateway.sip import sdp as sdpmod
from gateway.sip.admission import Admission
from gateway.sip.call_state import CallInput, CallState
from gateway.sip.dialog import Dialog
from gateway.sip.events import (
    CallAcked,
    CallCancelled,
    CallTerminated,
    IncomingCallReceived,
    RequestRejected,
)
from gateway.sip.message import (
    REASONS,
    SipRequest,
    SipResponse,
    SipUri,
    make_response,
    session_body,
)
from gateway.sip.prack import rel100_of
from gateway.sip.routing import learn_target, new_tag
from gateway.sip.sdp import SessionDescription
from gateway.sip.session_timer import SessionTimers
from gateway.sip.transaction import T1, T2, Address, InviteServerTransaction, server_key
from gateway.sip.ua_core import Retransmit, SipCall, Step, Trigger, UaCore, sdp_of

#: what of an INVITE's headers the application (routing, the scenario) sees: never credentials,
#: at most this many lines, each value cut at this many characters
HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization"})
MAX_EXPOSED_HEADERS = 64
MAX_EXPOSED_VALUE = 1024


def exposed_headers(request: SipRequest) -> tuple[tuple[str, str], ...]:
    """The INVITE's header lines in order (repeated ones kept), bounded, without credentials."""
    lines = [(n, v) for n, v in request.headers.items() if n.lower() not in HIDDEN_HEADERS]
    return tuple((n, v[:MAX_EXPOSED_VALUE]) for n, v in lines[:MAX_EXPOSED_HEADERS])


#: the bodies an INVITE may carry: SDP, alone or as a part of a multipart (RFC 5621)
ACCEPT = "application/sdp, multipart/mixed"


def _phrase(exc: SipParseError) -> str:
    """A reason phrase for a body refusal, naming the cause."""
    return f"{REASONS.get(exc.status_hint, 'Bad Request')} ({exc.reason})"


def warning(exc: NotAcceptable) -> tuple[str, str]:
    """The Warning header of a 488 (RFC 3261 §20.43: code, agent, quoted text)."""
    text = str(exc).replace("\\", "").replace('"', "'")
    return ("Warning", f'{exc.warning} - "{text}"')


class Uas:
    """Incoming INVITEs, their CANCEL and ACK, and our answers to them."""

    def __init__(self, core: UaCore, admission: Admission, timers: SessionTimers) -> None:
        self.core = core
        self.admission = admission
        self.timers = timers

    def steps(self) -> dict[str, Step]:
        return {
            "send_ringing": self._ring,
            "send_2xx": self._accept,
            "send_rejection": self._reject,
            "send_480": self._send_480,
            "send_487": self._send_487,
            "cancel_ok": self._cancel_ok,
            "report_cancel": self._report_cancel,
            "acked": self._acked,
            "resend_2xx": self._resend_2xx,
            "report_ack_timeout": self._ack_timeout,
            "report_no_answer": self._no_answer,
        }

    # --- requests

    def on_invite(
        self, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        """An INVITE outside any dialog: refused, challenged, or a new call."""
        core = self.core
        if not self.admission.admit_call(request, addr, now):
            return
        unsupported = [
            o
            for o in request.headers.get_all("Require")
            if o.strip().lower() not in ("timer", "100rel")  # RFC 4028, RFC 3262 (prack.py)
        ]
        if unsupported:
            core.stateless(
                request, addr, 420, "unsupported", [("Unsupported", ", ".join(unsupported))]
            )
            return
        if self.admission.refuse_draining(request, addr):
            return
        tx = core.invite_server(request, addr, key)
        if not self.admission.authorize(request, tx, addr, now):
            return
        if self.timers.too_brief(request):
            core.tx_respond(tx, 422, now, [("Min-SE", str(core.config.min_session_expires))])
            core.events.append(RequestRejected("unsupported", "INVITE", 422, addr))
            return
        if not request.contacts and not isinstance(request.from_.uri, SipUri):
            # §8.1.1.8: no Contact leaves From as the remote target, and a tel: one is none
            core.tx_respond(tx, 400, now, reason="Bad Request (missing Contact)")
            core.events.append(RequestRejected("malformed", "INVITE", 400, addr))
            return
        media = core.media_for(core.trunk_of(request, addr))
        offer: SessionDescription | None = None
        if request.body:
            try:
                body = session_body(request)  # the SDP part of a multipart (SIP-I) body too
            except SipParseError as exc:
                accept = [("Accept", ACCEPT)] if exc.status_hint == 415 else []
                core.tx_respond(tx, exc.status_hint, now, accept, reason=_phrase(exc))
                core.events.append(RequestRejected("malformed", "INVITE", exc.status_hint, addr))
                return
            if body is None:
                reason = f"Unsupported Media Type (no application/sdp in {request.content_type})"
                core.tx_respond(tx, 415, now, [("Accept", ACCEPT)], reason=reason)
                core.events.append(RequestRejected("unsupported", "INVITE", 415, addr))
                return
            try:
                offer = SessionDescription.parse(body)
                sdpmod.check_offer(offer, media)
            except NotAcceptable as exc:
                core.tx_respond(tx, 488, now, [warning(exc)])
                core.events.append(RequestRejected(exc.reason, "INVITE", 488, addr))
                return
            except SdpError as exc:
                core.tx_respond(tx, 400, now, reason=f"Bad SDP: {exc}")
                core.events.append(RequestRejected("malformed", "INVITE", 400, addr))
                return
        tx.send_response(make_response(request, 100, "Trying"), now)
        handle = core.new_handle()
        call = SipCall(handle, "uas", CallState.INCOMING, request, addr, new_tag(), ist=tx)
        call.remote_sdp = offer
        call.media = media
        call.rel100 = rel100_of(request)
        call.answer_deadline = now + core.config.answer_timeout
        core.add_call(call)
        core.invite_calls[key] = handle
        call.invite_key = key
        dkey = (request.call_id, call.local_tag, request.from_.tag or "")
        core.dialogs[dkey] = handle
        call.keys.append(dkey)
        header_list = exposed_headers(request)
        first_values = MappingProxyType(dict(reversed(header_list)))
        core.events.append(
            IncomingCallReceived(
                handle,
                request.uri,
                str(request.from_.uri),
                str(request.to.uri),
                first_values,
                offer,
                addr,
                header_list,
            )
        )

    def on_cancel(
        self, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        """CANCEL: of a call's INVITE (the table decides), else 481."""
        core = self.core
        handle = core.invite_calls.get((*key[:-1], "INVITE"))
        tx = core.server(request, addr, key)
        call = core.calls.get(handle) if handle is not None else None
        if call is None:
            core.tx_respond(tx, 481, now)
            return
        core.fire(call, Trigger(CallInput.RECV_CANCEL, now, request=request, tx=tx, source=addr))

    def on_ack(self, request: SipRequest, now: float) -> None:
        """ACK: of a non-2xx, absorbed by its transaction (§17.2.1); of the 2xx we retransmit,
        `RECV_ACK`; any other in a known dialog, `RECV_STRAY_ACK`; else dropped (§17)."""
        core = self.core
        stx = core.server_tx.get(server_key(request))
        if isinstance(stx, InviteServerTransaction) and not stx.receive_request(request, now):
            return
        dkey = (request.call_id, request.to.tag or "", request.from_.tag or "")
        handle = core.dialogs.get(dkey)
        call = core.calls.get(handle) if handle is not None else None
        if call is None:
            return
        rt = call.retransmit
        ours = rt is not None and rt.cseq == request.cseq.seq
        inp = CallInput.RECV_ACK if ours else CallInput.RECV_STRAY_ACK
        core.fire(call, Trigger(inp, now, request=request))

    # --- the 2xx until its ACK

    def start_retransmit(
        self, call: SipCall, response: SipResponse, addr: Address, cseq: int, now: float
    ) -> None:
        """§13.3.1.4: re-send our 2xx (T1 doubling to T2) until its ACK, for at most 64*T1."""
        next_at = None if call.peer.reliable else now + T1
        call.retransmit = Retransmit(response.serialize(), addr, cseq, T1, next_at, now + 64 * T1)

    # --- steps

    def _ring(self, call: SipCall, t: Trigger) -> None:
        self.core.respond_invite(call, 180, t.now)

    def _accept(self, call: SipCall, t: Trigger) -> None:
        assert t.sdp is not None
        self.answer(call, t.sdp, t.now)

    def answer(self, call: SipCall, sdp: SessionDescription | bytes, now: float) -> None:
        """200 OK with `sdp` (the answer, or our offer for a late offer), re-sent until the
        ACK; the session timer is negotiated now."""
        assert call.ist is not None
        body = sdp if isinstance(sdp, bytes) else sdp.serialize()
        call.local_sdp = (
            sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)
        )
        headers = [("Content-Type", "application/sdp"), *self.timers.negotiate(call, now)]
        response = self.core.call_response(call, 200, headers, body)
        call.ist.send_response(response, now)
        call.dialog = Dialog.as_uas(call.invite, call.local_tag)
        learn_target(call.dialog, call.peer)  # a private Contact: reach it where it came from
        self.start_retransmit(call, response, call.ist.addr, call.invite.cseq.seq, now)

    def _reject(self, call: SipCall, t: Trigger) -> None:
        self.core.respond_invite(call, t.status, t.now, t.headers)
        self.core.events.append(RequestRejected(t.reason, "INVITE", t.status, call.peer))

    def _send_480(self, call: SipCall, t: Trigger) -> None:
        self.core.respond_invite(call, 480, t.now)

    def _send_487(self, call: SipCall, t: Trigger) -> None:
        self.core.respond_invite(call, 487, t.now)

    def _cancel_ok(self, call: SipCall, t: Trigger) -> None:
        """200 to the CANCEL; too late for anything else once the INVITE has its final (§9.2)."""
        assert t.tx is not None
        self.core.tx_respond(t.tx, 200, t.now)

    def _report_cancel(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallCancelled(call.handle))

    def _acked(self, call: SipCall, t: Trigger) -> None:
        assert t.request is not None
        call.retransmit = None
        answer = sdp_of(t.request)
        if answer is not None:
            call.remote_sdp = answer
        self.core.events.append(CallAcked(call.handle, answer))

    def _resend_2xx(self, call: SipCall, t: Trigger) -> None:
        rt = call.retransmit
        assert rt is not None
        self.core.out.append((rt.data, rt.addr))
        rt.interval = min(rt.interval * 2, T2)
        rt.next_at = t.now + rt.interval

    def _ack_timeout(self, call: SipCall, t: Trigger) -> None:
        """§13.3.1.4: no ACK within 64*T1: the session is ended with BYE."""
        self.core.events.append(CallTerminated(call.handle, "ack_timeout"))

    def _no_answer(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "no_answer"))
