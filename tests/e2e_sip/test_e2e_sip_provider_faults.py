"""End to end with a real SIP caller through the whole in-process gateway, `--provider url`
pointed at a fault-injecting Realtime server (`FaultyProvider` in front of the local provider;
the faults no real provider produces on demand):

* a provider that stalls after the caller's turn: baresip hears the holding prompt within
  N + 1 s, a new WebSocket connection is opened with the re-seeded session, and the call goes on
  (baresip hears the model again, then the echo of what it says next);
* a provider whose responses fail: after one retry, baresip hears the apology and gets a BYE;
* a provider that closes every connection after a second: the reconnects stop at the per-minute
  cap, then sipp gets the apology and a BYE.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gateway import metrics
from gateway.call.prompts import apology_prompt, holding_prompt
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import Pcm, windows_found
from tests.support.baresip import baresip_call, speech_wav
from tests.support.fault_provider import Fault, FaultyProvider
from tests.support.gateway import assert_nothing_leaked, run_sipp, running_gateway
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for

STALL_S = 1.0


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(use_espeak=False)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def write_wav(path: Path, pcm: Pcm) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def silence(seconds: float) -> Pcm:
    return np.zeros(int(seconds * 8000), np.int16)


def mostly(found: list[float], score: float = 0.8, share: float = 0.7) -> bool:
    return bool(found) and float(np.mean(np.array(found) >= score)) >= share


def first_window(needle: Pcm, haystack: Pcm, window: int = 2000) -> int:
    """Sample offset in `haystack` where `needle`'s first 250 ms are heard best."""
    a = needle[:window].astype(np.float64)
    b = haystack.astype(np.float64)
    corr = np.correlate(b, a, mode="valid")
    cum = np.concatenate(([0.0], np.cumsum(b**2)))
    energy = cum[window:] - cum[: len(b) - window + 1]
    loud = energy > 1e-4 * np.sum(a**2)
    score = np.where(loud, corr / np.sqrt(np.where(loud, energy, 1.0) * np.sum(a**2)), 0.0)
    return int(np.argmax(score))


async def test_stall_after_the_callers_turn_holding_prompt_reconnect_and_the_call_goes_on(
    tmp_path: Path, local: LocalProvider
) -> None:
    proxy = FaultyProvider(local.url, [Fault(stall_after="input_audio_buffer.committed")])
    await proxy.start()
    stalls = metrics.REALTIME_STALLS.labels(awaited="response.created")._value.get()
    log = CallLog()
    try:
        async with running_gateway(
            log.setup,
            provider="url",
            provider_url=proxy.url,
            provider_stall_timeout=STALL_S,
        ) as gw:
            _, said = speech_wav(tmp_path, 0.0, 0.0)
            # the caller's turn (the provider hangs after committing it), time for the holding
            # prompt, the reconnect and the model's answer, then a second turn to be echoed
            source = write_wav(
                tmp_path / "turns.wav",
                np.concatenate([silence(1.0), said, silence(4.7), said, silence(4.0)]),
            )
            phone = await baresip_call(gw, log, tmp_path, source)
            await assert_nothing_leaked(gw)
            [call] = log.calls
    finally:
        await proxy.stop()
    assert log.outcomes() == ["remote_hangup"]
    assert proxy.active == 0 and proxy.invalid == [] and proxy.conform.checked > 50
    first, second = proxy.connections
    assert first.stall_at is not None
    # the holding prompt reached the caller within N + 1 s of the provider going quiet...
    holding = [p for i, p in call.playout.items.items() if i.startswith("play-")]
    assert len(holding) == 1 and holding[0].first_played_at is not None
    after = holding[0].first_played_at - first.stall_at
    assert STALL_S <= after <= STALL_S + 1.0, after
    # ...and baresip heard it, by content
    heard = phone.heard()
    hold_pcm, _ = holding_prompt()
    assert mostly(windows_found(hold_pcm, heard)), windows_found(hold_pcm, heard)
    hold_at = first_window(hold_pcm, heard)
    # a new WebSocket connection with the same session, re-seeded with the conversation so far
    # (the greeting's transcript), then asked for a response
    assert second.received[0]["type"] == "session.update"
    assert second.received[0]["session"] == first.received[0]["session"]
    reseed = second.received[1]
    assert reseed["type"] == "conversation.item.create"
    assert reseed["item"]["role"] == "assistant"
    assert reseed["item"]["content"][0]["text"] == local.options.prompts.text("greeting")
    assert "response.create" in [e["type"] for e in second.received[2:]]
    assert second.appends > 0  # the caller's audio goes to the new session
    # the call goes on: the model answers after the holding prompt, then echoes the second turn
    greeting, answer, echo = (p for i, p in call.playout.items.items() if i.startswith("item_"))
    assert all(p.played_bytes == p.queued_bytes > 0 for p in (greeting, answer, echo))
    assert answer.first_played_at is not None and answer.first_played_at > (
        holding[0].first_played_at
    )
    found = windows_found(said, heard[hold_at:])
    assert mostly(found), found
    assert metrics.REALTIME_STALLS.labels(awaited="response.created")._value.get() == stalls + 1


