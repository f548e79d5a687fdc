"""Requests inside a dialog, both ways: re-INVITE (RFC 3261 §14), UPDATE (RFC 3311), INFO
(RFC 2976, DTMF), NOTIFY of a REFER (RFC 3515 with RFC 3420 sipfrag), OPTIONS, and BYE (§15).

`on_request` checks the CSeq (§12.2.2: 500 when it goes backwards), opens the request's server
transaction and hands it to the call as a `CallInput`; the table (call_state.py) decides whether
it is answered (re-INVITE 491/500 while another INVITE is in progress, UPDATE 491 before the
dialog is confirmed) and the steps here answer it. Our own re-INVITE, REFER and BYE, and their
responses (`response_input`), live here too. A new offer is answered with our current address
and port, preferring the codec in use (RFC 3264 §8).

A 401 or 407 to our re-INVITE, UPDATE, REFER or BYE is answered with the call's credentials
(RFC 3261 §22.2): the request again with CSeq + 1 and an Authorization (Proxy-Authorization)
header, once per challenge: a second one for a request that already answered it (unless the
nonce went stale) fails the request, and a BYE that fails still ends the call.
"""

from __future__ import annotations

import re

from gateway.errors import NotAcceptable, SdpError
from gateway.rtp.srtp import CryptoAttribute
from gateway.sip import sdp as sdpmod
from gateway.sip.auth import answerable_challenge, authorization
from gateway.sip.call_state import CallInput
from gateway.sip.events import (
    CallEndedByRemote,
    CallTerminated,
    DtmfInfoReceived,
    MediaUpdated,
    RequestRejected,
    TransferProgressed,
)
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.routing import learn_target
from gateway.sip.sdp import Negotiated, SessionDescription
from gateway.sip.session_timer import SessionTimers, too_brief_retry
from gateway.sip.transaction import Address, ServerTransaction
from gateway.sip.ua_core import ALLOW, SipCall, Step, Trigger, UaCore, offer_body, sdp_of
from gateway.sip.uas import Uas, warning

_DTMF_CHARS = "0123456789*#ABCD"
_DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15
_REQUEST_INPUTS = {
    "BYE": CallInput.RECV_BYE,
    "UPDATE": CallInput.RECV_UPDATE,
    "INFO": CallInput.RECV_INFO,
    "NOTIFY": CallInput.RECV_NOTIFY,
    "OPTIONS": CallInput.RECV_OPTIONS,
    "PRACK": CallInput.RECV_PRACK,
}
_RESPONSE_INPUTS = {  # purpose → (1xx, 2xx, 3xx-6xx)
    "reinvite": (CallInput.REINVITE_1XX, CallInput.REINVITE_2XX, CallInput.REINVITE_FAILURE),
    "bye": (CallInput.BYE_1XX, CallInput.BYE_2XX, CallInput.BYE_FAILURE),
    "refer": (CallInput.REFER_1XX, CallInput.REFER_2XX, CallInput.REFER_FAILURE),
    "update": (None, CallInput.UPDATE_2XX, CallInput.UPDATE_FAILURE),
}
#: 408 or 481 to these: the dialog is gone (RFC 3261 §12.2.1.2, §14.1; RFC 4028 §10)
_GONE = {"reinvite": CallInput.REINVITE_GONE, "update": CallInput.UPDATE_GONE}


