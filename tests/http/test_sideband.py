"""The sideband WebSocket (`gateway.http.sideband`) driven by the official openai SDK: an app
attaches to a live call (a Call on an in-memory leg, its Realtime session on the real local
provider), watches its server events (parsed by the SDK's own models), declares a tool, answers
the model's call to it, and is closed with 1000 when the call ends. Auth and unknown calls are
checked against the whole gateway's HTTP listener too."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI
from openai.types.realtime import (
    RealtimeErrorEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
)
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from gateway.call.call import Call, CallOptions
from gateway.call.default_scenario import setup as default_setup
from gateway.call.manager import CallManager
from gateway.http.errors import error_middleware
from gateway.http.sideband import SidebandApi, add_sideband_routes
from gateway.media.port import DtmfReceived
from gateway.realtime.local.server import LocalProvider
from gateway.secret import Secret
from tests.support.gateway import running_gateway
from tests.support.local_provider import client_frames
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for

TOKEN = "sideband-token-7f3a"
LOOKUP = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look an order up.",
    "parameters": {"type": "object", "properties": {"order": {"type": "string", "default": "42"}}},
}


def outputs(provider: LocalProvider) -> list[dict[str, Any]]:
    """The function_call_output items the provider received, in order."""
    return [
        f["item"]
        for f in client_frames(provider)
        if f["type"] == "conversation.item.create" and f["item"]["type"] == "function_call_output"
    ]


def session_tools(provider: LocalProvider) -> list[str]:
    return [str(t["name"]) for t in provider.sessions[-1].session.get("tools") or []]


def press(call: Call, keys: str) -> None:
    for key in keys:
        call.leg_event(DtmfReceived(key, "rfc4733"))


@contextlib.asynccontextmanager
async def live_call(
    provider: LocalProvider, setup: Callable[[Call], None] = default_setup
) -> AsyncIterator[tuple[Call, asyncio.Task[None], AsyncOpenAI]]:
    """Call "c1" running the default scenario in a CallManager, the sideband route on a real
    HTTP listener, and an SDK client pointed at it."""
    call, _m = await open_call(
        provider,
        options=CallOptions(greeting=False, transfer_targets={"operator": "sip:op@127.0.0.1"}),
    )
    manager = CallManager(4)
    manager.reserve()
    task = manager.start(call, setup)
    async with sideband_client(manager) as client:
        try:
            yield call, task, client
        finally:
            await call.hangup()
            await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def sideband_client(manager: CallManager) -> AsyncIterator[AsyncOpenAI]:
    """The sideband route of `manager`'s calls on a real HTTP listener, and an SDK client."""
    app = web.Application(middlewares=[error_middleware])
    add_sideband_routes(app, SidebandApi(manager, Secret(TOKEN)))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = AsyncOpenAI(
        api_key=TOKEN,
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


async def test_app_answers_its_tool_over_the_sideband_and_is_closed_with_1000(
    provider: LocalProvider,
) -> None:
    async with live_call(provider) as (call, task, client):
        async with client.realtime.connect(call_id="c1", model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "tools": [LOOKUP]})
            # the app's tool is declared beside the gateway's own call-control tools
            await wait_for(lambda: "lookup_order" in session_tools(provider), 5)
            assert session_tools(provider)[:3] == ["end_call", "transfer_call", "send_dtmf"]
            press(call, "*4")  # the model calls the session's 4th tool: the app's
            seen: list[str] = []
            done = None
            while done is None:
                ev = await asyncio.wait_for(conn.recv(), 8)
                seen.append(ev.type)
                if isinstance(ev, ResponseFunctionCallArgumentsDoneEvent):
                    done = ev
            assert done.name == "lookup_order"
            assert json.loads(done.arguments) == {"order": "42"}
            # the runner left it to the app: no unknown_tool output
            await asyncio.sleep(0.5)
            assert outputs(provider) == []
            await conn.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": done.call_id,
                    "output": json.dumps({"status": "shipped"}),
                }
            )
            await conn.response.create()
            # the model's reply to the output ("Done.") is seen by the app
            replies = 0
            while replies < 2:  # the function call's response, then the reply's
                ev = await asyncio.wait_for(conn.recv(), 8)
                seen.append(ev.type)
                if isinstance(ev, ResponseDoneEvent):
                    replies += 1
            sent = outputs(provider)
            assert len(sent) == 1 and sent[0]["call_id"] == done.call_id
            assert json.loads(sent[0]["output"]) == {"status": "shipped"}
            # a second output for the same call_id is refused, never sent on
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": done.call_id, "output": "x"}
            )
            ev = await asyncio.wait_for(conn.recv(), 5)
            assert isinstance(ev, RealtimeErrorEvent)
            assert ev.error.code == "duplicate_output"
            assert len(outputs(provider)) == 1
            # audio deltas were left out (not asked for), though the provider sent some
            assert "response.output_audio.delta" not in seen
            assert provider.sessions[0].stats["sent:response.output_audio.delta"] > 0
            assert "response.function_call_arguments.done" in seen
            # the gateway's own call-control tool still works: end_call ends the call
            press(call, "*1")
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(conn.recv(), 10)
            assert isinstance(closed.value, ConnectionClosedOK)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await asyncio.wait_for(task, 10)


