"""The OpenAPI 3.1 document of every HTTP endpoint, served at `GET /openapi.json`.

One declarative table (`PATHS`): a new route adds its operation here (tests/http/test_openapi.py
fails for a registered route the document lacks). `docs/api.md` is generated from it
(`python -m gateway.http.openapi > docs/api.md`; a test checks it is current).

`/openapi.json` is public, like `/healthz`: it describes the API's shape, never a call, a
setting or a secret, and tools fetch it before they hold a token.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aiohttp import web

from gateway import __version__

JsonObj = dict[str, Any]

BEARER: list[JsonObj] = [{"bearer": []}]
PUBLIC: list[JsonObj] = []


def _ref(name: str) -> JsonObj:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JsonObj, description: str) -> JsonObj:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, schema: str = "Error") -> JsonObj:
    text = {
        400: "bad input",
        401: "missing or wrong bearer token",
        403: "refused by a setting",
        404: "no such call",
        409: "the call is in another state",
        502: "the target did not resolve",
        503: "not accepting calls (draining, capacity, provider down); Retry-After",
    }
    return {str(s): _json(_ref(schema), text[s]) for s in statuses}


def _op(
    summary: str,
    tag: str,
    responses: JsonObj,
    *,
    security: list[JsonObj] = BEARER,
    body: JsonObj | None = None,
    params: list[JsonObj] | None = None,
) -> JsonObj:
    op: JsonObj = {"summary": summary, "tags": [tag], "security": security}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    return op


CALL_ID: JsonObj = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _preflight(params: list[JsonObj] | None = None) -> JsonObj:
    return _op(
        "CORS preflight (allowed origins: cors_origins)",
        "webrtc",
        {"204": {"description": "allowed methods and headers"}},
        security=PUBLIC,
        params=params,
    )


def _static_files(summary: str, tag: str) -> JsonObj:
    """A public directory of a page's scripts and styles (`{filename}`)."""
    return _op(
        summary,
        tag,
        {"200": {"description": "a file"}, "404": {"description": "no such file"}},
        security=PUBLIC,
        params=[{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
    )


SCHEMAS: JsonObj = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "reason", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "reason": {"type": "string", "examples": ["bad_request", "unauthorized"]},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Call": {
        "type": "object",
        "required": ["id", "leg", "direction", "state"],
        "properties": {
            "id": {"type": "string"},
            "leg": {"enum": ["sip", "webrtc"]},
            "direction": {"enum": ["inbound", "outbound"]},
            "state": {"enum": ["connecting", "connected", "ending", "ended"]},
            "duration_s": {"type": "number"},
            "codec": {"type": "string", "examples": ["pcmu/8000"]},
            "provider": {"type": "string"},
            "caller": {"type": "string"},
            "called": {"type": "string"},
        },
    },
    "NewCall": {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {
            "to": {
                "type": "string",
                "description": "a number (through a trunk) or a sip:/sips: URI; a sip: URI with "
                "no trunk configured needs allow_direct_dial",
            },
            "trunk": {"type": "string", "description": "default: the first outbound trunk"},
            "session": {"type": "object", "description": "session fields (docs/sip.md)"},
            "from": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"user": {"type": "string"}, "display": {"type": "string"}},
                    },
                ]
            },
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "P-Asserted-Identity, P-Preferred-Identity, Diversion, Privacy, X-*",
            },
        },
    },
    "CallEvent": {
        "type": "object",
        "required": ["event", "call_id"],
        "description": "one server-sent event (`event: <event>`, `data: <this object>`)",
        "properties": {
            "event": {"enum": ["dialing", "ringing", "answered", "tool_call", "failed", "ended"]},
            "call_id": {"type": "string"},
            "to": {"type": "string", "description": "dialing"},
            "trunk": {"type": "string", "description": "dialing (empty: dialled directly)"},
            "status": {"type": "integer", "description": "ringing, failed: the SIP status"},
            "name": {"type": "string", "description": "tool_call: the tool"},
            "ms": {"type": "integer", "description": "tool_call: how long it ran"},
            "outcome": {
                "type": "string",
                "description": "tool_call: ok or an error; failed: busy, rejected, no_answer, "
                "failed; ended: the call's outcome (completed, end_call, api_hangup, error...)",
            },
            "reason": {"type": "string"},
        },
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
    "Ready": {
        "type": "object",
        "required": ["status", "reason"],
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "reason": {"type": "string"},
            "registrations": {"type": "object"},
        },
    },
    "HistoryCall": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "leg": {"type": "string"},
            "direction": {"type": "string"},
            "caller": {"type": ["string", "null"]},
            "called": {"type": ["string", "null"]},
            "provider": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]},
            "started_at": {"type": ["number", "null"]},
            "answered_at": {"type": ["number", "null"]},
            "ended_at": {"type": ["number", "null"]},
            "outcome": {"type": ["string", "null"]},
            "duration_s": {"type": ["number", "null"]},
            "recording": {"type": ["string", "null"], "description": "the recording's URL"},
            "detail": {
                "type": "object",
                "description": "transcript, tool_calls, errors, latency, media (show only)",
            },
        },
    },
    "WebRtcToken": {
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "expires_at": {"type": "number"},
            "ttl": {"type": "integer"},
        },
    },
}

