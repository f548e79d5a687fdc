"""RFC 4028 session timers: the interval and refresher we agree to, the refresh we send, and
the end of a session nobody refreshed.

The caller asks with `Session-Expires` (and `Supported: timer`); our 2xx to the INVITE, a
re-INVITE or an UPDATE answers with `Session-Expires: N;refresher=...` and arms one of two
deadlines of the call: `refresh_at` when we refresh (a body-less UPDATE every N/2, §7.4), or
`session_expires` when the far end does (BYE if no refresh came by N - min(32, N/3), §10).
Below `Min-SE` the INVITE gets 422.
"""

from __future__ import annotations

from gateway.sip.events import CallTerminated
from gateway.sip.message import SipRequest
from gateway.sip.ua_core import SUPPORTED, SipCall, Step, Trigger, UaCore


def session_expires(request: SipRequest) -> int | None:
    """The request's Session-Expires interval in seconds, None if absent or unreadable."""
    value = request.headers.get("Session-Expires")
    if value is None:
        return None
    num = value.split(";")[0].strip()
    return int(num) if num.isdigit() else None


class SessionTimers:
    """Negotiates a call's session timer and runs its refresh and expiry."""

    def __init__(self, core: UaCore) -> None:
        self.core = core

    def steps(self) -> dict[str, Step]:
        return {
            "refresh_session": self._refresh,
            "stop_session_timer": self._stop,
            "report_session_expired": self._expired,
        }

    def too_brief(self, request: SipRequest) -> bool:
        """Session-Expires below our Min-SE: the INVITE gets 422 (§5)."""
        se = session_expires(request)
        return se is not None and se < self.core.config.min_session_expires

    def negotiate(
        self, call: SipCall, now: float, request: SipRequest | None = None
    ) -> list[tuple[str, str]]:
        """The headers of our 2xx to `request` (the call's INVITE by default), arming the
        call's refresh or expiry deadline."""
        request = request or call.invite
        interval = session_expires(request)
        supported = [s.strip().lower() for s in request.headers.get_all("Supported")]
        if interval is None or "timer" not in supported:
            if interval is not None:
                # the UAC cannot refresh: we do (§9, refresher=uas)
                refresher = "uas"
            else:
                return []
        else:
            value = request.headers.get("Session-Expires") or ""
            refresher = "uas" if "refresher=uas" in value.replace(" ", "").lower() else "uac"
        interval = max(interval, self.core.config.min_session_expires)
        call.session_interval = interval
        if refresher == "uac":
            call.session_expires = now + interval - min(32, interval / 3)  # §10
            call.refresh_at = None
        else:
            call.session_expires = None
            call.refresh_at = now + interval / 2
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if "timer" in supported:
            headers.append(("Require", "timer"))
        return headers

    # --- steps

    def _refresh(self, call: SipCall, t: Trigger) -> None:
        """§7.4: we are the refresher: a body-less UPDATE, and the next one in N/2."""
        self.core.send_in_dialog(
            call,
            "UPDATE",
            t.now,
            [
                ("Session-Expires", f"{call.session_interval};refresher=uas"),
                ("Supported", SUPPORTED),
            ],
        )
        call.refresh_at = t.now + call.session_interval / 2
        call.session_expires = t.now + call.session_interval

    def _stop(self, call: SipCall, t: Trigger) -> None:
        """Expired before the dialog was confirmed: the session timer is dropped."""
        call.session_expires = call.refresh_at = None

    def _expired(self, call: SipCall, t: Trigger) -> None:
        self.core.events.append(CallTerminated(call.handle, "session_expired"))
