"""The SIP call state machine as one table: `(state, input) → (next state, steps)`, h11/h2 style.

Theory of operation: every input a call can meet is a `CallInput`: a command of the
application, a request of the far end, a response to one of our requests (by class), one of
the call's timers, or a client transaction of ours timing out. `TABLE[(state, input)]` gives the
state the call moves to and the steps that do the work (each step is a method of a role module:
`uas.py`, `uac.py`, `in_dialog.py`, `session_timer.py`, `prack.py`, registered by name on the
`UaCore`).
A step that answers a request with an error (a 488 to a re-INVITE's offer) refuses the
transition: the state stays. After a transition, a call timer the new state has no entry for is
disarmed (as transactions do with theirs).

A pair absent from the table is an error, never a silent fallthrough: a command raises
`SipCallStateError` (the application's bug); anything else is reported as an `UnexpectedInput`
event that the adapter logs and counts, a request so met is answered 500, and the state stays.
Every far-end request is in the table in every state whose dialog the far end can address, so
only a core bug reports one. No I/O, no clock, no imports: this module is data.

States that were flags once: `BYE_AFTER_ACK` (hung up after our 2xx, §15: the BYE waits for the
ACK), `CALLING`/`PROCEEDING` (a provisional response came or not), `CANCEL_DUE`/`CANCELLING`
(§9.1: no CANCEL before a provisional), `REINVITING` (our re-INVITE in progress) and
`REINVITED`/`REINVITED_NO_OFFER` (theirs answered, its ACK awaited; without an offer our 2xx
carried one and the ACK carries the answer), `AWAIT_PRACK`/`ANSWER_HELD` (RFC 3262: our reliable
provisional awaits its PRACK; accepted meanwhile, the 2xx waits for it). What stays data: the
2xx being retransmitted (bytes, interval; present exactly in the states that await an ACK), the
count of digest retries (classifies a 401/407 as `INVITE_CHALLENGE` while a retry is left), the
session timer's interval and who refreshes, the peer's Allow (which of the two refresh inputs,
UPDATE or re-INVITE, the one `refresh_at` deadline fires), the RSeq of each reliable 1xx, and
every deadline.

A command not allowed in the call's current state (or for an unknown call) raises
`gateway.errors.SipCallStateError`.
"""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    INCOMING = "incoming"  # UAS: INVITE received, no final response yet
    AWAIT_PRACK = "await_prack"  # UAS: a reliable provisional of ours awaits its PRACK (RFC 3262)
    ANSWER_HELD = "answer_held"  # UAS: accepted; the 2xx waits for that PRACK (RFC 3262 §3)
    ANSWERED = "answered"  # UAS: 2xx sent, its ACK awaited (§13.3.1.4)
    BYE_AFTER_ACK = "bye_after_ack"  # UAS: hung up after the 2xx; BYE once the ACK is in (§15)
    CALLING = "calling"  # UAC: INVITE sent, no response yet
    PROCEEDING = "proceeding"  # UAC: a provisional response came
    CANCEL_DUE = "cancel_due"  # UAC: hung up before any provisional; CANCEL waits for one (§9.1)
    CANCELLING = "cancelling"  # UAC: CANCEL sent, the INVITE's final response awaited
    CONFIRMED = "confirmed"  # dialog confirmed, no INVITE transaction in progress
    REINVITING = "reinviting"  # our re-INVITE sent, its final response awaited
    REINVITED = "reinvited"  # their re-INVITE's offer answered in our 2xx, its ACK awaited
    REINVITED_NO_OFFER = "reinvited_no_offer"  # their re-INVITE had no offer: ours is in the 2xx
    ENDING = "ending"  # our BYE sent
    ENDED = "ended"


