"""A tool that looks something up over HTTP: the model calls `order_status(order_id)`, the
scenario asks a web service with aiohttp and returns the answer as the function output.

The tool is registered with `@call.tool`: it is declared to the model, runs in its own task (the
caller can barge in meanwhile), gets one output whatever happens (a timeout or an exception is
answered with an error output), and one response follows once every tool of the model's
response has answered. Past 1.5 s the caller hears the holding prompt."""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.tools import ToolContext

ORDER_API = os.environ.get("ORDER_API", "http://127.0.0.1:9000/orders/")

PARAMETERS = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "default": "A17"}},
    "required": ["order_id"],
}


def setup(call: Call) -> None:
    default_setup(call)  # barge-in, DTMF, end_call/transfer_call/send_dtmf, provider failures

    @call.tool(
        "order_status",
        description="Look up the status of an order by its number.",
        parameters=PARAMETERS,
        timeout_s=3,
    )
    async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        order_id = str(args.get("order_id", ""))
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
                http.get(ORDER_API + order_id) as resp,
            ):
                if resp.status != 200:
                    return {"ok": False, "error": f"lookup answered {resp.status}"}
                result: dict[str, Any] = await resp.json()
                return result
        except aiohttp.ClientError as exc:
            return {"ok": False, "error": f"lookup failed: {type(exc).__name__}"}
