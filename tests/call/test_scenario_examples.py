"""The three scenarios in docs/scenarios.md, loaded from their files and run on a call bridged
to the real local provider."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.call.call import CallOptions
from gateway.call.events import DtmfReceived
from gateway.call.manager import CallManager
from gateway.call.scenario import load_scenario
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import speech_like
from tests.support.local_provider import sent_client_events
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


async def test_ivr_menu_gates_audio_until_a_choice() -> None:
    provider = LocalProvider(use_espeak=False, record_frames=True)
    await provider.start()
    try:
        call, m = await open_call(provider)
        task = CallManager(5).start(call, load_scenario(EXAMPLES / "ivr_menu.py"))
        await asyncio.sleep(0.3)
        m.leg.say(speech_like(1.0))
        await asyncio.sleep(1.5)
        engine = provider.sessions[0]
        assert engine.stats.get("appended_bytes", 0) == 0  # nothing reached the model yet
        call.leg_event(DtmfReceived("2", "rfc4733"))
        await wait_for(lambda: engine.stats.get("session_updates", 0) >= 2, 8.0)
        updates = sent_client_events(provider, "session.update")
        assert "support assistant" in updates[-1]["session"]["instructions"]
        m.leg.say(speech_like(1.0, seed=2))
        await wait_for(lambda: engine.stats.get("appended_bytes", 0) > 4000, 8.0)
        await call.hangup()
        await task
    finally:
        await provider.stop()


async def test_lookup_tool_fetches_over_http_and_returns_the_result(monkeypatch: Any) -> None:
    seen: list[str] = []

    async def order(request: web.Request) -> web.Response:
        seen.append(request.match_info["oid"])
        return web.json_response({"order": request.match_info["oid"], "status": "shipped"})

    app = web.Application()
    app.router.add_get("/orders/{oid}", order)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("ORDER_API", f"http://127.0.0.1:{port}/orders/")
    provider = LocalProvider(use_espeak=False, record_frames=True)
    await provider.start()
    try:
        call, _m = await open_call(provider, options=CallOptions(greeting=False))
        task = CallManager(5).start(call, load_scenario(EXAMPLES / "lookup_tool.py"))
        await asyncio.sleep(0.3)
        tools = sent_client_events(provider, "session.update")[-1]["session"]["tools"]
        names = [t["name"] for t in tools]
        assert "order_status" in names
        # The model calls the tool: the local provider calls the N-th declared tool on *N,
        # with its declared defaults ({"order_id": "A17"}) as arguments.
        for key in f"*{names.index('order_status') + 1}":
            call.leg_event(DtmfReceived(key, "rfc4733"))
        await wait_for(
            lambda: any(
                o["item"].get("type") == "function_call_output"
                for o in sent_client_events(provider, "conversation.item.create")
            ),
            8.0,
        )
        assert seen == ["A17"]
        out = next(
            o
            for o in sent_client_events(provider, "conversation.item.create")
            if o["item"].get("type") == "function_call_output"
        )
        assert json.loads(out["item"]["output"]) == {"order": "A17", "status": "shipped"}
        await call.hangup()
        await task
    finally:
        await provider.stop()
        await runner.cleanup()


async def test_supervisor_barge_in_cuts_the_bot_off_and_injects_text() -> None:
    provider = LocalProvider(use_espeak=False, record_frames=True)
    await provider.start()
    try:
        call, m = await open_call(provider)
        task = CallManager(5).start(call, load_scenario(EXAMPLES / "supervisor_barge_in.py"))
        await wait_for(lambda: any(f is not None for _, f in m.leg.sent), 8.0)
        await asyncio.sleep(0.2)  # the greeting is playing
        call.leg_event(DtmfReceived("9", "rfc4733"))
        await wait_for(
            lambda: bool(sent_client_events(provider, "conversation.item.truncate")), 8.0
        )
        items = [o["item"] for o in sent_client_events(provider, "conversation.item.create")]
        assert any(
            i.get("role") == "system" and "supervisor" in i["content"][0]["text"] for i in items
        )
        assert call.playout.queued_ms < 100
        await call.hangup()
        await task
    finally:
        await provider.stop()