class CallInput(enum.Enum):
    # commands of the application
    RING = "ring"
    RING_RELIABLE = "ring_reliable"  # 180 sent reliably: the INVITE had Require: 100rel
    PROGRESS = "progress"  # 183 with our SDP (early media)
    PROGRESS_RELIABLE = "progress_reliable"  # the same, reliably: the INVITE has 100rel
    ACCEPT = "accept"
    REJECT = "reject"
    HANGUP = "hangup"
    REFER = "refer"
    REINVITE = "reinvite"
    # requests of the far end
    RECV_CANCEL = "recv_cancel"  # CANCEL of the call's INVITE
    RECV_ACK = "recv_ack"  # the ACK of the 2xx we retransmit
    RECV_STRAY_ACK = "recv_stray_ack"  # any other ACK (a duplicate): absorbed (§17)
    RECV_BYE = "recv_bye"
    RECV_REINVITE = "recv_reinvite"  # with an offer
    RECV_REINVITE_NO_SDP = "recv_reinvite_no_sdp"
    RECV_UPDATE = "recv_update"
    RECV_INFO = "recv_info"
    RECV_NOTIFY = "recv_notify"
    RECV_OPTIONS = "recv_options"
    RECV_PRACK = "recv_prack"  # RFC 3262: 200 if it acknowledges our reliable provisional
    RECV_OTHER = "recv_other"  # any other method in a dialog (REFER, MESSAGE, ...): 405
    # responses to our requests, by class
    INVITE_1XX = "invite_1xx"
    INVITE_1XX_RELIABLE = "invite_1xx_reliable"  # RFC 3262 §4: a new RSeq, to be PRACKed
    INVITE_1XX_REPEAT = "invite_1xx_repeat"  # a reliable 1xx with an RSeq seen already: dropped
    INVITE_2XX = "invite_2xx"
    INVITE_CHALLENGE = "invite_challenge"  # a 401/407 we still answer (once, with credentials)
    INVITE_TOO_BRIEF = "invite_too_brief"  # a 422 we retry with its Min-SE (RFC 4028 §7.3)
    INVITE_FAILURE = "invite_failure"  # any other 3xx-6xx
    # RFC 3263 §4.3: a 503, timer B or a transport error while another target is left
    INVITE_FAILOVER = "invite_failover"
    REINVITE_1XX = "reinvite_1xx"
    REINVITE_2XX = "reinvite_2xx"
    REINVITE_FAILURE = "reinvite_failure"
    REINVITE_GONE = "reinvite_gone"  # 408 or 481: the dialog is gone (§14.1)
    BYE_1XX = "bye_1xx"
    BYE_2XX = "bye_2xx"
    BYE_FAILURE = "bye_failure"
    REFER_1XX = "refer_1xx"
    REFER_2XX = "refer_2xx"
    REFER_FAILURE = "refer_failure"
    UPDATE_2XX = "update_2xx"  # to our refreshing UPDATE (RFC 4028)
    UPDATE_FAILURE = "update_failure"
    UPDATE_GONE = "update_gone"  # 408 or 481: the dialog is gone (RFC 4028 §10)
    # a 401/407 to our re-INVITE, UPDATE, REFER or BYE that we answer (once per challenge)
    REQUEST_CHALLENGE = "request_challenge"
    REQUEST_TOO_BRIEF = "request_too_brief"  # a 422 to our re-INVITE or UPDATE, retried
    # the call's timers
    TIMER_NO_ANSWER = "timer_no_answer"  # EndpointConfig.answer_timeout, like timer C
    TIMER_ACK = "timer_ack"  # 64*T1 without the ACK of our 2xx (§13.3.1.4)
    TIMER_2XX_RETRANSMIT = "timer_2xx_retransmit"  # T1 doubling to T2, unreliable transports
    TIMER_1XX_RETRANSMIT = "timer_1xx_retransmit"  # RFC 3262 §3: our reliable 1xx, T1 doubling
    TIMER_PRACK = "timer_prack"  # RFC 3262 §3: 64*T1 without the PRACK of our reliable 1xx
    TIMER_CANCEL = "timer_cancel"  # 64*T1 after our CANCEL without a final response (§9.1)
    TIMER_SESSION_EXPIRED = "timer_session_expired"  # RFC 4028 §10
    TIMER_SESSION_REFRESH = "timer_session_refresh"  # RFC 4028 §10: we refresh, by UPDATE
    TIMER_SESSION_REFRESH_REINVITE = "timer_session_refresh_reinvite"  # ... by re-INVITE
    # our client transactions that timed out (timer B or F)
    TIMEOUT_INVITE = "timeout_invite"
    TIMEOUT_REINVITE = "timeout_reinvite"
    TIMEOUT_REFER = "timeout_refer"
    TIMEOUT_BYE = "timeout_bye"
    TIMEOUT_UPDATE = "timeout_update"


