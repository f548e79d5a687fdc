"""RFC 4028 session timers, both ways: the interval and refresher we agree to, the refreshes we
send, and the end of a session nobody refreshed.

As UAS (their INVITE, re-INVITE or UPDATE) our 2xx answers with `Session-Expires:
N;refresher=...` (§9; below our Min-SE the request gets 422 with `Min-SE`, §5). As UAC (our
INVITE, re-INVITE or UPDATE) the 2xx's `Session-Expires` and `refresher` decide (§7.2): a 2xx
without one ends the session timer; one without `refresher` makes us, the UAC, the refresher. A
422 is retried with `Session-Expires` and `Min-SE` raised to the 422's `Min-SE` (§7.3).

Every agreement arms one of two deadlines of the call: `refresh_at` when we refresh (at N/2,
§10: an UPDATE when the peer's Allow lists it, else a re-INVITE with the unchanged offer, same
o= version, RFC 3264 §8), and `session_expires`: when the peer refreshes, BYE if no refresh
came by N - min(32, N/3) (§10); when we do, BYE at N after the last refresh that succeeded. A
refresh answered 408 or 481, or timing out, ends the call with BYE (§10, RFC 3261 §12.2.1.2);
another failure leaves the session to run until it expires (with one more try half-way there).

The `refresher` parameter names who refreshes from the point of view of the transaction it is
in: `uac` in a refresh we send, `uas` in our 2xx when we refresh.
"""

from __future__ import annotations

from gateway.sip.events import CallTerminated
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.ua_core import SUPPORTED, SipCall, Step, Trigger, UaCore

#: an INVITE transaction is in progress when a re-INVITE refresh is due: try again this later
REFRESH_DEFER = 2.0
#: 422s retried per call (each must raise the interval; a peer cannot make us loop)
MAX_TOO_BRIEF_RETRIES = 3
MAX_SESSION_EXPIRES = 86400


def parse_session_expires(message: SipRequest | SipResponse) -> tuple[int, str | None] | None:
    """The message's Session-Expires: (seconds, refresher or None); None if absent or
    unreadable (§4: `delta-seconds *(;se-params)`)."""
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    num, *params = value.split(";")
    num = num.strip()
    if not num.isdecimal() or int(num) < 1:
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(num), refresher


def session_expires(request: SipRequest | SipResponse) -> int | None:
    """The message's Session-Expires interval in seconds, None if absent or unreadable."""
    parsed = parse_session_expires(request)
    return parsed[0] if parsed is not None else None


def min_se_of(message: SipRequest | SipResponse) -> int | None:
    """The message's Min-SE in seconds (§5), None if absent or unreadable."""
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if value.isdecimal() else None


def too_brief_retry(call: SipCall, sent: SipRequest, response: SipResponse) -> int | None:
    """§7.3: the interval to retry `sent` with after its 422, None when it cannot be retried
    (no Min-SE above what we asked, no Session-Expires in `sent`, or retried enough)."""
    if response.status != 422 or call.too_brief_tries >= MAX_TOO_BRIEF_RETRIES:
        return None
    wanted, asked = min_se_of(response), session_expires(sent)
    if wanted is None or asked is None or not asked < wanted <= MAX_SESSION_EXPIRES:
        return None
    return wanted


def _supports_timer(request: SipRequest) -> bool:
    return "timer" in (s.strip().lower() for s in request.headers.get_all("Supported"))


def note_allow(call: SipCall, message: SipRequest | SipResponse) -> None:
    """Remember the methods the peer's Allow lists (it decides UPDATE or re-INVITE)."""
    if "Allow" in message.headers:
        call.peer_allow = frozenset(m.strip().upper() for m in message.headers.get_all("Allow"))


