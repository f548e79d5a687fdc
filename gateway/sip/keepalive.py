"""Keep-alives towards trunks (issue 15, item 5): an OPTIONS ping, or a double CRLF on the
trunk's TCP/TLS connection (RFC 5626 §3.5.1), every `interval` seconds per trunk, so that the
NAT bindings and firewall pinholes in front of the gateway stay open between calls.

Sans-I/O, on the `UaCore`: `configure(targets, now)` starts the schedule, `timer()` is the next
deadline (in `SipEndpoint.get_timer()`), `handle_timer(now)` sends what is due. An OPTIONS
ping is a client transaction of purpose `keepalive`: its final response (`on_response`) or its
timeout (timer F, `on_timeout`) becomes a `KeepAliveResult` event; a CRLF ping has no answer
to wait for (its send errors are the transport's to count). A failure is reported, never fatal:
the next ping goes out on schedule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.sip.events import KeepAliveResult
from gateway.sip.message import Headers, SipRequest, SipResponse
from gateway.sip.routing import new_tag
from gateway.sip.transaction import Address
from gateway.sip.ua_core import UaCore

KINDS = ("options", "crlf")
#: the bounded results (metric label values)
RESULTS = ("ok", "error", "timeout", "sent")
CRLF_PING = b"\r\n\r\n"  # RFC 5626 §3.5.1


@dataclass(frozen=True)
class KeepAliveTarget:
    """One trunk's keep-alive: `kind` options or crlf, to `address`; `uri` is the OPTIONS
    Request-URI (the trunk's uri)."""

    trunk: str
    kind: str
    interval: float
    address: Address
    uri: str


@dataclass
class _Schedule:
    target: KeepAliveTarget
    next_at: float
    seq: int = 0
    failing: bool = False


class KeepAlives:
    """Every trunk's keep-alive schedule, and the OPTIONS pings in flight."""

    def __init__(self, core: UaCore) -> None:
        self.core = core
        self._schedules: list[_Schedule] = []
        self._in_flight: dict[str, _Schedule] = {}  # OPTIONS branch → its trunk's schedule

    def configure(self, targets: Iterable[KeepAliveTarget], now: float) -> None:
        """Replace the schedule: each target's first ping goes out now, then every interval."""
        for target in targets:
            if target.kind not in KINDS or target.interval <= 0:
                raise ValueError(f"keep-alive {target.kind!r} every {target.interval} s")
        self._schedules = [_Schedule(t, now) for t in targets]
        self._in_flight.clear()
        self.core.timer_dirty = True

    def timer(self) -> float | None:
        return min((s.next_at for s in self._schedules), default=None)

    def handle_timer(self, now: float) -> None:
        for schedule in self._schedules:
            if now < schedule.next_at:
                continue
            # the next one on the grid, skipping any missed while the loop was busy
            interval = schedule.target.interval
            missed = int((now - schedule.next_at) // interval)
            schedule.next_at += (missed + 1) * interval
            self._ping(schedule, now)

    def on_response(self, branch: str, response: SipResponse) -> None:
        """A final response to an OPTIONS ping: the trunk is there (a 5xx/6xx: it is there but
        refusing, `error`)."""
        schedule = self._in_flight.pop(branch, None)
        if schedule is not None:
            result = "error" if response.status >= 500 else "ok"
            self._report(schedule, result, response.status)

    def on_timeout(self, branch: str) -> None:
        """An OPTIONS ping went unanswered (timer F)."""
        schedule = self._in_flight.pop(branch, None)
        if schedule is not None:
            self._report(schedule, "timeout", 0)

    def _ping(self, schedule: _Schedule, now: float) -> None:
        target = schedule.target
        if target.kind == "crlf":
            self.core.out.append((CRLF_PING, target.address))
            self.core.events.append(KeepAliveResult(target.trunk, "sent", 0, False))
            return
        core = self.core
        schedule.seq += 1
        h = Headers()
        h.add("Via", core.via(target.address))
        h.add("Max-Forwards", "70")
        h.add(
            "From",
            f"<sip:{core.config.user}@{core.hostport(target.address.transport)}>;tag={new_tag()}",
        )
        h.add("To", f"<{target.uri}>")
        h.add("Call-ID", f"{new_tag()}{new_tag()}@{core.config.host}")
        h.add("CSeq", f"{schedule.seq} OPTIONS")
        h.add("User-Agent", core.config.user_agent)
        request = SipRequest("OPTIONS", target.uri, h, b"")
        core.start_client(request, target.address, None, "keepalive", now)
        self._in_flight[request.top_via.branch or ""] = schedule

    def _report(self, schedule: _Schedule, result: str, status: int) -> None:
        failed = result in ("error", "timeout")
        changed = failed != schedule.failing
        schedule.failing = failed
        self.core.events.append(KeepAliveResult(schedule.target.trunk, result, status, changed))