_OPENAI_BODY = {
    "accept": ("accept a call waiting for its app, with an OpenAI session config", "session"),
    "reject": ("reject it (`status_code`, default 603)", "status_code"),
    "refer": ("transfer it (SIP REFER to `target_uri`)", "target_uri"),
    "hangup": ("hang it up (BYE)", ""),
}


def _openai_ops() -> JsonObj:
    out: JsonObj = {}
    for action, (summary, field) in _OPENAI_BODY.items():
        body = None
        if field:
            body = {"content": {"application/json": {"schema": {"type": "object"}}}}
        out[f"/v1/realtime/calls/{{call_id}}/{action}"] = {
            "post": _op(
                summary + " (call webhook mode)",
                "openai",
                {
                    "200": {"description": "done"},
                    **_errors(400, 401, 404, 409, schema="OpenAIError"),
                },
                body=body,
                params=[CALL_ID],
            )
        }
    return out


PATHS: JsonObj = {
    "/healthz": {
        "get": _op(
            "the process is alive",
            "health",
            {"200": _json(_ref("Status"), "alive")},
            security=PUBLIC,
        )
    },
    "/readyz": {
        "get": _op(
            "the gateway takes calls",
            "health",
            {"200": _json(_ref("Ready"), "ready"), "503": _json(_ref("Ready"), "not ready")},
            security=PUBLIC,
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus exposition (loopback clients, or the token on a public listener)",
            "health",
            {
                "200": {"description": "metrics", "content": {"text/plain": {}}},
                **_errors(401),
            },
        )
    },
    "/openapi.json": {
        "get": _op(
            "this document",
            "health",
            {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
            security=PUBLIC,
        )
    },
    "/calls": {
        "get": _op(
            "the live calls",
            "calls",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"calls": {"type": "array", "items": _ref("Call")}},
                    },
                    "the live calls",
                ),
                **_errors(401),
            },
        ),
        "post": _op(
            "place an outbound call; its progress is at /calls/{call_id}/events",
            "calls",
            {
                "201": _json(
                    {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "resource": {"type": "string"}},
                    },
                    "the INVITE is out",
                ),
                **_errors(400, 401, 403, 502, 503),
            },
            body={"required": True, "content": {"application/json": {"schema": _ref("NewCall")}}},
        ),
    },
    "/calls/{call_id}": {
        "get": _op(
            "one live call",
            "calls",
            {"200": _json(_ref("Call"), "the call"), **_errors(401, 404)},
            params=[CALL_ID],
        ),
        "delete": _op(
            "hang up a live call (answers once it has ended)",
            "calls",
            {"200": _json(_ref("Status"), "ended"), **_errors(401, 404)},
            params=[CALL_ID],
        ),
    },
    "/calls/{call_id}/events": {
        "get": _op(
            "the call's progress as server-sent events, from its start until it ends",
            "calls",
            {
                "200": {
                    "description": "an event stream of CallEvent",
                    "content": {"text/event-stream": {"schema": _ref("CallEvent")}},
                },
                **_errors(401, 404),
            },
            params=[CALL_ID],
        )
    },
    "/admin/drain": {
        "post": _op(
            "drain: refuse new calls, let live ones end, then stop",
            "admin",
            {"202": _json(_ref("Status"), "draining"), **_errors(401, 503)},
        )
    },
    "/v1/realtime": {
        "get": _op(
            "the sideband WebSocket of a call (`?call_id=`), OpenAI's Realtime protocol",
            "openai",
            {
                "101": {"description": "WebSocket upgrade"},
                **_errors(401, 404, schema="OpenAIError"),
            },
            params=[
                {"name": "call_id", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
        )
    },
    **_openai_ops(),
    "/webrtc/offer": {
        "post": _op(
            "a browser's SDP offer (WHIP-style application/sdp, or JSON); answers the SDP",
            "webrtc",
            {
                "201": {
                    "description": "the answer; Location: /webrtc/calls/{call_id}",
                    "content": {"application/sdp": {}, "application/json": {}},
                },
                **_errors(400, 401, 403, 503),
            },
            body={"required": True, "content": {"application/sdp": {}, "application/json": {}}},
        ),
        "options": _preflight(),
    },
    "/webrtc/calls/{call_id}": {
        "delete": _op(
            "hang up a WebRTC call",
            "webrtc",
            {
                "200": _json(_ref("Status"), "ended"),
                "204": {"description": "the call had already ended"},
                **_errors(401, 404),
            },
            params=[CALL_ID],
        ),
        "options": _preflight([CALL_ID]),
    },
    "/webrtc/calls/{call_id}/beacon": {
        "post": _op(
            "the page's pagehide hang-up (navigator.sendBeacon); the body is the call's "
            "hangup_secret from the offer's answer, never the API token",
            "webrtc",
            {
                "204": {"description": "hung up, or already ended"},
                "403": {"description": "not the call's hangup secret"},
                "404": {"description": "no such call"},
            },
            security=PUBLIC,
            body={"required": True, "content": {"text/plain": {}}},
            params=[CALL_ID],
        )
    },
    "/favicon.ico": {
        "get": _op(
            "no icon (204): the pages declare an inline one",
            "webrtc",
            {"204": {"description": "no content"}},
            security=PUBLIC,
        )
    },
    "/webrtc/token": {
        "post": _op(
            "mint a short-lived token for the call page (`{ttl}` optional)",
            "webrtc",
            {"201": _json(_ref("WebRtcToken"), "the token"), **_errors(400, 401)},
        ),
        "options": _preflight(),
    },
    "/console": {
        "get": _op(
            "the calls console page (its API needs the token, from a #token= link)",
            "console",
            {"200": {"description": "HTML"}},
            security=PUBLIC,
        )
    },
    "/console/static/{filename}": {
        "get": _static_files("the console's scripts and styles", "console")
    },
    "/history": {
        "get": _op(
            "finished calls, newest first (docs/console.md)",
            "console",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"calls": {"type": "array", "items": _ref("HistoryCall")}},
                    },
                    "a page of the history",
                ),
                **_errors(400, 401, 503),
            },
            params=[
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "number",
                        "description": "Unix seconds: calls that ended earlier",
                    },
                },
            ],
        )
    },
    "/history/{call_id}": {
        "get": _op(
            "one finished call with its transcript, tool calls, errors, latency and media figures",
            "console",
            {"200": _json(_ref("HistoryCall"), "the call"), **_errors(401, 404, 503)},
            params=[CALL_ID],
        )
    },
    "/history/{call_id}/recording": {
        "get": _op(
            "the call's stereo WAV recording (caller left, bot right), as an attachment",
            "console",
            {
                "200": {"description": "the recording", "content": {"audio/wav": {}}},
                **_errors(401, 404, 503),
            },
            params=[CALL_ID],
        )
    },
    "/live-calls": {
        "get": _op(
            "the live calls as server-sent events: a `calls` event at once and every second",
            "console",
            {
                "200": {
                    "description": "an event stream of `{calls: [...]}`",
                    "content": {"text/event-stream": {"schema": {"type": "object"}}},
                },
                **_errors(401),
            },
        )
    },
    "/": {"get": _op("the call page", "webrtc", {"200": {"description": "HTML"}}, security=PUBLIC)},
    "/webrtc/static/{filename}": {
        "get": _static_files("the call page's scripts and styles", "webrtc")
    },
}


