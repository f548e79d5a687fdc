"""The sideband WebSocket: `GET /v1/realtime?call_id=...`, as OpenAI's SIP connector offers it.

An app attaches to a live call (any mode: default scenario, a scenario file, webhook) with the
API token (`Authorization: Bearer`, the openai SDK's `api_key`; 401 before the upgrade
otherwise) and

* receives the call's Realtime server events as JSON text frames, as the provider sent them;
  `response.output_audio.delta` (and the beta `response.audio.delta`) are left out unless the
  URL asks for them with `include_audio=true` (`extra_query={"include_audio": "true"}` in the
  SDK); events the gateway makes itself (connector events: session lost, reconnected) are not
  sent;
* receives `call.refer.progress` events (the gateway's own) while a transfer of the call
  (`POST .../refer`) progresses: the REFER's 202, then each NOTIFY's sipfrag status;
* may send `session.update`, `response.create`, `conversation.item.create` (a
  `function_call_output` too) and `response.cancel`. They go to the provider session through
  the Call's realtime actions; any other type, or a frame that is no JSON object, gets a
  Realtime `error` event and the socket stays open.

Tools: the function tools of the app's `session.update` are the app's (registered as external
in the call's tool registry, `gateway.call.tools`): declared to the provider beside the
gateway's own tools (`end_call`, `transfer_call`, `send_dtmf` and the scenario's, which keep
working), and the runner leaves their calls to the app. A `function_call_output` from the app
marks its `call_id` answered, so the runner never answers it too; exactly one output per
call_id reaches the provider (a second gets an `error` event).

An app may connect as soon as its `accept` returns: a call still being set up (its provider
session connecting, its SIP answer going out) is waited for, up to `SETUP_WAIT_S`. An unknown
`call_id`, or one whose set-up failed, gets 404 with an OpenAI-shaped error before the upgrade.
When the call ends the socket is closed with 1000; an app too slow to read (a backlog of
`MAX_BACKLOG` events) is closed with 1013. One receive task and one send task per connection,
both ended with the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from gateway import metrics
from gateway.call.call import Call
from gateway.call.manager import SETUP_WAIT_S, CallManager
from gateway.http.calls import check_bearer
from gateway.http.client import Networks
from gateway.http.errors import openai_error
from gateway.logs import get_logger
from gateway.media.port import TransferProgress
from gateway.realtime import events as rt
from gateway.secret import Secret

log = get_logger("http.sideband")

#: the client events an app may send
CLIENT_EVENTS = frozenset(
    {"session.update", "response.create", "conversation.item.create", "response.cancel"}
)
#: server events queued for a slow app before its socket is closed (1013)
MAX_BACKLOG = 4096
#: the largest frame an app may send
MAX_FRAME = 256 * 1024
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
_TRUE = frozenset({"1", "true", "yes"})


@dataclass
class SidebandApi:
    """What the route needs: the live calls and the API token."""

    manager: CallManager
    token: Secret
    trusted_proxies: Networks = ()


def add_sideband_routes(app: web.Application, api: SidebandApi) -> None:
    """Register `GET /v1/realtime` on `app`."""

    async def realtime(request: web.Request) -> web.StreamResponse:
        if not check_bearer(request, api.token, api.trusted_proxies):
            return openai_error(401, "missing or wrong bearer token", "invalid_api_key")
        call_id = request.query.get("call_id", "")
        if not call_id:
            return openai_error(
                400, "call_id is required", "missing_required_parameter", param="call_id"
            )
        call = await api.manager.wait_live(call_id, SETUP_WAIT_S)
        task = api.manager.task(call_id)
        if call is None or task is None:
            return openai_error(404, f"no live call {call_id!r}", "call_not_found", param="call_id")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30.0)
        await ws.prepare(request)
        audio = request.query.get("include_audio", "").lower() in _TRUE
        await Sideband(call, ws, include_audio=audio).run(task)
        return ws

    app.router.add_get("/v1/realtime", realtime)


def refer_progress_event(status: int, final: bool) -> dict[str, Any]:
    """A `call.refer.progress` event (the gateway's own, in the Realtime events' shape) for a
    REFER's answer (202 accepted) or a NOTIFY's sipfrag status (RFC 3515 section 2.4.5):
    `state` is accepted (202), trying (1xx), succeeded (a final 2xx) or failed (>= 300)."""
    if status >= 300:
        state = "failed"
    elif status < 200:
        state = "trying"
    elif final and status != 202:
        state = "succeeded"
    else:
        state = "accepted"
    return {
        "type": "call.refer.progress",
        "event_id": f"event_gw_refer_{status}_{int(final)}",
        "status_code": status,
        "state": state,
        "final": final,
    }


def error_event(
    message: str, code: str, *, event_id: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """A Realtime `error` server event for the app (about the client event `event_id`)."""
    return {
        "type": "error",
        "event_id": f"event_gw_{code}",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


class Sideband:
    """One app's connection to one call: the call's server events out, the app's events in."""

    def __init__(self, call: Call, ws: web.WebSocketResponse, *, include_audio: bool) -> None:
        self.call = call
        self.ws = ws
        self.include_audio = include_audio
        self._out: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self._overflow = False

    def _on_server_event(self, ev: rt.ServerEvent) -> None:
        raw = ev.raw
        kind = raw.get("type") if raw else None
        if not isinstance(kind, str) or isinstance(ev, rt.ConnectorEvent):
            return
        if kind in _AUDIO_DELTAS and not self.include_audio:
            return
        if self._out.qsize() >= MAX_BACKLOG:
            self._overflow = True
            self._out.put_nowait({})  # wakes the sender, which closes
            return
        self._out.put_nowait(raw)

    def _on_transfer_progress(self, ev: TransferProgress) -> None:
        if self._out.qsize() < MAX_BACKLOG:
            self._out.put_nowait(refer_progress_event(ev.status, ev.final))

    async def run(self, call_task: asyncio.Task[None]) -> None:
        """Pump until the call ends (close 1000), the app leaves, or the app lags (1013)."""
        call = self.call
        call.realtime.on(rt.ServerEvent, self._on_server_event)
        call.on(TransferProgress, self._on_transfer_progress)
        call.log.info("sideband_attached", include_audio=self.include_audio)
        metrics.SIDEBANDS.inc()
        metrics.SIDEBANDS_LIVE.inc()
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(self._send())
                receiver = tg.create_task(self._receive())
                await asyncio.wait(
                    {sender, receiver, call_task}, return_when=asyncio.FIRST_COMPLETED
                )
                sender.cancel()
                receiver.cancel()
        finally:
            metrics.SIDEBANDS_LIVE.dec()
            with contextlib.suppress(ReferenceError):
                call.realtime.off(rt.ServerEvent, self._on_server_event)
                call.off(TransferProgress, self._on_transfer_progress)
            if call_task.done() and not self.ws.closed:
                # the call is over: what the provider sent last is still queued
                await self._drain()
                await self.ws.close(code=1000, message=b"call ended")
            elif self._overflow:
                await self.ws.close(code=1013, message=b"app too slow")
            else:
                await self.ws.close()
            call.log.info("sideband_detached", code=self.ws.close_code)

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self._out.empty():
                event = self._out.get_nowait()
                if event:
                    await self.ws.send_str(json.dumps(event))

    async def _send(self) -> None:
        while True:
            event = await self._out.get()
            if self._overflow:
                return
            try:
                await self.ws.send_str(json.dumps(event))
            except (ConnectionError, RuntimeError):
                return  # the app is gone

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                self._client_event(msg.data)
            elif msg.type is WSMsgType.BINARY:
                metrics.SIDEBAND_CLIENT_EVENTS.labels("invalid").inc()
                self._out.put_nowait(error_event("binary frames are not accepted", "invalid_json"))

    def _client_event(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            metrics.SIDEBAND_CLIENT_EVENTS.labels("invalid").inc()
            self._out.put_nowait(error_event("the frame is not JSON", "invalid_json"))
            return
        if not isinstance(event, dict):
            metrics.SIDEBAND_CLIENT_EVENTS.labels("invalid").inc()
            self._out.put_nowait(error_event("the frame is not a JSON object", "invalid_json"))
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        metrics.SIDEBAND_CLIENT_EVENTS.labels(
            metrics.bounded(kind if isinstance(kind, str) else "", CLIENT_EVENTS)
        ).inc()
        if kind not in CLIENT_EVENTS:
            self._out.put_nowait(
                error_event(
                    f"{str(kind)[:64]!r} is not accepted on the sideband (accepted: "
                    f"{', '.join(sorted(CLIENT_EVENTS))})",
                    "invalid_event_type",
                    event_id=event_id,
                    param="type",
                )
            )
            return
        try:
            problem = self._apply(kind, event)
        except ReferenceError:  # the call is gone: its end closes the socket
            return
        except (ValueError, TypeError) as exc:
            problem = (str(exc), "invalid_value", None)
        if problem is not None:
            message, code, param = problem
            self._out.put_nowait(error_event(message, code, event_id=event_id, param=param))

    def _apply(self, kind: str, event: dict[str, Any]) -> tuple[str, str, str | None] | None:
        """Send one client event through the call; a problem as (message, code, param)."""
        realtime = self.call.realtime
        if realtime.link.closed:
            return ("the call's provider session is closed", "session_closed", None)
        if kind == "session.update":
            session = event.get("session")
            if not isinstance(session, dict):
                return ("session.update needs a 'session' object", "invalid_value", "session")
            return self._session_update(dict(session))
        if kind == "response.create":
            response = event.get("response", {})
            if not isinstance(response, dict):
                return ("'response' must be an object", "invalid_value", "response")
            realtime.response_create_when_idle(**response)
            return None
        if kind == "response.cancel":
            response_id = event.get("response_id")
            realtime.response_cancel(response_id if isinstance(response_id, str) else None)
            return None
        item = event.get("item")
        if not isinstance(item, dict):
            return ("conversation.item.create needs an 'item' object", "invalid_value", "item")
        if item.get("type") == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not call_id or not isinstance(output, str):
                return (
                    "function_call_output needs a 'call_id' and an 'output' string",
                    "invalid_value",
                    "item",
                )
            if realtime.function_call_answered(call_id):
                return (
                    f"call_id {call_id!r} was already answered",
                    "duplicate_output",
                    "item.call_id",
                )
            self.call.tools.answered_externally(call_id)
            realtime.function_call_output(call_id, output)
            return None
        realtime.conversation_item_create(item)
        return None

    def _session_update(self, session: dict[str, Any]) -> tuple[str, str, str | None] | None:
        session.pop("type", None)
        tools = session.pop("tools", None)
        refused: list[str] = []
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                return ("'session.tools' must be a list of tools", "invalid_value", "session.tools")
            registry = self.call.tools
            functions = [t for t in tools if t.get("type", "function") == "function"]
            refused = registry.set_external(functions)
            if not registry.manages_declarations:
                session["tools"] = tools  # no gateway tools: the app's list is the session's
        if session:
            self.call.realtime.session_update(session)
        if refused:
            return (
                f"tools {', '.join(refused)} are the gateway's and stay so",
                "tool_name_taken",
                "session.tools",
            )
        return None
