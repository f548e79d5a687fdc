"""End to end through the whole gateway with sipp as the phone and the embedded local provider
as the model: CANCEL while the model connects, DTMF `#` makes the model end the call (goodbye,
then BYE), DTMF `0` becomes a REFER to the mapped target, and a provider killed mid-call gives
the apology prompt, then BYE."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from gateway.call.call import Call
from gateway.call.prompts import apology_prompt
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.events import SessionConfig
from gateway.realtime.profiles import ProviderProfile
from tests.support.gateway import (
    assert_nothing_leaked,
    provider_sessions,
    run_sipp,
    running_gateway,
)
from tests.support.local_provider import client_events
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for


class _StallingClient(RealtimeClient):
    """A provider that takes 2 s to connect (a fault no real peer produces on demand)."""

    async def connect(self) -> None:
        await asyncio.sleep(2.0)
        await super().connect()


def _stalling_factory(profile: ProviderProfile, config: SessionConfig) -> RealtimeClient:
    return _StallingClient(
        profile,
        config,
        connect_timeout=5.0,
        setup_timeout=5.0,
        reconnect=ReconnectPolicy(attempts=1, within_s=2.0, backoff_s=0.1),
    )


async def test_cancel_while_the_model_connects(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.calls is not None
        gw.calls.client_factory = _stalling_factory
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_cancel.xml")
        assert result.successful_calls == 1, result.explain()
        assert re.search(r"SIP/2.0 487[^\n]*\n(?:[^\n]+\n)*?CSeq: 1 INVITE", sipp.messages)
        assert "SIP/2.0 200 OK" in sipp.messages  # for the CANCEL
        assert "SIP/2.0 200 OK" not in sipp.messages.split("CANCEL sip:")[0]  # never answered
        # the CANCEL stops the stalled connect: no model session is ever opened (no cost),
        # the slot is given back
        await asyncio.sleep(2.5)
        assert len(provider_sessions(gw)) == 0
        await assert_nothing_leaked(gw)
        assert gw.manager._reserved == 0
        assert log.calls == []


def _played(call: Call) -> dict[str, tuple[int, int]]:
    return {i: (p.played_bytes, p.queued_bytes) for i, p in call.playout.items.items()}


async def test_dtmf_pound_makes_the_model_end_the_call(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_dtmf_pound_bye.xml")
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert [(d, s) for _c, d, s in log.dtmf] == [("#", "rfc4733")]
        assert log.outcomes() == ["completed"]
        assert call.stats["tool_calls"] == ["end_call:ok"]
        [engine] = provider_sessions(gw)
        assert engine.stats["function_calls"] == 1
        assert client_events(engine, "conversation.item.create")[-1]["item"]["type"] == (
            "function_call_output"
        )
        # greeting, then the goodbye reply: the reply was played to the end before the BYE
        items = list(call.playout.items.values())
        assert len(items) == 2, _played(call)
        goodbye = items[-1]
        assert goodbye.played_bytes > 0 and goodbye.played_bytes == goodbye.queued_bytes
        assert "BYE sip:" in sipp.messages


async def test_dtmf_zero_transfers_by_refer(tmp_path: Path) -> None:
    log = CallLog()
    target = "sip:operator@127.0.0.1:5099"
    async with running_gateway(log.setup, transfer_targets={"operator": target}) as gw:
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_refer.xml")
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert [(d, s) for _c, d, s in log.dtmf] == [("0", "rfc4733")]
        refer_to = re.findall(r"^Refer-To:\s*(.*?)\s*$", sipp.messages, re.M)
        assert refer_to and all(target in r for r in refer_to), refer_to
        assert call.stats["tool_calls"] == ["transfer_call:ok"]
        assert log.outcomes() == ["transferred"]


async def test_provider_killed_mid_call_apologises_then_bye(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        provider = gw.local_provider
        sipp_task = asyncio.create_task(
            run_sipp(gw, tmp_path, scenario="e2e_wait_bye.xml", timeout=25)
        )
        await wait_for(lambda: bool(log.calls) and log.calls[0].state == "connected", 10, "call")
        [call] = log.calls
        await asyncio.sleep(0.5)
        await provider.stop()  # the model goes away; the reconnect within 2 s fails too
        sipp, result = await sipp_task
        assert result.successful_calls == 1, result.explain()
        assert "BYE sip:" in sipp.messages
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["provider_failed"]
        # the apology prompt was played to the caller, all of it, before the BYE
        apology = [p for i, p in call.playout.items.items() if i.startswith("play-")]
        assert len(apology) == 1
        assert apology[0].played_bytes == apology[0].queued_bytes
        pcm, rate = apology_prompt()
        assert abs(apology[0].played_bytes - len(pcm) * 8000 // rate) <= 320