class SessionTimers:
    """Negotiates a call's session timer and runs its refresh and expiry."""

    def __init__(self, core: UaCore) -> None:
        self.core = core

    def steps(self) -> dict[str, Step]:
        return {
            "refresh_by_update": self._refresh_by_update,
            "refresh_by_reinvite": self._refresh_by_reinvite,
            "defer_refresh": self._defer_refresh,
            "session_from_2xx": self._session_from_2xx,
            "retry_refresh_with_min_se": self._retry_with_min_se,
            "refresh_failed": self._refresh_failed,
            "stop_session_timer": self._stop,
            "report_session_expired": self._expired,
            "report_refresh_failed": self._report_refresh_failed,
        }

    def min_se(self, call: SipCall) -> int:
        """The call's Min-SE: its trunk's (raised by 422s), else the endpoint's."""
        return call.min_se or self.core.config.min_session_expires

    def too_brief(self, request: SipRequest, call: SipCall | None = None) -> bool:
        """Session-Expires below our Min-SE: the request gets 422 (§5, §9)."""
        se = session_expires(request)
        floor = self.min_se(call) if call is not None else self.core.config.min_session_expires
        return se is not None and se < floor

    def refuse_too_brief(self, call: SipCall, t: Trigger) -> bool:
        """Answer their re-INVITE or UPDATE 422 when it asks too brief an interval (§9)."""
        assert t.request is not None and t.tx is not None
        if not self.too_brief(t.request, call):
            return False
        self.core.tx_respond(t.tx, 422, t.now, [("Min-SE", str(self.min_se(call)))])
        return True

    def negotiate(
        self, call: SipCall, now: float, request: SipRequest | None = None
    ) -> list[tuple[str, str]]:
        """The session-timer headers of our 2xx to `request` (the call's INVITE by default, or
        their re-INVITE or UPDATE), arming the call's refresh or expiry deadline (§9)."""
        request = request or call.invite
        note_allow(call, request)
        asked = parse_session_expires(request)
        supported = _supports_timer(request)
        if asked is None:
            if not call.session_interval:
                return []
            # a refresh without Session-Expires: the timer goes on as it was (§9 lets the UAS
            # put one in its 2xx); the UAC refreshes only if it did and supports the timer
            interval = call.session_interval
            refresher = "uac" if supported and not call.we_refresh else "uas"
        else:
            interval = max(asked[0], self.min_se(call))
            # §9: the request's refresher, else the UAC when it supports the timer
            refresher = asked[1] or ("uac" if supported else "uas")
            if not supported:
                refresher = "uas"  # the UAC cannot refresh
        self._arm(call, now, interval, we_refresh=refresher == "uas")
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if supported:
            headers.append(("Require", "timer"))
        return headers

    def request_headers(self, call: SipCall) -> list[tuple[str, str]]:
        """The session-timer headers of a re-INVITE or UPDATE we send (§7.4): the running
        interval, who refreshes as seen from this transaction (us: `uac`), our Min-SE."""
        if not call.session_interval:
            return [("Supported", SUPPORTED)]
        refresher = "uac" if call.we_refresh else "uas"
        return [
            ("Session-Expires", f"{call.session_interval};refresher={refresher}"),
            ("Min-SE", str(min(self.min_se(call), call.session_interval))),
            ("Supported", SUPPORTED),
        ]

    def _arm(self, call: SipCall, now: float, interval: int, *, we_refresh: bool) -> None:
        call.session_interval = interval
        call.we_refresh = we_refresh
        if we_refresh:  # §10: refresh at half the interval; the session lasts the interval
            call.refresh_at = now + interval / 2
            call.session_expires = now + interval
        else:  # §10: BYE if no refresh came by N - min(32, N/3)
            call.refresh_at = None
            call.session_expires = now + interval - min(32, interval / 3)

    def _off(self, call: SipCall) -> None:
        call.session_interval = 0
        call.session_expires = call.refresh_at = None

    # --- steps

    def _session_from_2xx(self, call: SipCall, t: Trigger) -> None:
        """§7.2: the 2xx to our INVITE, re-INVITE or UPDATE sets the timer: no Session-Expires,
        none; no `refresher`, we (the UAC) refresh."""
        assert t.response is not None
        note_allow(call, t.response)
        agreed = parse_session_expires(t.response)
        if agreed is None:
            self._off(call)
            return
        interval, refresher = agreed
        self._arm(call, t.now, interval, we_refresh=refresher != "uas")

    def _refresh_by_update(self, call: SipCall, t: Trigger) -> None:
        """§10: we refresh with a body-less UPDATE (the peer allows it); its 2xx re-arms."""
        self.core.send_in_dialog(call, "UPDATE", t.now, self.request_headers(call))

    def _refresh_by_reinvite(self, call: SipCall, t: Trigger) -> None:
        """§10: the peer does not allow UPDATE: a re-INVITE with the offer unchanged (same o=
        version, RFC 3264 §8); its 2xx re-arms."""
        assert call.local_sdp is not None
        self.core.send_in_dialog(
            call,
            "INVITE",
            t.now,
            [("Content-Type", "application/sdp"), *self.request_headers(call)],
            call.local_sdp.serialize(),
        )

    def _defer_refresh(self, call: SipCall, t: Trigger) -> None:
        """An INVITE transaction is in progress (no second one, RFC 3261 §14.1): a little
        later (its 2xx, a refresh itself, may re-arm the timer first)."""
        call.refresh_at = t.now + REFRESH_DEFER

    def _retry_with_min_se(self, call: SipCall, t: Trigger) -> None:
        """§7.3: our re-INVITE or UPDATE again, Session-Expires and Min-SE raised to the 422's."""
        assert t.response is not None and t.sent is not None
        interval = too_brief_retry(call, t.sent, t.response)
        assert interval is not None
        call.too_brief_tries += 1
        call.min_se = interval
        refresher = (parse_session_expires(t.sent) or (0, None))[1]
        se = f"{interval};refresher={refresher}" if refresher else str(interval)
        self.core.resend_in_dialog(
            call, t.sent, t.now, [("Session-Expires", se), ("Min-SE", str(interval))]
        )

    def _refresh_failed(self, call: SipCall, t: Trigger) -> None:
        """A refresh (or a re-INVITE) failed otherwise: the session runs until it expires; when
        we refresh, once more half-way there while that leaves time for it."""
        if call.we_refresh and call.refresh_at is None and call.session_expires is not None:
            left = call.session_expires - t.now
            if left > 64:
                call.refresh_at = t.now + left / 2

    def _stop(self, call: SipCall, t: Trigger) -> None:
        """Expired before the dialog was confirmed: the session timer is dropped."""
        call.session_expires = call.refresh_at = None

    def _expired(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "session_expired"))

    def _report_refresh_failed(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "refresh_failed"))
