"""The call API: `GET /calls`, `POST /calls` (outbound), `DELETE /calls/{id}`, `POST /admin/drain`.

Bearer-token protected (`--api-token`). With no token configured only loopback clients may use
it (the client as `gateway.http.client` tells it: behind a reverse proxy, the forwarded
address). Bad input gets a 4xx with a JSON error.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.call.manager import CallManager
from gateway.errors import AdmissionError, OutboundError
from gateway.http.client import Networks, is_loopback, request_client
from gateway.http.errors import json_error
from gateway.secret import Secret

OutboundDialer = Callable[[str, str | None, dict[str, Any]], Awaitable[str]]

_TARGET = re.compile(r"^(\+?[0-9A-Za-z*#._-]{1,64}|sips?:[^\s<>\"]{3,256})$")


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
        unknown = set(body) - {"to", "trunk", "session"}
        if unknown:
            return json_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
        if api.dial is None:
            return json_error(503, "outbound calls are not configured")
        try:
            call_id = await api.dial(to, trunk, session)
        except AdmissionError as exc:
            resp = json_error(503, f"not accepting calls: {exc.reason}")
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
    app.router.add_post("/admin/drain", drain)
