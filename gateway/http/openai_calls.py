"""The OpenAI SIP connector's call control, self-hosted: `POST /v1/realtime/calls/{call_id}/`
`accept` (body: an OpenAI session config), `reject` (`{"status_code"}`, default 603), `refer`
(`{"target_uri"}`, SIP REFER) and `hangup` (BYE). The official `openai` SDK is the client
(`client.realtime.calls.*` with `base_url` at the gateway's `/v1`).

Bearer auth with the API token (the SDK's `api_key`); errors in OpenAI's shape
`{"error": {"message", "type", "code", "param"}}`: 401 wrong token, 404 unknown call, 409 a
call already accepted (or not yet answered, for refer), 400 a bad body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.call.incoming import IncomingCalls
from gateway.call.manager import SETUP_WAIT_S
from gateway.errors import CallAlreadyDecided
from gateway.http.calls import CallApi, check_bearer
from gateway.http.errors import openai_error

_TARGET_URI = re.compile(r"^(sips?|tel):[^\s<>\"]{1,256}$")
_CODES = {401: "invalid_api_key", 404: "call_not_found", 409: "call_state_conflict"}


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """An OpenAI-shaped error (gateway.http.errors.openai_error) with this API's codes."""
    code = _CODES.get(status, "invalid_value" if status == 400 else "error")
    return openai_error(status, message, code, param=param)


def add_openai_call_routes(app: web.Application, api: CallApi, incoming: IncomingCalls) -> None:
    """Register `/v1/realtime/calls/{call_id}/{accept,reject,refer,hangup}` on `app`."""

    async def _body(request: web.Request) -> dict[str, Any] | web.Response:
        if not check_bearer(request, api.token, api.trusted_proxies):
            return _error(401, "Incorrect API key provided.")
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "The body must be JSON.")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.")
        return body

    def _unknown(call_id: str) -> web.Response:
        return _error(404, f"Call '{call_id[:64]}' not found.", "call_id")

    def _decide(call_id: str, decision: Callable[[], None]) -> web.Response:
        """Accept or reject a call waiting for its app: 404 if unknown, 409 once decided."""
        if not incoming.waiting(call_id):
            if incoming.decided(call_id) or api.manager.get(call_id) is not None:
                return _error(409, "The call was already accepted or rejected.", "call_id")
            return _unknown(call_id)
        try:
            decision()
        except CallAlreadyDecided:
            return _error(409, "The call was already accepted or rejected.", "call_id")
        return web.Response(status=200)

    async def accept(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        call_id = request.match_info["call_id"]
        if body.get("type", "realtime") != "realtime":
            return _error(400, "Only type 'realtime' sessions are supported.", "type")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            return _error(400, "'instructions' must be a string.", "instructions")
        tools = body.get("tools")
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
        ):
            return _error(400, "'tools' must be a list of objects.", "tools")
        return _decide(call_id, lambda: incoming.accept(call_id, body))

    async def reject(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        call_id = request.match_info["call_id"]
        status = body.get("status_code", 603)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
            return _error(400, "'status_code' must be a SIP status 400-699.", "status_code")
        return _decide(call_id, lambda: incoming.reject(call_id, status))

    async def refer(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        call_id = request.match_info["call_id"]
        target = body.get("target_uri")
        if not isinstance(target, str) or not _TARGET_URI.match(target):
            message = "'target_uri' must be a sip:, sips: or tel: URI."
            return _error(400, message, "target_uri")
        if incoming.ringing(call_id):
            return _error(409, "The call has not been accepted yet.", "call_id")
        call = await api.manager.wait_live(call_id, SETUP_WAIT_S)  # accepted, maybe setting up
        if call is None:
            return _unknown(call_id)
        try:
            await call.refer(target)
        except ValueError as exc:
            return _error(409, str(exc), "call_id")
        return web.Response(status=200)

    async def hangup(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        call_id = request.match_info["call_id"]
        if incoming.ringing(call_id):  # hanging up a ringing call refuses it
            incoming.reject(call_id, 603)
            return web.Response(status=200)
        await api.manager.wait_live(call_id, SETUP_WAIT_S)  # accepted, maybe still setting up
        if not await api.manager.hangup(call_id):
            return _unknown(call_id)
        return web.Response(status=200)

    base = "/v1/realtime/calls/{call_id}"
    app.router.add_post(f"{base}/accept", accept)
    app.router.add_post(f"{base}/reject", reject)
    app.router.add_post(f"{base}/refer", refer)
    app.router.add_post(f"{base}/hangup", hangup)