async def test_failed_responses_get_one_retry_then_the_apology_and_a_bye(
    tmp_path: Path, local: LocalProvider
) -> None:
    proxy = FaultyProvider(local.url, [Fault(fail_responses=2)])
    await proxy.start()
    failed = metrics.REALTIME_RESPONSES_FAILED.labels(status="failed", reason="server_error")
    before = failed._value.get()
    log = CallLog()
    try:
        async with running_gateway(log.setup, provider="url", provider_url=proxy.url) as gw:
            source = write_wav(tmp_path / "quiet.wav", silence(12.0))
            phone = await baresip_call(gw, log, tmp_path, source)
            await assert_nothing_leaked(gw)
            [call] = log.calls
    finally:
        await proxy.stop()
    # the gateway hung up (BYE) after the apology, long before baresip's 12 s file ended
    assert log.outcomes() == ["response_failed"]
    [ended] = log.ended.values()
    assert ended.duration_s < 10.0, ended.duration_s
    [conn] = proxy.connections
    assert len(conn.client_events("response.create")) == 2  # the greeting and one retry
    assert conn.failed and proxy.invalid == []
    apology = [p for i, p in call.playout.items.items() if i.startswith("play-")]
    assert len(apology) == 1 and apology[0].played_bytes == apology[0].queued_bytes
    pcm, _ = apology_prompt()
    found = windows_found(pcm, phone.heard())
    assert mostly(found), found
    assert failed._value.get() == before + 2


async def test_a_provider_closing_every_connection_is_reconnected_up_to_the_cap(
    tmp_path: Path, local: LocalProvider
) -> None:
    proxy = FaultyProvider(local.url, lambda _: Fault(close_after_s=1.0))
    await proxy.start()
    reconnects = metrics.REALTIME_RECONNECTS._value.get()
    lost = metrics.REALTIME_SESSIONS_LOST.labels(reason="reconnect_rate")._value.get()
    log = CallLog()
    try:
        # default settings: at most 3 re-opens within a minute
        async with running_gateway(log.setup, provider="url", provider_url=proxy.url) as gw:
            sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_wait_bye.xml", timeout=30)
            assert result.successful_calls == 1, result.explain()
            assert "BYE sip:" in sipp.messages
            await assert_nothing_leaked(gw)
            [call] = log.calls
            await wait_for(lambda: proxy.active == 0, 3.0, "the proxy's sockets to close")
    finally:
        await proxy.stop()
    assert log.outcomes() == ["provider_failed"]
    assert len(proxy.connections) == 4  # the first, and 3 re-opens; the 4th close is the end
    assert metrics.REALTIME_RECONNECTS._value.get() == reconnects + 3
    assert metrics.REALTIME_SESSIONS_LOST.labels(reason="reconnect_rate")._value.get() == lost + 1
    apology = [p for i, p in call.playout.items.items() if i.startswith("play-")]
    assert len(apology) == 1 and apology[0].played_bytes == apology[0].queued_bytes
    assert proxy.invalid == []
