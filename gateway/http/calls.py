"""The call API: `GET /calls`, `POST /calls` (outbound), `GET`/`DELETE /calls/{id}`,
`GET /calls/{id}/events` (server-sent progress events), `POST /admin/drain`.

Bearer-token protected (`--api-token`). With no token configured only loopback clients may use
it (the client as `gateway.http.client` tells it: behind a reverse proxy, the forwarded
address). Bad input gets a 4xx with a JSON error.

`POST /calls` takes `to` (a number or a sip: URI), optional `trunk`, `session`, `from` (the
caller: a user string, or `{"user": ..., "display": ...}`) and `headers` (extra INVITE headers:
P-Asserted-Identity, P-Preferred-Identity, Diversion, Privacy and X-*; anything else is a 400
naming it). docs/sip.md "Outbound calls" has the whole shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from gateway.call.manager import CallManager
from gateway.errors import AdmissionError, OutboundError
from gateway.http.client import Networks, is_loopback, request_client
from gateway.http.errors import json_error
from gateway.realtime.events import SessionConfig
from gateway.secret import Secret
from gateway.sip.trunk import ALLOWED_EXTRA_HEADERS, extra_header_allowed, header_value_ok


class OutboundDialer(Protocol):
    """Places an outbound call; returns its id once the INVITE is out."""

    def __call__(
        self,
        to: str,
        trunk: str | None,
        session: dict[str, Any],
        *,
        from_user: str = "",
        from_display: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Awaitable[str]: ...


_TARGET = re.compile(r"^(\+?[0-9A-Za-z*#._-]{1,64}|sips?:[^\s<>\"]{3,256})$")
#: a From user: a number or a SIP user part of unreserved characters (RFC 3261 §25.1)
_FROM_USER = re.compile(r"^\+?[0-9A-Za-z*#._~!$&'()=,-]{1,64}$")
MAX_DISPLAY = 64
MAX_EXTRA_HEADERS = 16
MAX_HEADER_VALUE = 512
#: seconds between SSE keep-alive comments on `GET /calls/{id}/events`
SSE_KEEPALIVE_S = 15.0


def parse_from(value: object) -> tuple[str, str]:
    """`from`: a user string or `{"user": ..., "display": ...}` → (user, display)."""
    if isinstance(value, str):
        value = {"user": value}
    if not isinstance(value, dict):
        raise OutboundError(400, "'from' must be a user string or an object {user, display}")
    unknown = set(value) - {"user", "display"}
    if unknown:
        raise OutboundError(400, f"unknown fields in 'from': {', '.join(sorted(unknown))}")
    user = value.get("user", "")
    display = value.get("display", "")
    if not isinstance(user, str) or (user and not _FROM_USER.match(user)):
        raise OutboundError(
            400, "'from.user' must be a number or SIP user of at most 64 characters"
        )
    if (
        not isinstance(display, str)
        or len(display) > MAX_DISPLAY
        or not all(c.isprintable() for c in display)
    ):
        raise OutboundError(
            400, f"'from.display' must be printable text of at most {MAX_DISPLAY} chars"
        )
    if not user and not display:
        raise OutboundError(400, "'from' needs a user or a display name")
    return user, display


def parse_headers(value: object) -> list[tuple[str, str]]:
    """`headers`: an object of allow-listed header names to one-line string values."""
    if not isinstance(value, dict):
        raise OutboundError(400, "'headers' must be an object of header name to value")
    if len(value) > MAX_EXTRA_HEADERS:
        raise OutboundError(400, f"'headers': at most {MAX_EXTRA_HEADERS} headers")
    out: list[tuple[str, str]] = []
    for name, text in value.items():
        if not extra_header_allowed(name):
            shown = name[:64].encode("ascii", "replace").decode()
            raise OutboundError(
                400,
                f"header {shown!r} may not be set (allowed: "
                f"{', '.join(ALLOWED_EXTRA_HEADERS)} and X-*)",
            )
        if not isinstance(text, str) or not header_value_ok(text) or not text.strip():
            raise OutboundError(400, f"header {name!r}: expected a non-empty string on one line")
        if len(text) > MAX_HEADER_VALUE or not text.isascii():
            raise OutboundError(
                400, f"header {name!r}: at most {MAX_HEADER_VALUE} ASCII characters"
            )
        out.append((name, text.strip()))
    return out


def check_bearer(request: web.Request, token: Secret, trusted_proxies: Networks = ()) -> bool:
    """Authorization: Bearer <token> matches (constant time), or, with no token configured,
    the client is on loopback."""
    if not token:
        return is_loopback(request_client(request, trusted_proxies))
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.reveal().encode()
    )


@dataclass
class CallApi:
    """What the routes need: the manager, the token, the dialer and the drain trigger."""

    manager: CallManager
    token: Secret
    dial: OutboundDialer | None = None
    drain: Callable[[], None] | None = None
    trusted_proxies: Networks = ()


def add_call_routes(app: web.Application, api: CallApi) -> None:
    """Register the call API on `app`."""

    def _auth(request: web.Request) -> web.Response | None:
        if not check_bearer(request, api.token, api.trusted_proxies):
            return json_error(401, "missing or wrong bearer token")
        return None

    async def list_calls(request: web.Request) -> web.Response:
        if (denied := _auth(request)) is not None:
            return denied
        return web.json_response({"calls": api.manager.list()})

    async def get_call(request: web.Request) -> web.Response:
        if (denied := _auth(request)) is not None:
            return denied
        call = api.manager.get(request.match_info["call_id"])
        if call is None:
            return json_error(404, "no such call")
        return web.json_response(call.describe())

    async def call_events(request: web.Request) -> web.StreamResponse:
        """Server-sent events of one call: its progress so far, then each new event, until it
        ends (`event: <type>`, `data: <JSON>`); a comment line every 15 s keeps proxies open."""
        if (denied := _auth(request)) is not None:
            return denied
        call_id = request.match_info["call_id"]
        progress = api.manager.progress
        if not progress.known(call_id):
            return json_error(404, "no such call")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await resp.prepare(request)
        events = progress.follow(call_id)
        pending = asyncio.ensure_future(anext(events, None))
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=SSE_KEEPALIVE_S)
                if not done:
                    await resp.write(b": keep-alive\n\n")
                    continue
                event = pending.result()
                if event is None:
                    break
                line = f"event: {event['event']}\ndata: {json.dumps(event)}\n\n"
                await resp.write(line.encode())
                pending = asyncio.ensure_future(anext(events, None))
        finally:
            pending.cancel()
            await events.aclose()
        await resp.write_eof()
        return resp

    async def delete_call(request: web.Request) -> web.Response:
        if (denied := _auth(request)) is not None:
            return denied
        if not await api.manager.hangup(request.match_info["call_id"]):
            return json_error(404, "no such call")
        return web.json_response({"status": "ended"})

    async def post_call(request: web.Request) -> web.Response:
        if (denied := _auth(request)) is not None:
            return denied
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "body must be JSON")
        if not isinstance(body, dict):
            return json_error(400, "body must be a JSON object")
        to = body.get("to")
        if not isinstance(to, str) or not _TARGET.match(to):
            return json_error(400, "'to' must be a number or a sip: URI")
        trunk = body.get("trunk")
        if trunk is not None and not isinstance(trunk, str):
            return json_error(400, "'trunk' must be a string")
        session = body.get("session", {})
        if not isinstance(session, dict):
            return json_error(400, "'session' must be an object")
        try:
            SessionConfig.parse(session)
        except (TypeError, ValueError) as exc:
            return json_error(400, f"'session': {exc}")
        unknown = set(body) - {"to", "trunk", "session", "from", "headers"}
        if unknown:
            return json_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            from_user, from_display = parse_from(body["from"]) if "from" in body else ("", "")
            headers = parse_headers(body.get("headers", {}))
        except OutboundError as exc:
            return json_error(exc.status, str(exc))
        if api.dial is None:
            return json_error(503, "outbound calls are not configured")
        try:
            call_id = await api.dial(
                to,
                trunk,
                session,
                from_user=from_user,
                from_display=from_display,
                headers=headers,
            )
        except AdmissionError as exc:
            resp = json_error(503, f"not accepting calls: {exc.reason}", reason=exc.reason)
            resp.headers["Retry-After"] = str(exc.retry_after)
            return resp
        except OutboundError as exc:
            return json_error(exc.status, str(exc))
        return web.json_response({"id": call_id, "resource": f"/calls/{call_id}"}, status=201)

    async def drain(request: web.Request) -> web.Response:
        if (denied := _auth(request)) is not None:
            return denied
        if api.drain is None:
            return json_error(503, "drain is not available")
        api.drain()
        return web.json_response({"status": "draining"}, status=202)

    app.router.add_get("/calls", list_calls)
    app.router.add_post("/calls", post_call)
    app.router.add_get("/calls/{call_id}", get_call)
    app.router.add_delete("/calls/{call_id}", delete_call)
    app.router.add_get("/calls/{call_id}/events", call_events)
    app.router.add_post("/admin/drain", drain)