COMMANDS = frozenset(
    {
        CallInput.RING,
        CallInput.RING_RELIABLE,
        CallInput.PROGRESS,
        CallInput.PROGRESS_RELIABLE,
        CallInput.ACCEPT,
        CallInput.REJECT,
        CallInput.HANGUP,
        CallInput.REFER,
        CallInput.REINVITE,
    }
)
#: far-end requests that have a server transaction (answered 500 when absent from the table)
REQUESTS = frozenset(i for i in CallInput if i.value.startswith("recv_")) - {
    CallInput.RECV_ACK,
    CallInput.RECV_STRAY_ACK,
}

S = CallState
In = CallInput
SAME = None  # next state: the state does not change

# groups of states
_UAS_EARLY = (S.INCOMING, S.AWAIT_PRACK, S.ANSWER_HELD)  # no final response of ours yet
_RELIABLE_OUT = (S.AWAIT_PRACK, S.ANSWER_HELD)  # a reliable 1xx of ours awaits its PRACK
_AWAIT_ACK = (S.ANSWERED, S.BYE_AFTER_ACK)  # our first 2xx sent, its ACK awaited
_UAC_EARLY = (S.CALLING, S.PROCEEDING)
_UAC_CANCEL = (S.CANCEL_DUE, S.CANCELLING)
_REINVITED = (S.REINVITED, S.REINVITED_NO_OFFER)
_DIALOG = (S.CONFIRMED, S.REINVITING, *_REINVITED)  # a confirmed dialog
#: the states of a confirmed dialog (RFC 3261 §13.3.1.4: the UAS's once the ACK is in), where
#: our own in-dialog requests (REFER) may go
DIALOG_STATES = frozenset(_DIALOG)
_NOT_CONFIRMED = (*_UAS_EARLY, *_AWAIT_ACK, S.ENDING)  # re-INVITE → 500, UPDATE → 491
_ADDRESSABLE = (*_UAS_EARLY, *_AWAIT_ACK, *_DIALOG, S.ENDING)  # the far end knows the dialog
_RETRANSMITTING = (*_AWAIT_ACK, *_REINVITED)  # a 2xx of ours awaits its ACK

Row = tuple[tuple[CallState, ...], tuple[CallInput, ...], CallState | None, tuple[str, ...]]

