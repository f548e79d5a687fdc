"""Webhook tools from the configuration against a real loopback HTTP server (aiohttp) and the
real local provider: the request's body and its Standard Webhooks signature, checked by the
receiving server with its own HMAC code; every failure (slow, 503, not JSON, nobody listening)
a structured error output; counted; secrets and header values never in the logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from gateway import metrics
from gateway.call.call import CallOptions
from gateway.call.default_scenario import setup as default_setup
from gateway.call.manager import CallManager
from gateway.call.webhook import WebhookClient
from gateway.errors import ConfigError
from gateway.media.port import DtmfReceived
from gateway.realtime.local.server import LocalProvider
from gateway.webhooks import load_webhook_tools
from tests.support.local_provider import client_frames
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
TOKEN = "Bearer tok-9f8e7d6c5b4a"


def verify_standard_webhook(secret: str, headers: Any, body: bytes) -> bool:
    """The receiver's check, written from the Standard Webhooks spec alone: the key is the
    base64 after `whsec_`; the signed content `id.timestamp.body`; the header a space-delimited
    list of `v1,<base64 HMAC-SHA256>`; the timestamp within 5 minutes."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > 300:
        return False
    expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for sig in headers["webhook-signature"].split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(value), expected):
            return True
    return False


class Backend:
    """A loopback tool backend: answers, slowly, with 503 or with text, and verifies each
    request's signature itself."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], bool, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        signed = verify_standard_webhook(SECRET, request.headers, body)
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.path, json.loads(body), signed, auth))
        if request.path == "/slow":
            await asyncio.sleep(2.0)
        if request.path == "/fail":
            return web.json_response({"error": "down"}, status=503)
        if request.path == "/text":
            return web.Response(text="<html>oops</html>")
        return web.json_response({"order": "A17", "status": "shipped"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def count(name: str, outcome: str) -> float:
    value: float = metrics.TOOL_CALLS.labels(name=name, outcome=outcome)._value.get()
    return value


async def test_webhook_tools_sign_post_and_answer_every_failure_with_a_structured_error(
    provider: LocalProvider, log_lines: Callable[[], str]
) -> None:
    backend = Backend()
    await backend.start()
    env = {"ORDER_TOKEN": TOKEN, "TOOLS_SECRET": SECRET}
    params = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "default": "A17"}},
    }

    def table(path: str, timeout: float = 1.0) -> dict[str, Any]:
        return {
            "description": f"the {path} backend",
            "parameters": params,
            "url": f"{backend.url}/{path}",
            "timeout_s": timeout,
            "headers": {"Authorization": "env:ORDER_TOKEN"},
            "secret": "env:TOOLS_SECRET",
        }

    specs = load_webhook_tools(
        {
            "order_status": table("ok"),
            "wh_slow": table("slow", 0.5),
            "wh_fail": table("fail"),
            "wh_text": table("text"),
            "wh_gone": {**table("ok"), "url": f"http://127.0.0.1:{closed_port()}/x"},
        },
        env,
    )
    client = WebhookClient()
    before = {
        (n, o): count(n, o)
        for n, o in [
            ("order_status", "ok"),
            ("wh_slow", "timeout"),
            ("wh_fail", "http_error"),
            ("wh_text", "bad_response"),
            ("wh_gone", "connection_error"),
        ]
    }
    call, _m = await open_call(
        provider,
        options=CallOptions(
            greeting=False, webhook_tools=tuple(client.tool(s) for s in specs.values())
        ),
    )
    task = CallManager(5).start(call, default_setup)
    try:

        def declared() -> list[str]:
            return [str(t["name"]) for t in provider.sessions[0].session.get("tools") or []]

        await wait_for(lambda: "wh_gone" in declared(), 5)
        keys = "".join(f"*{declared().index(name) + 1}" for name in specs)
        for key in keys:  # all five in one response: they run concurrently
            call.leg_event(DtmfReceived(key, "rfc4733"))

        def outputs() -> dict[str, dict[str, Any]]:
            return {
                f["item"]["call_id"]: json.loads(f["item"]["output"])
                for f in client_frames(provider)
                if f["type"] == "conversation.item.create"
                and f["item"]["type"] == "function_call_output"
            }

        await wait_for(lambda: len(outputs()) == 5, 10)
        by_name = {}
        for engine in provider.sessions:
            for frame in engine.sent or []:
                event = json.loads(frame)
                if event["type"] == "response.function_call_arguments.done":
                    by_name[event["name"]] = outputs()[event["call_id"]]
        assert by_name["order_status"] == {"order": "A17", "status": "shipped"}
        assert by_name["wh_slow"]["error"] == "timeout"
        assert by_name["wh_fail"]["error"] == "http_error" and by_name["wh_fail"]["status"] == 503
        assert by_name["wh_text"]["error"] == "bad_response"
        assert by_name["wh_gone"]["error"] == "connection_error"
        for out in by_name.values():
            assert TOKEN not in json.dumps(out) and SECRET not in json.dumps(out)
        # what the backend got: the documented body, signed (checked by its own code)
        ok = [r for r in backend.requests if r[0] == "/ok"]
        assert ok
        _path, body, signed, auth = ok[0]
        assert signed and auth == TOKEN
        assert set(body) == {
            "call_id",
            "tool_call_id",
            "name",
            "arguments",
            "caller",
            "called",
            "leg",
        }
        assert body["call_id"] == "c1" and body["name"] == "order_status"
        assert body["arguments"] == {"order_id": "A17"} and body["leg"] == "sip"
        assert all(r[2] for r in backend.requests)  # every request verified
        # counted by outcome
        for (name, outcome), was in before.items():
            assert count(name, outcome) == was + 1, (name, outcome)
        # one response.create after the five outputs
        await asyncio.sleep(0.5)
        frames = client_frames(provider)
        first = next(
            i
            for i, f in enumerate(frames)
            if f["type"] == "conversation.item.create"
            and f["item"]["type"] == "function_call_output"
        )
        assert [f["type"] for f in frames[first:]].count("response.create") == 1
    finally:
        await call.hangup()
        await task
        await client.aclose()
        await backend.stop()
    logs = log_lines()
    assert "webhook_refused" in logs and "webhook_failed" in logs  # failures are logged...
    for secret in (TOKEN, "tok-9f8e7d6c5b4a", SECRET, KEY.decode(), base64.b64encode(KEY).decode()):
        assert secret not in logs  # ...without a secret or a header value


def test_webhook_tables_are_checked() -> None:
    ok = {"url": "https://backend.example/t", "secret": "env:S"}
    specs = load_webhook_tools({"t": ok}, {"S": SECRET})
    assert specs["t"].secret and SECRET not in repr(specs["t"])
    assert "whsec" not in repr(specs["t"]) and base64.b64encode(KEY).decode() not in repr(specs)
    bad = [
        ({"t": {"url": "ftp://x/"}}, "url"),
        ({"t": {**ok, "secret": "plain"}}, "whsec_"),
        ({"t": {**ok, "secret": "env:NOPE"}}, "NOPE"),
        ({"t": {**ok, "timeout_s": 0}}, "timeout_s"),
        ({"t": {**ok, "colour": "red"}}, "unknown keys"),
        ({"t": {**ok, "parameters": {"type": "string"}}}, "parameters"),
        ({"t": {**ok, "headers": {"X-Key": "env:NOPE"}}}, "headers.X-Key"),
        ({"bad name!": ok}, "tool name"),
    ]
    for tables, words in bad:
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            load_webhook_tools(tables, {"S": SECRET})