class InDialog:
    """Requests in a call's dialog, theirs and ours."""

    def __init__(self, core: UaCore, uas: Uas, timers: SessionTimers) -> None:
        self.core = core
        self.uas = uas
        self.timers = timers

    def steps(self) -> dict[str, Step]:
        return {
            "bye_ok": self._bye_ok,
            "report_bye": self._report_bye,
            "answer_reinvite": self._answer_reinvite,
            "offer_in_2xx": self._offer_in_2xx,
            "send_491": self._send_491,
            "send_500": self._send_500,
            "send_405": self._send_405,
            "answer_update": self._answer_update,
            "answer_info": self._answer_info,
            "answer_notify": self._answer_notify,
            "answer_options": self._answer_options,
            "reinvite_acked": self._reinvite_acked,
            "answer_in_ack": self._answer_in_ack,
            "send_bye": self._send_bye,
            "send_refer": self._send_refer,
            "send_reinvite": self._send_reinvite,
            "retry_with_credentials": self._retry_with_credentials,
            "refresh_target": self._refresh_target,
            "media_from_2xx": self._media_from_2xx,
            "report_reinvite_failed": self._reinvite_failed,
            "report_request_timeout": self._request_timeout,
            "report_transfer": self._transfer,
            "report_transfer_timeout": self._transfer_timeout,
        }

    def on_request(
        self, call: SipCall, request: SipRequest, addr: Address, key: tuple[str, ...], now: float
    ) -> None:
        """A request of the far end in the call's dialog (not ACK, not CANCEL)."""
        core = self.core
        if call.dialog is not None and not call.dialog.accept_remote_cseq(request):
            core.tx_respond(core.server(request, addr, key), 500, now, reason="CSeq out of order")
            return
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = core.invite_server(request, addr, key)
            inp = CallInput.RECV_REINVITE if request.body else CallInput.RECV_REINVITE_NO_SDP
        else:
            tx = core.server(request, addr, key)
            inp = _REQUEST_INPUTS.get(request.method, CallInput.RECV_OTHER)
        core.fire(call, Trigger(inp, now, request=request, tx=tx, source=addr))

    @staticmethod
    def response_input(
        call: SipCall, purpose: str, response: SipResponse, sent: SipRequest
    ) -> CallInput | None:
        """A response to our re-INVITE, UPDATE, BYE or REFER (`sent`), by class: a challenge
        we answer, a 422 we retry, the dialog gone, else 1xx/2xx/failure (None for other
        purposes: CANCEL and INFO end their transactions only, and for an UPDATE's 1xx)."""
        inputs = _RESPONSE_INPUTS.get(purpose)
        if inputs is None:
            return None
        status = response.status
        if (
            status in (401, 407)
            and call.credentials is not None
            and answerable_challenge(response, sent) is not None
        ):
            return CallInput.REQUEST_CHALLENGE
        if purpose in _GONE:
            if status in (408, 481):
                return _GONE[purpose]
            if too_brief_retry(call, sent, response) is not None:
                return CallInput.REQUEST_TOO_BRIEF
        return inputs[0] if status < 200 else inputs[1] if status < 300 else inputs[2]

    # --- their BYE

    def _bye_ok(self, call: SipCall, t: Trigger) -> None:
        assert t.tx is not None
        self.core.tx_respond(t.tx, 200, t.now)

    def _report_bye(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallEndedByRemote(call.handle))

    # --- their re-INVITE

    def _answer_reinvite(self, call: SipCall, t: Trigger) -> bool:
        """A re-INVITE with an offer: answered in our 2xx, or refused (488/400) with the
        media as they were."""
        assert t.request is not None and t.tx is not None and call.local_sdp is not None
        if self.timers.refuse_too_brief(call, t):
            return False
        extra = self.timers.negotiate(call, t.now, t.request)
        try:
            negotiated = self._negotiate(call, offer_body(t.request))
        except NotAcceptable as exc:  # the call goes on with the media it had
            self.core.tx_respond(t.tx, 488, t.now, [warning(exc)])
            assert t.source is not None
            self.core.events.append(RequestRejected(exc.reason, "INVITE", 488, t.source))
            return False
        except SdpError as exc:
            self.core.tx_respond(t.tx, 400, t.now, reason=f"Bad SDP: {exc}")
            return False
        self._reinvite_2xx(call, t, negotiated.answer, extra)
        self.core.events.append(MediaUpdated(call.handle, negotiated))
        return True

    def _offer_in_2xx(self, call: SipCall, t: Trigger) -> bool:
        """A re-INVITE without an offer: ours goes in the 2xx, the answer comes in the ACK."""
        assert t.request is not None and call.local_sdp is not None
        if self.timers.refuse_too_brief(call, t):
            return False
        extra = self.timers.negotiate(call, t.now, t.request)
        self._reinvite_2xx(call, t, call.local_sdp, extra)
        return True

    def _reinvite_2xx(
        self,
        call: SipCall,
        t: Trigger,
        sdp: SessionDescription,
        extra: list[tuple[str, str]],
    ) -> None:
        assert call.dialog is not None and t.request is not None and t.tx is not None
        call.dialog.refresh_target(t.request)
        learn_target(call.dialog, t.source)
        response = self.core.call_response(
            call,
            200,
            [("Content-Type", "application/sdp"), *extra],
            sdp.serialize(),
            request=t.request,
        )
        t.tx.send_response(response, t.now)
        self.uas.start_retransmit(call, response, t.tx.addr, t.request.cseq.seq, t.now)

    def _reinvite_acked(self, call: SipCall, t: Trigger) -> None:
        call.retransmit = None

    def _answer_in_ack(self, call: SipCall, t: Trigger) -> None:
        assert t.request is not None
        answer = sdp_of(t.request)
        if answer is not None and call.local_sdp is not None:
            self._media_from_answer(call, answer)

    def _send_491(self, call: SipCall, t: Trigger) -> None:
        assert t.tx is not None
        self.core.tx_respond(t.tx, 491, t.now)

    def _send_500(self, call: SipCall, t: Trigger) -> None:
        assert t.tx is not None
        self.core.tx_respond(t.tx, 500, t.now)

    # --- UPDATE, INFO, NOTIFY, OPTIONS, anything else

    def _answer_update(self, call: SipCall, t: Trigger) -> None:
        """RFC 3311: with SDP a new offer (answered, then MediaUpdated), without a session
        refresh (RFC 4028 §7.4)."""
        tx, request = t.tx, t.request
        assert tx is not None and request is not None
        if call.local_sdp is None or call.dialog is None:
            self.core.tx_respond(tx, 491, t.now)
            return
        if self.timers.refuse_too_brief(call, t):
            return
        extra = self.timers.negotiate(call, t.now, request)
        call.dialog.refresh_target(request)
        learn_target(call.dialog, t.source)
        if not request.body:
            self.core.tx_respond(tx, 200, t.now, extra)
            return
        try:
            negotiated = self._negotiate(call, offer_body(request))
        except NotAcceptable as exc:  # the call goes on with the media it had
            self.core.tx_respond(tx, 488, t.now, [warning(exc)])
            self.core.events.append(RequestRejected(exc.reason, "UPDATE", 488, tx.addr))
            return
        except SdpError as exc:
            self.core.tx_respond(tx, 400, t.now, reason=f"Bad SDP: {exc}")
            return
        self.core.tx_respond(
            tx,
            200,
            t.now,
            [
                ("Content-Type", "application/sdp"),
                ("Contact", self.core.contact(call.peer, call)),
                *extra,
            ],
            negotiated.answer.serialize(),
        )
        self.core.events.append(MediaUpdated(call.handle, negotiated))

    def _answer_info(self, call: SipCall, t: Trigger) -> None:
        """RFC 2976 INFO: application/dtmf-relay or application/dtmf becomes a digit."""
        tx, request = t.tx, t.request
        assert tx is not None and request is not None
        ctype = request.content_type
        digit: str | None = None
        duration = 0
        text = request.body.decode("utf-8", "replace")
        if ctype == "application/dtmf-relay":
            m = re.search(r"(?im)^\s*signal\s*=\s*(\S+)", text)
            d = re.search(r"(?im)^\s*duration\s*=\s*(\d+)", text)
            digit = m.group(1) if m else None
            duration = int(d.group(1)) if d else 0
        elif ctype == "application/dtmf":
            digit = text.strip()
        elif not request.body:
            self.core.tx_respond(tx, 200, t.now)
            return
        else:
            accept = [("Accept", "application/dtmf-relay, application/dtmf")]
            self.core.tx_respond(tx, 415, t.now, accept)
            return
        if digit is not None and digit.isdecimal() and 10 <= int(digit) <= 15:
            digit = _DTMF_EVENTS[int(digit)]  # some send RFC 4733 event codes
        if digit is None or len(digit) != 1 or digit.upper() not in _DTMF_CHARS:
            self.core.tx_respond(tx, 400, t.now, reason="Bad DTMF body")
            return
        self.core.tx_respond(tx, 200, t.now)
        self.core.events.append(DtmfInfoReceived(call.handle, digit.upper(), duration))

    def _answer_notify(self, call: SipCall, t: Trigger) -> None:
        """The NOTIFYs of our REFER (RFC 3515 §2.4.5): sipfrag statuses until final."""
        tx, request = t.tx, t.request
        assert tx is not None and request is not None
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self.core.tx_respond(tx, 489, t.now, reason="Bad Event")
            return
        self.core.tx_respond(tx, 200, t.now)
        m = re.match(rb"\s*SIP/2\.0\s+(\d{3})", request.body)
        state = (request.headers.get("Subscription-State") or "").lower()
        if m:
            status = int(m.group(1))
            final = status >= 200 or state.startswith("terminated")
            self.core.events.append(TransferProgressed(call.handle, status, final))

    def _answer_options(self, call: SipCall, t: Trigger) -> None:
        assert t.tx is not None
        self.core.tx_respond(t.tx, 200, t.now, [("Allow", ALLOW), ("Accept", "application/sdp")])

    def _send_405(self, call: SipCall, t: Trigger) -> None:
        assert t.tx is not None and t.request is not None and t.source is not None
        self.core.tx_respond(t.tx, 405, t.now, [("Allow", ALLOW)])
        self.core.events.append(RequestRejected("unsupported", t.request.method, 405, t.source))

    # --- ours: BYE, REFER, re-INVITE, and what answers them

    def _send_bye(self, call: SipCall, t: Trigger) -> None:
        call.retransmit = None
        call.session_expires = call.refresh_at = None
        self.core.send_in_dialog(call, "BYE", t.now)

    def _send_refer(self, call: SipCall, t: Trigger) -> None:
        """Blind transfer: REFER the peer to `t.target` (RFC 3515); NOTIFYs follow."""
        ours = f"<sip:{self.core.config.user}@{self.core.hostport()}>"
        self.core.send_in_dialog(
            call, "REFER", t.now, [("Refer-To", f"<{t.target}>"), ("Referred-By", ours)]
        )

    def _send_reinvite(self, call: SipCall, t: Trigger) -> None:
        assert isinstance(t.sdp, SessionDescription)
        call.local_sdp = t.sdp
        self.core.send_in_dialog(
            call,
            "INVITE",
            t.now,
            [("Content-Type", "application/sdp"), *self.timers.request_headers(call)],
            t.sdp.serialize(),
        )

    def _retry_with_credentials(self, call: SipCall, t: Trigger) -> None:
        """RFC 3261 §22.2: our request again with the call's credentials, CSeq + 1."""
        assert t.response is not None and t.sent is not None and call.credentials is not None
        challenge = answerable_challenge(t.response, t.sent)
        assert challenge is not None
        name = "Authorization" if t.response.status == 401 else "Proxy-Authorization"
        value = authorization(challenge, t.sent.method, t.sent.uri, call.credentials)
        self.core.resend_in_dialog(call, t.sent, t.now, [(name, value)])

    def _refresh_target(self, call: SipCall, t: Trigger) -> None:
        assert call.dialog is not None and t.response is not None
        call.dialog.refresh_target(t.response)
        learn_target(call.dialog, t.source)

    def _media_from_2xx(self, call: SipCall, t: Trigger) -> None:
        assert t.response is not None
        answer = sdp_of(t.response)
        if answer is not None:
            self._media_from_answer(call, answer)

    def _reinvite_failed(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "reinvite_failed"))

    def _request_timeout(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "request_timeout"))

    def _transfer(self, call: SipCall, t: Trigger) -> None:
        assert t.response is not None
        status = t.response.status
        self.core.events.append(TransferProgressed(call.handle, status, status >= 300))

    def _transfer_timeout(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(TransferProgressed(call.handle, 408, True))

    # --- offer/answer in a dialog (RFC 3264 §8)

    def _negotiate(self, call: SipCall, body: bytes) -> Negotiated:
        """Answer a new offer with our current address/port, preferring our current codec."""
        assert call.local_sdp is not None
        offer = SessionDescription.parse(body)
        local = call.local_sdp
        audio = local.audio()
        port = audio.port if audio else 0
        addr = (audio.connection if audio else None) or local.connection or local.origin_address
        current = _current_codec(local)
        policy = call.media.preferring(current) if current else call.media
        negotiated = sdpmod.negotiate(
            offer,
            addr,
            port,
            policy,
            session_id=local.session_id,
            session_version=local.session_version,
            local_crypto=_our_crypto(local),  # RFC 4568 §7.1.4: our key stays
        )
        answer = negotiated.answer
        if _media_lines(answer) != _media_lines(local):
            answer.session_version = local.session_version + 1  # RFC 3264 §8
        call.local_sdp = answer
        call.remote_sdp = offer
        return negotiated

    def _media_from_answer(self, call: SipCall, answer: SessionDescription) -> None:
        try:
            media = sdpmod.describe(answer, call.media, local=call.local_sdp)
        except SdpError:
            return
        assert call.local_sdp is not None
        call.remote_sdp = answer
        self.core.events.append(MediaUpdated(call.handle, Negotiated(call.local_sdp, media)))


def _current_codec(sd: SessionDescription) -> sdpmod.Codec | None:
    """The codec our last SDP chose (its first format), None if none."""
    audio = sd.audio()
    if audio is None or not audio.formats or not audio.formats[0].isdecimal():
        return None
    pt = int(audio.formats[0])
    rtpmap = audio.rtpmaps().get(pt)
    for codec in sdpmod.CODECS.values():
        if (codec.encoding.lower(), codec.clock_rate) == rtpmap or (
            rtpmap is None and codec.static and codec.payload_type == pt
        ):
            return codec.name
    return None


def _our_crypto(sd: SessionDescription) -> CryptoAttribute | None:
    """Our key in our last SDP (its SRTP audio line's first a=crypto), None if plain RTP."""
    audio = sd.audio()
    if audio is None or audio.proto.upper() not in sdpmod.SDES_RTP:
        return None
    return next(iter(sdpmod.crypto_lines(audio)), None)


def _media_lines(sd: SessionDescription) -> list[tuple[object, ...]]:
    return [
        (m.media, m.port, m.proto, tuple(m.formats), m.connection, tuple(m.attributes))
        for m in sd.media
    ] + [(sd.connection,)]