async def test_other_client_events_get_an_error_event_and_the_socket_stays_open(
    provider: LocalProvider,
) -> None:
    async with (
        live_call(provider) as (_call, _task, client),
        client.realtime.connect(call_id="c1", model="gpt-realtime") as conn,
    ):
        await conn.send({"type": "input_audio_buffer.append", "audio": "AAAA"})
        ev = await asyncio.wait_for(conn.recv(), 5)
        assert isinstance(ev, RealtimeErrorEvent)
        assert ev.error.code == "invalid_event_type"
        await conn.send("not json at all")
        ev = await asyncio.wait_for(conn.recv(), 5)
        assert isinstance(ev, RealtimeErrorEvent) and ev.error.code == "invalid_json"
        # the socket is still up: a session.update goes through
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        await wait_for(lambda: provider.sessions[0].session.get("instructions") == "be brief", 5)
        assert not any(
            f["type"] == "input_audio_buffer.append" and f.get("audio") == "AAAA"
            for f in client_frames(provider)
        )


async def test_wrong_token_gets_401_and_unknown_call_404_on_the_gateway() -> None:
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        port = gw.http_port
        for key, status in (("wrong", 401), (TOKEN, 404)):
            client = AsyncOpenAI(
                api_key=key,
                base_url=f"http://127.0.0.1:{port}/v1",
                websocket_base_url=f"ws://127.0.0.1:{port}/v1",
            )
            with pytest.raises(InvalidStatus) as refused:
                async with client.realtime.connect(call_id="nosuch", model="gpt-realtime"):
                    pass
            assert refused.value.response.status_code == status
            body = json.loads(refused.value.response.body or b"{}")
            assert set(body["error"]) == {"message", "type", "code", "param"}
            await client.close()


