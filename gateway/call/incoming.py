"""Inbound calls awaiting their app's decision (webhook mode, docs/openai-sip-compat.md).

A call in `webhook` mode rings (180) while `IncomingCalls.decide()` POSTs a signed
`realtime.call.incoming` event (Standard Webhooks, `gateway.webhooks.sign`, as OpenAI signs its
own) to `call_webhook_url`, retrying with backoff, and waits for `accept()` or `reject()` (the
`/v1/realtime/calls/{id}/...` routes). No decision within `call_webhook_timeout`: the fallback
(`call_webhook_fallback`): reject with `call_webhook_reject_status`, or run the default scenario.
The caller's CANCEL cancels the waiting task: the wait ends, its POSTs stop, nothing is left.
The secret is never logged; a failed POST is logged by its kind only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway import metrics
from gateway.errors import CallAlreadyDecided, CallDeclined
from gateway.logs import get_logger
from gateway.webhooks import sign

log = get_logger("call.incoming")

#: the SIP headers the event carries: these, and every X-*
_EVENT_HEADERS = frozenset({"from", "to", "call-id"})
#: pauses before the 2nd, 3rd... POST (seconds)
RETRY_BACKOFF = (0.5, 1.0, 2.0, 4.0)
POST_TIMEOUT_S = 5.0
MAX_DECIDED = 4096


@dataclass(frozen=True)
class Decision:
    """What the app (or the fallback) decided: accept with `session` (an OpenAI session
    config; None: the configured session, i.e. the default scenario)."""

    session: Mapping[str, Any] | None = None


def event_headers(header_list: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The `sip_headers` of the event: From, To, Call-ID and X-*, in the INVITE's order."""
    return [
        {"name": name, "value": value}
        for name, value in header_list
        if name.lower() in _EVENT_HEADERS or name.lower().startswith("x-")
    ]


def incoming_event(call_id: str, header_list: Sequence[tuple[str, str]], now: float) -> bytes:
    """The `realtime.call.incoming` event body, as OpenAI sends it."""
    return json.dumps(
        {
            "object": "event",
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "realtime.call.incoming",
            "created_at": int(now),
            "data": {"call_id": call_id, "sip_headers": event_headers(header_list)},
        },
        separators=(",", ":"),
    ).encode()


class IncomingCalls:
    """The calls ringing in webhook mode, by call id, and the webhook that announces them."""

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        timeout_s: float,
        fallback: str,
        reject_status: int,
        backoff: Sequence[float] = RETRY_BACKOFF,
    ) -> None:
        self.url = url
        self._key = key
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.reject_status = reject_status
        self.backoff = tuple(backoff)
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        #: the last calls decided (accept/reject), for the 409 of a second decision
        self._decided: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    def waiting(self, call_id: str) -> bool:
        """The call rings, awaiting its decision."""
        return call_id in self._waiting

    def ringing(self, call_id: str) -> bool:
        """The call rings and its app has not decided yet."""
        return call_id in self._waiting and call_id not in self._decided

    def decided(self, call_id: str) -> bool:
        """The call was accepted or rejected (one of the last `MAX_DECIDED`)."""
        return call_id in self._decided

    async def decide(
        self,
        call_id: str,
        header_list: Sequence[tuple[str, str]],
        ring: Callable[[], None] | None = None,
    ) -> Decision:
        """Ring, announce the call and wait for accept/reject or the timeout. Raises
        CallDeclined for a reject (the app's or the fallback's)."""
        if ring is not None:
            ring()
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[Decision] = loop.create_future()
        self._waiting[call_id] = decided
        body = incoming_event(call_id, header_list, time.time())
        poster = loop.create_task(self._post(call_id, body))
        outcome = "cancelled"
        try:
            async with asyncio.timeout(self.timeout_s):
                decision = await decided
            outcome = "accepted"
            return decision
        except CallDeclined:
            outcome = "rejected"
            raise
        except TimeoutError:
            log.warning("call_webhook_timeout", call_id=call_id, fallback=self.fallback)
            if self.fallback == "default":
                outcome = "fallback_default"
                return Decision()
            outcome = "fallback_reject"
            raise CallDeclined(self.reject_status, "no_decision") from None
        finally:
            metrics.CALL_WEBHOOKS.labels(outcome).inc()
            self._waiting.pop(call_id, None)
            poster.cancel()
            with contextlib.suppress(BaseException):
                await poster

    def accept(self, call_id: str, session: Mapping[str, Any]) -> None:
        """The app accepts with this session config. KeyError: no such call waiting."""
        self._settle(call_id).set_result(Decision(session=session))

    def reject(self, call_id: str, status: int) -> None:
        """The app refuses the call with this SIP status. KeyError: no such call waiting."""
        self._settle(call_id).set_exception(CallDeclined(status, "rejected"))

    def _settle(self, call_id: str) -> asyncio.Future[Decision]:
        decided = self._waiting[call_id]
        if decided.done():
            raise CallAlreadyDecided(call_id)
        self._decided[call_id] = None
        if len(self._decided) > MAX_DECIDED:
            self._decided.popitem(last=False)
        return decided

    async def _post(self, call_id: str, body: bytes) -> None:
        """POST the event until a 2xx, retrying with backoff (cancelled once decided)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        msg_id = f"wh_{uuid.uuid4().hex}"  # the same id on every retry (Standard Webhooks)
        started = time.monotonic()
        for attempt, pause in enumerate((0.0, *self.backoff)):
            await asyncio.sleep(pause)
            timestamp = int(time.time())
            headers = {"content-type": "application/json"}
            if self._key:
                headers["webhook-id"] = msg_id
                headers["webhook-timestamp"] = str(timestamp)
                headers["webhook-signature"] = sign(self._key, msg_id, timestamp, body)
            try:
                async with self._session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
                    allow_redirects=False,
                ) as resp:
                    if 200 <= resp.status < 300:
                        metrics.CALL_WEBHOOK_DELIVERIES.labels("delivered").inc()
                        metrics.CALL_WEBHOOK_LATENCY.observe(time.monotonic() - started)
                        return
                    failure, result = f"status_{resp.status}", "refused"
            except TimeoutError:
                failure = result = "timeout"
            except aiohttp.ClientError as exc:
                failure, result = type(exc).__name__, "error"
            metrics.CALL_WEBHOOK_DELIVERIES.labels(result).inc()
            log.warning("call_webhook_failed", call_id=call_id, attempt=attempt + 1, error=failure)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
