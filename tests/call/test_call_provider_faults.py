"""The default scenario against a faulty provider (`FaultyProvider` in front of the local one),
with an in-memory leg on the media clock, real time, short settings. What the caller hears is
checked by content (cross-correlation against the prompt's audio) and by when it was sent:

* a stall after the caller's turn: the holding prompt within N + 1 s, a new connection with the
  re-seeded session, then the model answers and the call goes on;
* stalls past the retries: the apology, then the call ends;
* a failed response is asked for once more (the caller hears it), a second failure in a row
  gets the apology and the call ends `response_failed`;
* a scenario can replace the default handling of failed responses."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway import metrics
from gateway.call.call import Call, CallInfo, CallOptions
from gateway.call.default_scenario import TOOLS, setup
from gateway.call.manager import CallManager
from gateway.call.prompts import apology_prompt, holding_prompt
from gateway.call.service import default_client_factory
from gateway.config import Settings
from gateway.media.clock import MediaClock
from gateway.media.convert import decode
from gateway.media.format import PCMU_8K
from gateway.realtime import events as rt
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import make_profile
from tests.support.audio import speech_like
from tests.support.fault_provider import Fault, FaultyProvider
from tests.support.memory_call import MemoryLeg
from tests.support.waiting import wait_for

Pcm = npt.NDArray[np.int16]


def locate(needle: Pcm, haystack: Pcm) -> tuple[float, int]:
    """(peak normalised cross-correlation, sample offset) of `needle` in `haystack`."""
    a, b = needle.astype(np.float64), haystack.astype(np.float64)
    if len(b) < len(a):
        return 0.0, -1
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: len(b) - len(a) + 1]
    cum = np.concatenate(([0.0], np.cumsum(b**2)))
    energy = cum[len(a) :] - cum[: len(b) - len(a) + 1]
    norm = np.sqrt(np.maximum(energy, 0.0) * np.sum(a**2))
    # silence has no shape: a window with next to no energy scores 0, not noise / epsilon
    loud = energy > 1e-4 * np.sum(a**2)
    score = np.where(loud, corr / np.where(loud, norm, 1.0), 0.0)
    at = int(np.argmax(score))
    return float(score[at]), at


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False, speedup=10.0)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


class Rig:
    """One call on a MemoryLeg, its session built by the gateway's client factory from
    settings, talking to a FaultyProvider."""

    def __init__(self, call: Call, leg: MemoryLeg, clock: MediaClock, proxy: FaultyProvider):
        self.call, self.leg, self.clock, self.proxy = call, leg, clock, proxy

    def heard_at(self, prompt: tuple[Pcm, int]) -> tuple[float, float]:
        """(score, loop time the caller started hearing `prompt`)."""
        pcm, rate = prompt
        assert rate == 8000
        score, at = locate(pcm, self.leg.heard())
        return score, self.leg.sent[at // 160][0]


async def open_call(
    local: LocalProvider, faults: Any, *, greeting: bool = True, **settings: Any
) -> Rig:
    proxy = FaultyProvider(local.url, faults)
    await proxy.start()
    profile = make_profile("url", base_url=proxy.url)
    config = rt.SessionConfig(
        instructions="test",
        voice="marin",
        input_format=PCMU_8K,
        output_format=PCMU_8K,
        turn_detection=rt.TurnDetection(
            silence_duration_ms=400, create_response=True, interrupt_response=True
        ),
        tools=TOOLS,
        tool_choice="auto",
    )
    s = dataclasses.replace(Settings(), **settings)
    client = default_client_factory(profile, config, settings=s)
    await client.connect()
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 20, slots=1)
    leg = MemoryLeg(clock, PCMU_8K)
    call = Call(
        "c-faults",
        CallInfo(leg="sip", direction="inbound", provider="url"),
        leg,
        client,
        CallOptions(greeting=greeting),
        created_at=loop.time(),
    )
    return Rig(call, leg, clock, proxy)


def idle(call: Call) -> bool:
    """Nothing queued for the caller and no response under way."""
    return call.playout.queued_ms == 0 and not call.realtime.response_active


def played(call: Call, prefix: str = "item_") -> list[str]:
    return [i for i, p in call.playout.items.items() if i.startswith(prefix) and p.played_bytes]


async def test_stall_after_the_callers_turn_holds_reconnects_and_goes_on(
    local: LocalProvider,
) -> None:
    m = await open_call(
        local,
        [Fault(stall_after="input_audio_buffer.committed")],
        greeting=False,
        provider_stall_timeout=1.0,
    )
    task = CallManager(10).start(m.call, setup)
    try:
        await asyncio.sleep(0.3)
        m.leg.say(speech_like(1.2, seed=7))  # the caller's turn; the provider then hangs
        await wait_for(lambda: len(m.proxy.connections) == 2 and m.call.playout.queued_ms == 0)
        await wait_for(lambda: len(played(m.call)) == 1)  # the new session answered
        await wait_for(lambda: idle(m.call))
        # the caller speaks again and hears the echo: the call goes on, on the new connection
        said = speech_like(1.2, seed=8)
        m.leg.say(said)
        await wait_for(lambda: len(played(m.call)) == 2)
        await wait_for(lambda: idle(m.call))
    finally:
        await m.call.hangup("completed")
        await task
        await m.proxy.stop()
    first, second = m.proxy.connections
    assert first.stall_at is not None
    # the caller heard the holding prompt, by content, within N + 1 s of the stall
    score, heard = m.heard_at(holding_prompt())
    assert score > 0.95, score
    assert 1.0 <= heard - first.stall_at <= 2.0, heard - first.stall_at
    # the new connection: same session, re-seeded, then asked for a response
    kinds = [e["type"] for e in second.received]
    assert kinds[0] == "session.update" and "response.create" in kinds
    assert second.received[0]["session"] == first.received[0]["session"]
    # the model's answer came after the holding prompt, then the echo of the second turn
    answer = m.call.playout.items[played(m.call)[0]]
    assert answer.first_played_at is not None and answer.first_played_at > heard
    score, _ = locate(said[2000:7000], m.leg.heard())
    assert score > 0.99, score
    assert m.call.outcome == "completed" and m.proxy.invalid == []


async def test_stalls_past_the_retries_end_the_call_with_the_apology(local: LocalProvider) -> None:
    lost = metrics.REALTIME_SESSIONS_LOST.labels(reason="stall_retries")._value.get()
    m = await open_call(
        local,
        lambda _: Fault(stall_after="response.created"),  # every response hangs
        provider_stall_timeout=0.5,
        provider_stall_retries=1,
    )
    task = CallManager(10).start(m.call, setup)
    await asyncio.wait_for(task, 20)
    await m.proxy.stop()
    assert m.call.outcome == "provider_failed"
    assert len(m.proxy.connections) == 2  # one re-open, then no more
    score, holding_at = m.heard_at(holding_prompt())
    assert score > 0.95, score
    score, apology_at = m.heard_at(apology_prompt())
    assert score > 0.95 and apology_at > holding_at, score
    assert m.leg.closed and len(m.clock) == 0
    assert metrics.REALTIME_SESSIONS_LOST.labels(reason="stall_retries")._value.get() == lost + 1


async def test_a_failed_response_is_asked_for_again_and_heard(local: LocalProvider) -> None:
    m = await open_call(local, [Fault(fail_responses=1)])
    task = CallManager(10).start(m.call, setup)
    try:
        await wait_for(lambda: len(played(m.call)) == 1)
        await wait_for(lambda: idle(m.call))
    finally:
        await m.call.hangup("completed")
        await task
        await m.proxy.stop()
    [conn] = m.proxy.connections
    assert len(conn.client_events("response.create")) == 2 and len(conn.failed) == 1
    greeting = decode(local.options.prompts.audio("greeting", PCMU_8K), PCMU_8K)
    score, _ = locate(greeting[:8000], m.leg.heard())
    assert score > 0.99, score
    assert locate(apology_prompt()[0], m.leg.heard())[0] < 0.5  # no apology
    assert m.call.outcome == "completed" and m.proxy.invalid == []


async def test_two_failed_responses_in_a_row_get_the_apology_and_end_the_call(
    local: LocalProvider,
) -> None:
    failed = metrics.REALTIME_RESPONSES_FAILED.labels(status="failed", reason="server_error")
    before = failed._value.get()
    m = await open_call(local, [Fault(fail_responses=2)])
    task = CallManager(10).start(m.call, setup)
    await asyncio.wait_for(task, 20)
    await m.proxy.stop()
    assert m.call.outcome == "response_failed"
    [conn] = m.proxy.connections
    assert len(conn.client_events("response.create")) == 2  # the first, and one retry
    score, _ = locate(apology_prompt()[0], m.leg.heard())
    assert score > 0.95, score
    assert m.leg.closed and len(m.clock) == 0
    assert failed._value.get() == before + 2 and m.proxy.invalid == []


async def test_a_scenario_replaces_the_failed_response_handling(local: LocalProvider) -> None:
    seen: list[str] = []

    def custom(call: Call) -> None:
        setup(call)
        call.realtime.off(rt.ResponseDone)  # no retry, no apology: this scenario decides

        def on_done(ev: rt.ResponseDone) -> None:
            if ev.failure == "failed":
                seen.append(ev.status)
                call.spawn(call.hangup("custom_failed"))

        call.realtime.on(rt.ResponseDone, on_done)

    m = await open_call(local, [Fault(fail_responses=5)])
    task = CallManager(10).start(m.call, custom)
    await asyncio.wait_for(task, 10)
    await m.proxy.stop()
    assert seen == ["failed"] and m.call.outcome == "custom_failed"
    assert len(m.proxy.connections[0].client_events("response.create")) == 1
    assert locate(apology_prompt()[0], m.leg.heard())[0] < 0.5