async def test_an_app_connecting_right_after_accept_waits_for_the_call_being_set_up(
    provider: LocalProvider,
) -> None:
    """The race of CI (2026-12-07): `accept` returns once the app decided, while the call's
    provider session still connects; the app's sideband connect must wait for the call, not
    get 404. A call whose set-up fails instead gets the 404."""
    manager = CallManager(4)
    call, _m = await open_call(provider, options=CallOptions(greeting=False))
    async with sideband_client(manager) as client:
        manager.reserve("c1")  # accepted, its session connecting
        manager.reserve("c2")  # accepted, its set-up about to fail

        async def attach() -> str:
            async with client.realtime.connect(call_id="c1", model="gpt-realtime") as conn:
                await conn.session.update(session={"type": "realtime", "tools": [LOOKUP]})
                while True:
                    ev = await asyncio.wait_for(conn.recv(), 8)
                    if ev.type == "session.updated":
                        return ev.type

        attached = asyncio.create_task(attach())
        failed = asyncio.create_task(_refused(client, "c2"))
        await asyncio.sleep(0.3)
        assert not attached.done() and not failed.done()  # both wait for their calls
        manager.release_reservation("c2")
        assert await asyncio.wait_for(failed, 5) == 404
        task = manager.start(call, default_setup)
        try:
            assert await asyncio.wait_for(attached, 10) == "session.updated"
            await wait_for(lambda: "lookup_order" in session_tools(provider), 5)
        finally:
            await call.hangup()
            await asyncio.wait_for(task, 10)
        # a call that ended is unknown again: 404 at once, no wait
        assert await asyncio.wait_for(_refused(client, "c1"), 2) == 404


async def _refused(client: AsyncOpenAI, call_id: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with client.realtime.connect(call_id=call_id, model="gpt-realtime"):
            pass
    return refused.value.response.status_code


async def test_gateway_tool_names_stay_the_gateways_and_a_toolless_scenario_passes_them_on(
    provider: LocalProvider,
) -> None:
    end_call = {**LOOKUP, "name": "end_call"}
    async with (
        live_call(provider) as (_call, _task, client),
        client.realtime.connect(call_id="c1", model="gpt-realtime") as conn,
    ):
        await conn.session.update(session={"type": "realtime", "tools": [end_call, LOOKUP]})
        ev = await asyncio.wait_for(conn.recv(), 5)
        assert isinstance(ev, RealtimeErrorEvent) and ev.error.code == "tool_name_taken"
        await wait_for(lambda: "lookup_order" in session_tools(provider), 5)
        assert session_tools(provider).count("end_call") == 1

    def no_tools(call: Call) -> None:  # a scenario answering its own tools (or none)
        return None

    async with (
        live_call(provider, no_tools) as (_call, _task, client),
        client.realtime.connect(call_id="c1", model="gpt-realtime") as conn,
    ):
        await conn.session.update(session={"type": "realtime", "tools": [LOOKUP]})
        await wait_for(lambda: session_tools(provider) == ["lookup_order"], 5)


async def test_a_gateway_tool_and_an_app_tool_in_one_call_each_answered_once_by_its_owner(
    provider: LocalProvider,
) -> None:
    async with (
        live_call(provider) as (call, _task, client),
        client.realtime.connect(call_id="c1", model="gpt-realtime") as conn,
    ):
        await conn.session.update(session={"type": "realtime", "tools": [LOOKUP]})
        await wait_for(lambda: "lookup_order" in session_tools(provider), 5)
        press(call, "*3*4")  # the model calls send_dtmf (the gateway's), then lookup_order
        calls: dict[str, str] = {}
        while len(calls) < 2:
            ev = await asyncio.wait_for(conn.recv(), 8)
            if isinstance(ev, ResponseFunctionCallArgumentsDoneEvent):
                calls[ev.name] = ev.call_id
        assert set(calls) == {"send_dtmf", "lookup_order"}
        # the gateway answers its own tool; the app's is left to the app
        await wait_for(lambda: len(outputs(provider)) == 1, 5)
        await asyncio.sleep(0.5)
        [gateway_output] = outputs(provider)
        assert gateway_output["call_id"] == calls["send_dtmf"]
        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": calls["lookup_order"],
                "output": json.dumps({"status": "shipped"}),
            }
        )
        await conn.response.create()
        await wait_for(lambda: len(outputs(provider)) == 2, 5)
        await asyncio.sleep(2.5)  # past the runner's "no such tool" guess: nothing more
        answered = [o["call_id"] for o in outputs(provider)]
        assert sorted(answered) == sorted(calls.values()), answered
        assert json.loads(outputs(provider)[1]["output"]) == {"status": "shipped"}
