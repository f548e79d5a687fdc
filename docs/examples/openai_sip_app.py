"""An app for OpenAI's SIP connector, written exactly as for OpenAI's cloud, that runs unchanged
against the gateway (docs/openai-sip-compat.md). Only the environment differs:

    OPENAI_API_KEY=<gateway api_token> OPENAI_BASE_URL=http://GATEWAY:8080/v1 \
    OPENAI_WEBHOOK_SECRET=whsec_... python openai_sip_app.py --port 8000

(for OpenAI: your API key, no OPENAI_BASE_URL, and the secret of your project's webhook). Point
the webhook (`call_webhook_url` on the gateway) at http://APP:8000/webhook.

Per call: the signed `realtime.call.incoming` webhook is verified (`client.webhooks.unwrap`); the
call is accepted with instructions and one function tool, `lookup_order`; the app attaches to
the call's sideband (`client.realtime.connect(call_id=...)`), answers each `lookup_order` call
with a `function_call_output` and a `response.create`, and once the model has said the answer,
hangs the call up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError

MODEL = "gpt-realtime"
INSTRUCTIONS = "You are the order desk. Look orders up with lookup_order, then say their status."
LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look an order up by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string", "default": "42"}},
        "required": ["order"],
    },
}
#: after the model's answer is generated, time for it to be heard before the hang-up
HANGUP_AFTER_S = 2.0


def lookup_order(order: str) -> dict[str, Any]:
    """The app's own business logic (a stand-in for a database)."""
    return {"order": order, "status": "shipped"}


class SipApp:
    """The webhook endpoint and, per accepted call, its sideband task."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client
        self.calls: set[asyncio.Task[None]] = set()

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = self.client.webhooks.unwrap(body, dict(request.headers))
        except InvalidWebhookSignatureError:
            return web.Response(status=400, text="bad signature")
        if event.type == "realtime.call.incoming":
            task = asyncio.create_task(self.handle_call(event.data.call_id))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)
        return web.Response(status=200)

    async def handle_call(self, call_id: str) -> None:
        await self.client.realtime.calls.accept(
            call_id,
            type="realtime",
            model=MODEL,
            instructions=INSTRUCTIONS,
            tools=[LOOKUP_ORDER],
        )
        print(f"accepted {call_id}", flush=True)
        answered = False
        async with self.client.realtime.connect(call_id=call_id, model=MODEL) as conn:
            async for event in conn:
                if event.type == "response.function_call_arguments.done":
                    if event.name != "lookup_order":
                        continue  # not ours (the gateway answers its own tools)
                    result = lookup_order(**json.loads(event.arguments or "{}"))
                    await conn.conversation.item.create(
                        item={
                            "type": "function_call_output",
                            "call_id": event.call_id,
                            "output": json.dumps(result),
                        }
                    )
                    await conn.response.create()
                    answered = True
                    print(f"answered {event.call_id} {json.dumps(result)}", flush=True)
                elif (
                    event.type == "response.done"
                    and answered
                    and any(item.type == "message" for item in event.response.output or [])
                ):  # the model has said the answer: let it be heard, then hang up
                    await asyncio.sleep(HANGUP_AFTER_S)
                    await self.client.realtime.calls.hangup(call_id)
                    print(f"hung up {call_id}", flush=True)
                    answered = False
        print(f"sideband closed {call_id}", flush=True)


def make_app(client: AsyncOpenAI) -> web.Application:
    app = web.Application()
    app.router.add_post("/webhook", SipApp(client).webhook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # the API key, base URL and webhook secret come from OPENAI_* in the environment
    web.run_app(make_app(AsyncOpenAI()), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