#: (states, inputs, next state or SAME, steps), in reading order; `TABLE` is built from it
ROWS: tuple[Row, ...] = (
    # --- commands
    ((S.INCOMING,), (In.RING,), SAME, ("send_ringing",)),
    ((S.INCOMING,), (In.PROGRESS,), SAME, ("send_progress",)),
    # RFC 3262 §3: one reliable provisional at a time; the next waits for the PRACK
    ((S.INCOMING,), (In.RING_RELIABLE, In.PROGRESS_RELIABLE), S.AWAIT_PRACK, ("send_reliable",)),
    ((S.INCOMING,), (In.ACCEPT,), S.ANSWERED, ("send_2xx",)),
    ((S.AWAIT_PRACK,), (In.ACCEPT,), S.ANSWER_HELD, ("hold_2xx",)),
    (_UAS_EARLY, (In.REJECT,), S.ENDED, ("send_rejection",)),
    (_UAS_EARLY, (In.HANGUP,), S.ENDED, ("send_480",)),
    ((S.ANSWERED,), (In.HANGUP,), S.BYE_AFTER_ACK, ()),
    ((S.CALLING,), (In.HANGUP,), S.CANCEL_DUE, ()),
    ((S.PROCEEDING,), (In.HANGUP,), S.CANCELLING, ("send_cancel",)),
    (_DIALOG, (In.HANGUP,), S.ENDING, ("send_bye",)),
    ((S.BYE_AFTER_ACK, *_UAC_CANCEL, S.ENDING), (In.HANGUP,), SAME, ()),
    (_DIALOG, (In.REFER,), SAME, ("send_refer",)),
    ((S.CONFIRMED,), (In.REINVITE,), S.REINVITING, ("send_reinvite",)),
    # --- requests of the far end
    (_UAS_EARLY, (In.RECV_CANCEL,), S.ENDED, ("cancel_ok", "send_487", "report_cancel")),
    ((*_AWAIT_ACK, *_DIALOG, S.ENDING), (In.RECV_CANCEL,), SAME, ("cancel_ok",)),  # too late
    ((S.ANSWERED,), (In.RECV_ACK,), S.CONFIRMED, ("acked",)),
    ((S.BYE_AFTER_ACK,), (In.RECV_ACK,), S.ENDING, ("acked", "send_bye")),
    ((S.REINVITED,), (In.RECV_ACK,), S.CONFIRMED, ("reinvite_acked",)),
    ((S.REINVITED_NO_OFFER,), (In.RECV_ACK,), S.CONFIRMED, ("reinvite_acked", "answer_in_ack")),
    (_ADDRESSABLE, (In.RECV_STRAY_ACK,), SAME, ()),
    (_UAS_EARLY, (In.RECV_BYE,), S.ENDED, ("bye_ok", "send_487", "report_bye")),
    ((*_AWAIT_ACK, *_DIALOG, S.ENDING), (In.RECV_BYE,), S.ENDED, ("bye_ok", "report_bye")),
    ((S.CONFIRMED,), (In.RECV_REINVITE,), S.REINVITED, ("answer_reinvite",)),
    ((S.CONFIRMED,), (In.RECV_REINVITE_NO_SDP,), S.REINVITED_NO_OFFER, ("offer_in_2xx",)),
    # §14.2: an INVITE while another is in progress: 491, or 500 before our final response
    ((S.REINVITING, *_REINVITED), (In.RECV_REINVITE, In.RECV_REINVITE_NO_SDP), SAME, ("send_491",)),
    (_NOT_CONFIRMED, (In.RECV_REINVITE, In.RECV_REINVITE_NO_SDP), SAME, ("send_500",)),
    (_DIALOG, (In.RECV_UPDATE,), SAME, ("answer_update",)),
    (_NOT_CONFIRMED, (In.RECV_UPDATE,), SAME, ("send_491",)),
    (_ADDRESSABLE, (In.RECV_INFO,), SAME, ("answer_info",)),
    (_ADDRESSABLE, (In.RECV_NOTIFY,), SAME, ("answer_notify",)),
    (_ADDRESSABLE, (In.RECV_OPTIONS,), SAME, ("answer_options",)),
    (_ADDRESSABLE, (In.RECV_OTHER,), SAME, ("send_405",)),
    # RFC 3262 §3: a PRACK of our reliable 1xx (a RAck that matches none gets 481, refused)
    ((S.AWAIT_PRACK,), (In.RECV_PRACK,), S.INCOMING, ("prack_ok",)),
    ((S.ANSWER_HELD,), (In.RECV_PRACK,), S.ANSWERED, ("prack_ok", "send_held_2xx")),
    (
        (S.INCOMING, *_AWAIT_ACK, *_DIALOG, S.ENDING),
        (In.RECV_PRACK,),
        SAME,
        ("send_481",),
    ),
    # --- responses to our INVITE
    (_UAC_EARLY, (In.INVITE_1XX,), S.PROCEEDING, ("report_progress",)),
    ((S.CANCEL_DUE,), (In.INVITE_1XX, In.INVITE_1XX_RELIABLE), S.CANCELLING, ("send_cancel",)),
    ((S.CANCELLING,), (In.INVITE_1XX,), SAME, ("report_progress",)),
    # RFC 3262 §4: a reliable 1xx is PRACKed in its early dialog; a repeated RSeq is not
    (_UAC_EARLY, (In.INVITE_1XX_RELIABLE,), S.PROCEEDING, ("send_prack", "report_progress")),
    ((S.CANCELLING,), (In.INVITE_1XX_RELIABLE,), SAME, ("send_prack", "report_progress")),
    ((S.PROCEEDING, S.CANCELLING), (In.INVITE_1XX_REPEAT,), SAME, ()),
    (
        _UAC_EARLY,
        (In.INVITE_2XX,),
        S.CONFIRMED,
        ("make_dialog", "send_ack", "session_from_2xx", "report_answer"),
    ),
    (_UAC_CANCEL, (In.INVITE_2XX,), S.ENDING, ("make_dialog", "send_ack", "send_bye")),
    ((*_DIALOG, S.ENDING), (In.INVITE_2XX,), SAME, ("send_ack",)),  # a 2xx retransmission
    (_UAC_EARLY, (In.INVITE_CHALLENGE,), S.CALLING, ("retry_with_auth",)),
    (_UAC_EARLY, (In.INVITE_TOO_BRIEF,), S.CALLING, ("retry_with_min_se",)),
    (_UAC_EARLY, (In.INVITE_FAILURE,), S.ENDED, ("report_failure",)),
    # RFC 3263 §4.3: the same INVITE (new branch, CSeq + 1) to the trunk's next target
    (_UAC_EARLY, (In.INVITE_FAILOVER,), S.CALLING, ("fail_over",)),
    (_UAC_CANCEL, (In.INVITE_FAILOVER,), S.ENDED, ("report_cancelled",)),
    (
        _UAC_CANCEL,
        (In.INVITE_CHALLENGE, In.INVITE_TOO_BRIEF, In.INVITE_FAILURE),
        S.ENDED,
        ("report_cancelled",),
    ),
    # --- responses to our re-INVITE (a late one may meet any state of the dialog)
    ((*_DIALOG, S.ENDING), (In.REINVITE_1XX,), SAME, ()),
    (
        (S.REINVITING,),
        (In.REINVITE_2XX,),
        S.CONFIRMED,
        ("refresh_target", "send_ack", "session_from_2xx", "media_from_2xx"),
    ),
    (
        (S.CONFIRMED, *_REINVITED),
        (In.REINVITE_2XX,),
        SAME,
        ("refresh_target", "send_ack", "session_from_2xx", "media_from_2xx"),
    ),
    ((S.ENDING,), (In.REINVITE_2XX,), SAME, ("refresh_target", "send_ack", "media_from_2xx")),
    # the media stay as they were; the session runs until it expires (RFC 4028 §10)
    ((S.REINVITING,), (In.REINVITE_FAILURE,), S.CONFIRMED, ("refresh_failed",)),
    ((S.CONFIRMED, *_REINVITED, S.ENDING), (In.REINVITE_FAILURE,), SAME, ()),
    (_DIALOG, (In.REINVITE_GONE,), S.ENDING, ("send_bye", "report_reinvite_failed")),
    ((S.ENDING,), (In.REINVITE_GONE,), SAME, ("send_bye", "report_reinvite_failed")),
    # --- responses to our BYE and REFER
    ((S.ENDING,), (In.BYE_1XX,), SAME, ()),
    ((S.ENDING,), (In.BYE_2XX, In.BYE_FAILURE), S.ENDED, ()),
    ((*_DIALOG, S.ENDING), (In.REFER_1XX,), SAME, ()),
    ((*_DIALOG, S.ENDING), (In.REFER_2XX, In.REFER_FAILURE), SAME, ("report_transfer",)),
    # --- responses to our refreshing UPDATE (RFC 4028 §10)
    (_DIALOG, (In.UPDATE_2XX,), SAME, ("session_from_2xx",)),
    (_DIALOG, (In.UPDATE_FAILURE,), SAME, ("refresh_failed",)),
    (_DIALOG, (In.UPDATE_GONE,), S.ENDING, ("send_bye", "report_refresh_failed")),
    ((S.ENDING,), (In.UPDATE_2XX, In.UPDATE_FAILURE, In.UPDATE_GONE), SAME, ()),
    # --- a challenge or a 422 to an in-dialog request of ours: the request again (§22.2,
    # RFC 4028 §7.3), its outcome then the retry's
    ((*_DIALOG, S.ENDING), (In.REQUEST_CHALLENGE,), SAME, ("retry_with_credentials",)),
    ((*_DIALOG, S.ENDING), (In.REQUEST_TOO_BRIEF,), SAME, ("retry_refresh_with_min_se",)),
    # --- the call's timers
    ((S.INCOMING, S.AWAIT_PRACK), (In.TIMER_NO_ANSWER,), S.ENDED, ("send_480", "report_no_answer")),
    (_RELIABLE_OUT, (In.TIMER_1XX_RETRANSMIT,), SAME, ("resend_1xx",)),
    # RFC 3262 §3: no PRACK in 64*T1: the INVITE is refused with a 5xx
    (_RELIABLE_OUT, (In.TIMER_PRACK,), S.ENDED, ("send_no_prack", "report_prack_timeout")),
    (_RETRANSMITTING, (In.TIMER_2XX_RETRANSMIT,), SAME, ("resend_2xx",)),
    (_RETRANSMITTING, (In.TIMER_ACK,), S.ENDING, ("send_bye", "report_ack_timeout")),
    ((S.CANCELLING,), (In.TIMER_CANCEL,), S.ENDED, ("report_cancelled",)),
    (_DIALOG, (In.TIMER_SESSION_EXPIRED,), S.ENDING, ("send_bye", "report_session_expired")),
    (_AWAIT_ACK, (In.TIMER_SESSION_EXPIRED,), SAME, ("stop_session_timer",)),
    (_DIALOG, (In.TIMER_SESSION_REFRESH,), SAME, ("refresh_by_update",)),
    ((S.CONFIRMED,), (In.TIMER_SESSION_REFRESH_REINVITE,), S.REINVITING, ("refresh_by_reinvite",)),
    # one INVITE transaction at a time (§14.1): the re-INVITE refresh waits
    ((S.REINVITING, *_REINVITED), (In.TIMER_SESSION_REFRESH_REINVITE,), SAME, ("defer_refresh",)),
    (
        _AWAIT_ACK,
        (In.TIMER_SESSION_REFRESH, In.TIMER_SESSION_REFRESH_REINVITE),
        SAME,
        ("defer_refresh",),
    ),
    # --- our client transactions timing out
    # timer B runs until the first response only (§17.1.1.2)
    ((S.CALLING, S.CANCEL_DUE), (In.TIMEOUT_INVITE,), S.ENDED, ("report_invite_timeout",)),
    (_DIALOG, (In.TIMEOUT_REINVITE,), S.ENDING, ("send_bye", "report_request_timeout")),
    ((S.ENDING,), (In.TIMEOUT_REINVITE,), SAME, ("send_bye", "report_request_timeout")),
    ((*_DIALOG, S.ENDING), (In.TIMEOUT_REFER,), SAME, ("report_transfer_timeout",)),
    ((S.ENDING,), (In.TIMEOUT_BYE,), S.ENDED, ()),
    (_DIALOG, (In.TIMEOUT_UPDATE,), S.ENDING, ("send_bye", "report_request_timeout")),
    ((S.ENDING,), (In.TIMEOUT_UPDATE,), SAME, ()),
)

Transition = tuple[CallState, tuple[str, ...]]


def _build(rows: tuple[Row, ...]) -> dict[tuple[CallState, CallInput], Transition]:
    table: dict[tuple[CallState, CallInput], Transition] = {}
    for states, inputs, next_state, steps in rows:
        for state in states:
            for input_ in inputs:
                if (state, input_) in table:
                    raise ValueError(f"call table: ({state.value}, {input_.value}) twice")
                table[(state, input_)] = (state if next_state is SAME else next_state, steps)
    return table


TABLE: dict[tuple[CallState, CallInput], Transition] = _build(ROWS)
STEPS = frozenset(step for _, _, _, steps in ROWS for step in steps)
