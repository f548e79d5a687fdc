"""The scenario's tools (`gateway.call.tools`) against the real local provider, over its real
WebSocket with the real Realtime client: the model calls a tool on a keypad sequence (`*` then
the tool's 1-based index in the session's `tools`), every function call runs in its own task,
one `function_call_output` per call_id, one `response.create` per response, timeouts and
failures answered, and every client event the gateway sent valid for the openai SDK's models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.call.call import Call, CallOptions
from gateway.call.default_scenario import setup as default_setup
from gateway.call.manager import CallManager
from gateway.call.tools import ToolContext
from gateway.media.port import DtmfReceived
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import speech_like
from tests.support.local_provider import client_frames
from tests.support.memory_call import MediaLegAndClock, open_call
from tests.support.realtime_schema import Conformance
from tests.support.waiting import wait_for


def session_tools(provider: LocalProvider) -> list[str]:
    """The tool names of the provider's (first) session, in the session's order."""
    return [str(t["name"]) for t in provider.sessions[0].session.get("tools") or []]


def press(call: Call, keys: str) -> None:
    for key in keys:
        call.leg_event(DtmfReceived(key, "rfc4733"))


def outputs(provider: LocalProvider) -> list[dict[str, Any]]:
    """The function_call_output items the provider received, in order."""
    return [
        f["item"]
        for f in client_frames(provider)
        if f["type"] == "conversation.item.create" and f["item"]["type"] == "function_call_output"
    ]


def frames_after_first_output(provider: LocalProvider) -> list[dict[str, Any]]:
    frames = client_frames(provider)
    first = next(
        i
        for i, f in enumerate(frames)
        if f["type"] == "conversation.item.create" and f["item"]["type"] == "function_call_output"
    )
    return frames[first:]


def all_sent_conform(provider: LocalProvider) -> None:
    conform = Conformance()
    for frame in client_frames(provider):
        conform.client(frame)
    assert conform.checked > 0


async def start(
    provider: LocalProvider, setup: Callable[[Call], None], **options: Any
) -> tuple[Call, MediaLegAndClock, asyncio.Task[None]]:
    call, m = await open_call(
        provider,
        options=CallOptions(
            greeting=False, transfer_targets={"operator": "sip:op@127.0.0.1"}, **options
        ),
    )
    task = CallManager(10).start(call, setup)
    return call, m, task


async def test_registered_tools_are_declared_and_a_mid_call_tool_sends_one_update(
    provider: LocalProvider,
) -> None:
    async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return {"status": "shipped"}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("order_status", description="Look up an order", timeout_s=3)(order_status)
        call.tool("opening_hours", description="When we are open")(order_status)

    call, _m, task = await start(provider, setup)
    await wait_for(lambda: "opening_hours" in session_tools(provider), 5)
    assert session_tools(provider) == [
        "end_call",
        "transfer_call",
        "send_dtmf",
        "order_status",
        "opening_hours",
    ]
    updates = [f for f in client_frames(provider) if f["type"] == "session.update"]
    # the connect's session.update, then one for both tools registered in setup()
    assert len(updates) == 2
    assert call.tools.names() == session_tools(provider)
    # mid-call: removing one and adding another sends one more update, once both are done
    call.tools.remove("opening_hours")
    call.tool("book_slot", parameters={"type": "object", "properties": {}})(order_status)
    await wait_for(lambda: "book_slot" in session_tools(provider), 5)
    assert "opening_hours" not in session_tools(provider)
    assert len([f for f in client_frames(provider) if f["type"] == "session.update"]) == 3
    # registering the same tool again changes nothing on the wire
    call.tool("book_slot", parameters={"type": "object", "properties": {}})(order_status)
    await asyncio.sleep(0.2)
    assert len([f for f in client_frames(provider) if f["type"] == "session.update"]) == 3
    await call.hangup()
    await task
    all_sent_conform(provider)


async def test_a_tool_driven_by_the_keypad_gets_exactly_one_output_and_one_response(
    provider: LocalProvider,
) -> None:
    seen: list[tuple[dict[str, Any], str, str]] = []

    async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        seen.append((args, ctx.name, ctx.call_id))
        await asyncio.sleep(0.3)
        return {"order": args["order_id"], "status": "shipped"}

    params = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "default": "A17"}},
    }

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("order_status", parameters=params)(order_status)

    call, _m, task = await start(provider, setup)
    await wait_for(lambda: "order_status" in session_tools(provider), 5)
    press(call, "*" + str(session_tools(provider).index("order_status") + 1))
    await wait_for(lambda: len(outputs(provider)) == 1, 8)
    (args, name, call_id) = seen[0]
    assert args == {"order_id": "A17"} and name == "order_status"
    # the model's "Done." reply to the output was asked for once, and played
    await wait_for(lambda: provider.sessions[0].stats["responses"] >= 3, 8)
    await asyncio.sleep(0.5)
    (out,) = outputs(provider)
    assert out["call_id"] == call_id
    assert json.loads(out["output"]) == {"order": "A17", "status": "shipped"}
    after = frames_after_first_output(provider)
    assert [f["type"] for f in after].count("response.create") == 1
    assert call.stats["tool_calls"] == ["order_status:ok"]
    await call.hangup()
    await task
    all_sent_conform(provider)


async def test_an_unregistered_tool_is_answered_at_once(provider: LocalProvider) -> None:
    ghost = {"type": "function", "name": "ghost", "description": "", "parameters": {}}

    def setup(call: Call) -> None:
        default_setup(call)

    call, _m, task = await start(provider, setup)
    await asyncio.sleep(0.2)
    # declared behind the registry's back: the model may call it, nobody runs it
    from gateway.call.default_scenario import TOOLS

    call.realtime.session_update({"tools": [*TOOLS, ghost]})
    await wait_for(lambda: "ghost" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: provider.sessions[0].stats["function_calls"] == 1, 8)
    called_at = time.monotonic()
    await wait_for(lambda: len(outputs(provider)) == 1, 2)
    assert time.monotonic() - called_at < 0.5  # at once, not after a 2 s guess
    output = json.loads(outputs(provider)[0]["output"])
    assert output["ok"] is False and output["error"] == "unknown_tool"
    await asyncio.sleep(2.3)  # nothing more comes later for the same call_id
    assert len(outputs(provider)) == 1
    assert call.stats["tool_calls"] == ["ghost:unknown_tool"]
    await call.hangup()
    await task


async def test_a_tool_past_its_timeout_gets_one_timeout_output_and_its_late_result_is_dropped(
    provider: LocalProvider, log_lines: Callable[[], str]
) -> None:
    finished = asyncio.Event()

    async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        await asyncio.sleep(0.8)
        finished.set()
        return {"late": True}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("slow", timeout_s=0.3, holding=False)(slow)

    call, _m, task = await start(provider, setup)
    await wait_for(lambda: "slow" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: len(outputs(provider)) == 1, 8)
    output = json.loads(outputs(provider)[0]["output"])
    assert output["ok"] is False and output["error"] == "timeout"
    assert not finished.is_set()  # the output went at the timeout, not at the tool's end
    await asyncio.wait_for(finished.wait(), 3)
    await asyncio.sleep(0.3)
    assert len(outputs(provider)) == 1  # the late result was dropped...
    late = [json.loads(x) for x in log_lines().splitlines() if "tool_late_result_dropped" in x]
    assert late and late[0]["call_id"] == "c1" and late[0]["tool"] == "slow"  # ...and logged
    assert call.stats["tool_calls"] == ["slow:timeout"]
    await call.hangup()
    await task


async def test_a_tool_that_raises_gets_an_error_output_and_is_logged_with_the_call_id(
    provider: LocalProvider, log_lines: Callable[[], str]
) -> None:
    async def broken(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        raise RuntimeError("database on fire")

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("broken")(broken)

    call, _m, task = await start(provider, setup)
    await wait_for(lambda: "broken" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: len(outputs(provider)) == 1, 8)
    output = json.loads(outputs(provider)[0]["output"])
    assert output == {"ok": False, "error": "tool_failed", "message": "broken failed"}
    assert "database on fire" not in outputs(provider)[0]["output"]  # not told to the model
    failed = [json.loads(x) for x in log_lines().splitlines() if '"tool_failed"' in x]
    assert failed and failed[0]["call_id"] == "c1"
    assert "database on fire" in failed[0]["exception"]
    await asyncio.sleep(0.3)
    assert call.state.value == "connected"  # a failing tool never ends the call
    await call.hangup()
    await task


async def test_barge_in_is_handled_while_a_long_tool_runs(provider: LocalProvider) -> None:
    tool_done = asyncio.Event()

    async def lookup(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        # music while waiting: 3 s of a tone for the caller, then 2.5 s of work
        t = np.arange(3 * 8000) / 8000
        await ctx.call.play((np.sin(2 * np.pi * 425 * t) * 8000).astype(np.int16))
        await asyncio.sleep(2.5)
        tool_done.set()
        return {"found": True}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("lookup", holding=False)(lookup)

    call, m, task = await start(provider, setup)
    await wait_for(lambda: "lookup" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: call.playout.queued_ms > 1000, 8)
    await asyncio.sleep(0.4)
    m.leg.say(speech_like(1.0, seed=9))  # the caller speaks over the music
    await wait_for(lambda: call.stats["barge_ins"] == 1, 5)
    # the barge-in was handled (playout cleared) while the tool was still working
    assert not tool_done.is_set()
    assert call.playout.queued_ms == 0
    await asyncio.wait_for(tool_done.wait(), 5)
    await wait_for(lambda: len(outputs(provider)) == 1, 3)
    await call.hangup()
    await task


async def test_parallel_calls_run_together_and_one_response_follows_both(
    provider: LocalProvider,
) -> None:
    spans: dict[str, tuple[float, float]] = {}

    def timed(delay: float) -> Any:
        async def tool(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
            began = time.monotonic()
            await asyncio.sleep(delay)
            spans[ctx.name] = (began, time.monotonic())
            return {"tool": ctx.name}

        return tool

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("first", holding=False)(timed(0.4))
        call.tool("second", holding=False)(timed(0.8))

    call, _m, task = await start(provider, setup)
    await wait_for(lambda: "second" in session_tools(provider), 5)
    press(call, "*4*5")  # one response holding both calls
    await wait_for(lambda: len(outputs(provider)) == 2, 8)
    assert provider.sessions[0].stats["function_calls"] == 2
    # they overlapped: the second began before the first ended
    assert spans["second"][0] < spans["first"][1]
    await wait_for(
        lambda: "response.create" in [f["type"] for f in frames_after_first_output(provider)], 5
    )
    await asyncio.sleep(0.5)
    after = [f["type"] for f in frames_after_first_output(provider)]
    # ONE response.create, after both outputs
    assert after.count("response.create") == 1
    assert after.index("response.create") > 1
    assert sorted(call.stats["tool_calls"]) == ["first:ok", "second:ok"]
    await call.hangup()
    await task
    all_sent_conform(provider)


async def test_no_response_is_forced_over_the_callers_new_turn(provider: LocalProvider) -> None:
    async def check(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        await asyncio.sleep(0.8)
        return {"checked": True}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("check", holding=False)(check)

    call, m, task = await start(provider, setup)
    await wait_for(lambda: "check" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: provider.sessions[0].stats["function_calls"] == 1, 8)
    m.leg.say(speech_like(2.0, seed=4))  # the caller talks on past the tool's end
    await wait_for(lambda: len(outputs(provider)) == 1, 5)
    responses_at_output = provider.sessions[0].stats["responses"]
    # the caller's turn ends in the server's own response (VAD create_response), which sees
    # the output; the gateway sends no response.create of its own
    await wait_for(lambda: provider.sessions[0].stats["responses"] > responses_at_output, 8)
    await asyncio.sleep(0.3)
    assert [f["type"] for f in frames_after_first_output(provider)].count("response.create") == 0
    await call.hangup()
    await task


async def test_a_long_tool_gets_the_holding_prompt_never_dead_air(provider: LocalProvider) -> None:
    loop = asyncio.get_running_loop()
    span: list[float] = []

    async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        span.append(loop.time())
        await asyncio.sleep(2.4)
        span.append(loop.time())
        return {"done": True}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tool("slow")(slow)

    call, m, task = await start(provider, setup, tool_hold_after_s=1.5)
    await wait_for(lambda: "slow" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: len(span) == 2, 8)
    began, ended = span
    plays = [p for i, p in call.playout.items.items() if i.startswith("play-")]
    assert len(plays) == 1, "no holding line (dead air) while the tool worked"
    hold = plays[0]
    assert hold.first_played_at is not None and hold.last_played_at is not None
    # the holding line began 1.5 s in, and was heard while the tool still worked...
    assert 1.45 <= hold.first_played_at - began <= 1.7
    assert hold.first_played_at < ended
    # ...and it is the holding prompt, by content
    from gateway.call.prompts import holding_prompt
    from gateway.media.convert import decode
    from gateway.media.format import PCMU_8K
    from tests.support.audio import best_correlation

    heard = b"".join(
        f for t, f in m.leg.sent if f is not None and hold.first_played_at <= t <= ended
    )
    prompt, _rate = holding_prompt()
    assert best_correlation(prompt[:2000], decode(heard, PCMU_8K)) > 0.95
    await call.hangup()
    await task


async def test_the_holding_line_can_be_a_model_response_with_the_scenarios_instructions(
    provider: LocalProvider,
) -> None:
    async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        await asyncio.sleep(1.0)
        return {"done": True}

    def setup(call: Call) -> None:
        default_setup(call)
        call.tools.holding_instructions = "Tell the caller you are still looking."
        call.tool("slow")(slow)

    call, _m, task = await start(provider, setup, tool_hold_after_s=0.4)
    await wait_for(lambda: "slow" in session_tools(provider), 5)
    press(call, "*4")
    await wait_for(lambda: len(outputs(provider)) == 1, 8)
    await asyncio.sleep(0.5)
    frames = client_frames(provider)
    holds = [
        i
        for i, f in enumerate(frames)
        if f["type"] == "response.create"
        and f.get("response", {}).get("instructions") == "Tell the caller you are still looking."
    ]
    first_output = next(
        i for i, f in enumerate(frames) if f.get("item", {}).get("type") == "function_call_output"
    )
    assert len(holds) == 1 and holds[0] < first_output
    await call.hangup()
    await task
    all_sent_conform(provider)


async def test_a_tool_registered_mid_call_survives_a_dropped_session(
    provider: LocalProvider,
) -> None:
    # issue 17: the registry's session.update is a mid-call change like any other, so the
    # re-opened session declares the tool again and the model can still call it
    ran: list[str] = []

    async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        ran.append(ctx.call_id)
        return {"status": "shipped"}

    call, _m, task = await start(provider, default_setup)
    await wait_for(lambda: "send_dtmf" in session_tools(provider), 5)
    call.tool("order_status", description="Look up an order", timeout_s=3)(order_status)
    await wait_for(lambda: "order_status" in session_tools(provider), 5)
    assert provider.drop_connections() == 1
    await wait_for(lambda: len(provider.sessions) == 2, 5)
    renewed = provider.sessions[-1]
    await wait_for(
        lambda: "order_status" in [t["name"] for t in renewed.session.get("tools") or []], 5
    )
    names = [str(t["name"]) for t in renewed.session.get("tools") or []]
    assert names == call.tools.names()
    press(call, "*" + str(names.index("order_status") + 1))  # the model calls it
    await wait_for(lambda: len(ran) == 1, 5)
    await wait_for(lambda: len(outputs(provider)) == 1, 5)
    (output,) = outputs(provider)
    assert output["call_id"] == ran[0] and json.loads(output["output"]) == {"status": "shipped"}
    await call.hangup()
    await task
    all_sent_conform(provider)
