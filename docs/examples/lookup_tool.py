"""A tool that looks something up over HTTP: the model calls `order_status(order_id)`, the
scenario asks a web service with aiohttp and returns the answer as the function output."""

from __future__ import annotations

import os

import aiohttp

from gateway.call.call import Call
from gateway.call.default_scenario import TOOLS
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import CallConnected
from gateway.realtime import events as rt

ORDER_API = os.environ.get("ORDER_API", "http://127.0.0.1:9000/orders/")

ORDER_TOOL = {
    "type": "function",
    "name": "order_status",
    "description": "Look up the status of an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def setup(call: Call) -> None:
    default_setup(call)

    def on_connected(_: CallConnected) -> None:
        call.realtime.session_update({"type": "realtime", "tools": [*TOOLS, ORDER_TOOL]})

    async def on_function(ev: rt.FunctionCallArgumentsDone) -> None:
        if ev.name != "order_status":
            return
        import json

        order_id = str(json.loads(ev.arguments or "{}").get("order_id", ""))
        try:
            timeout = aiohttp.ClientTimeout(total=3)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(ORDER_API + order_id) as resp,
            ):
                result = await resp.json() if resp.status == 200 else {"error": resp.status}
        except (aiohttp.ClientError, TimeoutError) as exc:
            result = {"error": f"lookup failed: {type(exc).__name__}"}
        call.realtime.function_call_output(ev.call_id, result)
        call.realtime.response_create_when_idle()

    call.on(CallConnected, on_connected)
    call.realtime.on(rt.FunctionCallArgumentsDone, on_function)
