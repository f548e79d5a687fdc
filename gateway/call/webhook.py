"""Webhook tools: a `[tools.NAME]` table (`gateway.webhooks`) as a tool of the call's registry,
answered by a signed HTTP POST with aiohttp.

The request is `POST` JSON `{"call_id", "tool_call_id", "name", "arguments", "caller", "called",
"leg"}` with the table's headers and, with a secret, the Standard Webhooks headers
(`webhook-id`, `webhook-timestamp`, `webhook-signature`). A 2xx JSON body is the output; a
4xx/5xx (`http_error`), a body that is not JSON (`bad_response`), a connection that fails
(`connection_error`) or no answer within `timeout_s` (`timeout`) is a structured error output
(`gateway.call.tools.tool_error`), counted in `gateway_tool_calls_total{name,outcome}`. Header
values and the secret are never logged; a failure is logged by its kind only.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp

from gateway.call.tools import Tool, ToolContext, ToolResult, tool_error
from gateway.webhooks import WebhookTool, webhook_headers

#: the most of a webhook's answer read (a tool output is small)
MAX_BODY = 256 * 1024


class WebhookClient:
    """One HTTP client session for every webhook tool of the process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def tool(self, spec: WebhookTool) -> Tool:
        """`spec` as a registry tool."""

        async def call_webhook(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            return await self.post(spec, args, ctx)

        return Tool(spec.name, call_webhook, spec.description, spec.parameters, spec.timeout_s)

    async def post(self, spec: WebhookTool, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """One signed request; its answer as a tool result."""
        info = ctx.info
        body = json.dumps(
            {
                "call_id": ctx.call.id,
                "tool_call_id": ctx.call_id,
                "name": spec.name,
                "arguments": args,
                "caller": info.caller,
                "called": info.called,
                "leg": info.leg,
            },
            separators=(",", ":"),
        ).encode()
        headers = webhook_headers(spec, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                spec.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                text = await resp.content.read(MAX_BODY)
        except TimeoutError:
            return ToolResult(
                tool_error("timeout", f"{spec.name} took longer than {spec.timeout_s:g} s"),
                "timeout",
            )
        except aiohttp.ClientError as exc:
            ctx.call.log.warning("webhook_failed", tool=spec.name, error=type(exc).__name__)
            return ToolResult(
                tool_error("connection_error", f"could not reach the {spec.name} service"),
                "connection_error",
            )
        if not 200 <= status < 300:
            ctx.call.log.warning("webhook_refused", tool=spec.name, status=status)
            return ToolResult(
                tool_error(
                    "http_error", f"the {spec.name} service answered {status}", status=status
                ),
                "http_error",
            )
        try:
            value = json.loads(text)
        except ValueError:
            ctx.call.log.warning("webhook_bad_body", tool=spec.name, status=status)
            return ToolResult(
                tool_error("bad_response", f"the {spec.name} service did not answer JSON"),
                "bad_response",
            )
        return ToolResult(value if isinstance(value, dict) else json.dumps(value))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