def document() -> JsonObj:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gateway HTTP API",
            "version": __version__,
            "description": "Calls, health, admin, WebRTC signalling and the OpenAI-compatible "
            "/v1 endpoints. Bearer auth: the api_token setting (with none set: loopback "
            "clients only).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }


def add_openapi_route(app: web.Application) -> None:
    """`GET /openapi.json` (public)."""
    body = json.dumps(document()).encode()

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/openapi.json", handle)


def markdown() -> str:
    """docs/api.md, generated from the document."""
    doc = document()
    out = [
        "# HTTP API reference",
        "",
        "<!-- generated by `python -m gateway.http.openapi > docs/api.md`; do not edit -->",
        "",
        doc["info"]["description"],
        "The machine-readable document is served at `GET /openapi.json` (public, like",
        "`/healthz`: it holds no call, setting or secret).",
        "",
        "| method | path | auth | summary | responses |",
        "|---|---|---|---|---|",
    ]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            auth = "bearer" if op["security"] else "public"
            statuses = ", ".join(op["responses"])
            summary = op["summary"].replace("|", "\\|")
            out.append(f"| {method.upper()} | `{path}` | {auth} | {summary} | {statuses} |")
    out += ["", "## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"### {name}")
        out.append("")
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        for prop, spec in props.items():
            kind = spec.get("type") or (
                "enum: " + ", ".join(map(str, spec["enum"])) if "enum" in spec else "see document"
            )
            note = f" — {spec['description']}" if "description" in spec else ""
            star = " (required)" if prop in required else ""
            out.append(f"- `{prop}`{star}: {kind}{note}")
        out.append("")
    out += [CLI_SECTION]
    return "\n".join(out).rstrip() + "\n"


CLI_SECTION = """## The command line: `gateway call`, `gateway calls`

`gateway call TARGET [--trunk NAME] [--from USER] [--url URL]` places a call with `POST /calls`
and follows `GET /calls/{call_id}/events`, printing one line per event (`dialing`, `ringing
(180)`, `answered`, `tool call: NAME -> OUTCOME (MS ms)`, `hung up: OUTCOME` or `not answered:
OUTCOME STATUS`). `gateway calls` lists the live calls; `gateway calls show ID` shows one
(`--json` prints the API's JSON). The URL is `--url` or `GATEWAY_URL` (default
`http://127.0.0.1:8080`); the token is `GATEWAY_API_TOKEN`, or a file named by
`--api-token-file` / `GATEWAY_API_TOKEN_FILE`, never a flag (the command line is readable by
every local user).

| exit status of `gateway call` | meaning |
|---|---|
| 0 | answered, then ended normally |
| 1 | the API refused the call (the error is printed) or could not be reached |
| 2 | bad arguments |
| 3 | busy (486, 600) |
| 4 | rejected (another final 4xx-6xx, e.g. 603 Decline) |
| 5 | no answer (timeout, 408, 480, 487) |
| 6 | failed (set-up failed, or the call ended with an error) |
| 130 | interrupted: Ctrl-C hung the call up |
"""


if __name__ == "__main__":
    sys.stdout.write(markdown())
