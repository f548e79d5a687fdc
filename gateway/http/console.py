"""The calls console: its page and the API it reads (the same one scripts use).

    GET /console                          the page (static HTML+JS, token from `#token=`)
    GET /history                          finished calls, newest first
    GET /history/{id}                     one call: transcript, tool calls, errors, latency
    GET /history/{id}/recording           its stereo WAV (audio/wav, as an attachment)
    GET /live-calls                       live calls pushed as server-sent events

Bearer-token protected like the call API (`gateway.http.calls.check_bearer`); hang-up and
drain are the call API's `DELETE /calls/{id}` and `POST /admin/drain`. docs/console.md has the
shapes and the history's schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.call.history import History
from gateway.call.manager import CallManager
from gateway.http.calls import check_bearer
from gateway.http.client import Networks
from gateway.http.errors import json_error
from gateway.secret import Secret

STATIC_DIR = Path(__file__).parent / "static"
#: seconds between two live-calls events
LIVE_INTERVAL_S = 1.0
MAX_LIST = 200
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "media-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleApi:
    """What the console routes need: the live calls, the history (None: turned off), the token."""

    manager: CallManager
    history: History | None
    token: Secret
    trusted_proxies: Networks = ()


def add_console_routes(app: web.Application, api: ConsoleApi) -> None:
    """Register the console page and its API on `app`."""
    page_html = (STATIC_DIR / "console.html").read_bytes()

    def _auth(request: web.Request) -> web.Response | None:
        if not check_bearer(request, api.token, api.trusted_proxies):
            return json_error(401, "missing or wrong bearer token")
        return None

    def _history() -> History | web.Response:
        if api.history is None:
            return json_error(503, "the call history is turned off (history_path)")
        return api.history

    async def page(_: web.Request) -> web.Response:
        """The console page; it holds no data, the API behind it needs the token."""
        return web.Response(
            body=page_html, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    async def list_history(request: web.Request) -> web.Response:
        """Finished calls, newest first: `{"calls": [...]}`, each with id, leg, direction,
        caller, called, provider, model, started_at/answered_at/ended_at (Unix seconds),
        outcome, duration_s and recording (a path or null). Query: `limit` (1..200, default
        50), `before` (Unix seconds: calls that ended earlier, for paging)."""
        if (denied := _auth(request)) is not None:
            return denied
        history = _history()
        if isinstance(history, web.Response):
            return history
        try:
            limit = int(request.query.get("limit", "50"))
            before = float(request.query["before"]) if "before" in request.query else None
        except ValueError:
            return json_error(400, "'limit' must be an integer and 'before' a number")
        if not 1 <= limit <= MAX_LIST:
            return json_error(400, f"'limit' must be 1..{MAX_LIST}")
        calls = await history.list(limit, before)
        for call in calls:
            call["recording"] = _recording_url(call)
        return web.json_response({"calls": calls})

    async def show_history(request: web.Request) -> web.Response:
        """One finished call: the list's fields plus `detail` with `transcript` (role, text,
        at_s), `tool_calls` (name, arguments, output, outcome, elapsed_ms), `errors`, `latency`
        (per turn and median: vad_ms, model_ms, gateway_ms, total_ms; barge-in reactions;
        the gateway's processing per message) and `media` (RTP figures). 404 if unknown."""
        if (denied := _auth(request)) is not None:
            return denied
        history = _history()
        if isinstance(history, web.Response):
            return history
        record = await history.get(request.match_info["call_id"])
        if record is None:
            return json_error(404, "no such call in the history")
        record["recording"] = _recording_url(record)
        return web.json_response(record)

    async def recording(request: web.Request) -> web.StreamResponse:
        """The call's stereo WAV (caller left, bot right) as `audio/wav`, with
        `Content-Disposition: attachment`; 404 when the call was not recorded or the file is
        gone."""
        if (denied := _auth(request)) is not None:
            return denied
        history = _history()
        if isinstance(history, web.Response):
            return history
        call_id = request.match_info["call_id"]
        record = await history.get(call_id)
        path = Path(record["recording"]) if record and record.get("recording") else None
        if path is None or not await asyncio.to_thread(path.is_file):
            return json_error(404, "no recording of this call")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "audio/wav",
                "Content-Disposition": f'attachment; filename="{record_name(call_id)}"',
                "Cache-Control": "no-store",
            },
        )

    async def live_calls(request: web.Request) -> web.StreamResponse:
        """Server-sent events (`text/event-stream`): one `calls` event at once and then every
        second, `{"calls": [...]}`, each live call with id, leg, direction, caller, called,
        provider, state, duration_s, codec, level_in_dbfs / level_out_dbfs (the caller's and
        the bot's audio; null when silent) and media (RTP: rtp_in, rtp_out, rtp_lost,
        jitter_ms, rtt_ms; {} for WebRTC)."""
        if (denied := _auth(request)) is not None:
            return denied
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        try:
            while not closing.is_set():
                body = json.dumps({"calls": api.manager.live()}, default=str)
                await resp.write(f"event: calls\ndata: {body}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), LIVE_INTERVAL_S)
        except ConnectionResetError:
            pass  # the page went away
        return resp

    closing = asyncio.Event()  # the server is shutting down: streams end at once

    async def on_shutdown(_: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(on_shutdown)

    app.router.add_get("/console", page)
    app.router.add_static("/console/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/history", list_history)
    app.router.add_get("/history/{call_id}", show_history)
    app.router.add_get("/history/{call_id}/recording", recording)
    app.router.add_get("/live-calls", live_calls)


def record_name(call_id: str) -> str:
    """The download's file name: the call id, kept to safe characters."""
    return "".join(c for c in call_id if c.isalnum() or c in "-_")[:64] + ".wav"


def _recording_url(record: dict[str, object]) -> str | None:
    return f"/history/{record['id']}/recording" if record.get("recording") else None
