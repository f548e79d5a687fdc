"""End to end through the whole gateway (embedded local provider) with sipp playing real RTP:
sipp's PCMA speech capture (30 ms packets) reaches the model by content, RFC 4733 digits reach
the call in order, hold stops caller audio toward the model, and 20 calls at once all talk."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import numpy as np
import telcodecs

from gateway.app import Gateway
from gateway.call.call import Call
from gateway.rtp.session import RtpSession
from tests.support.audio import windows_found
from tests.support.gateway import (
    assert_nothing_leaked,
    provider_sessions,
    run_sipp,
    running_gateway,
)
from tests.support.local_provider import appended_audio
from tests.support.pcap import SIPP_SHARE, pcap_rtp_payloads
from tests.support.scenarios import CallLog


def _pcap_speech() -> bytes:
    packets = pcap_payloads("g711a")
    assert {pt for pt, _ in packets} == {8}
    return b"".join(p for _, p in packets)


def pcap_payloads(name: str) -> list[tuple[int, bytes]]:
    return [(pt, payload) for pt, _seq, payload in pcap_rtp_payloads(SIPP_SHARE / f"{name}.pcap")]


async def test_pcap_speech_and_rfc4733_digits_reach_the_call(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        _sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_pcap_dtmf.xml", timeout=30)
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert log.outcomes() == ["remote_hangup"]
        # The offer's codec and ptime were honoured: PCMA, 30 ms packets, passthrough session.
        assert str(call.leg.native) == "pcma/8000"
        assert call.leg.frame_ms == 30
        # Digits 1, 2, 3 arrived once each, in order, as RFC 4733 events.
        assert [(d, s) for _c, d, s in log.dtmf] == [
            ("1", "rfc4733"),
            ("2", "rfc4733"),
            ("3", "rfc4733"),
        ]
        # The model heard the speech: VAD started and committed at least one turn...
        [engine] = provider_sessions(gw)
        assert engine.stats["speech_started"] >= 1
        assert engine.stats["committed"] >= 1
        # ...and what was appended is the capture's audio (G.711 passthrough: by content).
        speech = _pcap_speech()
        appended = appended_audio(engine)
        assert engine.stats["appended_bytes"] == len(appended)
        # from the first packet to the BYE: the 7 s of speech (less a frame or two the jitter
        # buffer may skip when it shrinks), at most the whole call (in whole 30 ms frames: the
        # last one may straddle the BYE)
        [ended] = log.ended.values()
        frame = 240
        assert 0.98 * len(speech) <= len(appended) <= ended.duration_s * 8000 + frame, (
            len(speech),
            len(appended),
            ended.duration_s,
        )
        heard = telcodecs.alaw_decode(appended)
        said = telcodecs.alaw_decode(speech)
        found = windows_found(said, heard)
        assert np.mean(np.array(found) >= 0.95) >= 0.9, found


async def _sample(gw: Gateway, log: CallLog, out: list[tuple[float, int, int]]) -> None:
    """Every 20 ms: (time, provider appended_bytes, RTP packets the leg received)."""
    loop = asyncio.get_running_loop()
    while True:
        sessions = provider_sessions(gw)
        if log.calls and sessions:
            session: RtpSession = log.calls[0].leg.session  # type: ignore[attr-defined]
            out.append((loop.time(), sessions[0].stats["appended_bytes"], session.stats.packets_in))
        await asyncio.sleep(0.02)


async def test_hold_stops_caller_audio_to_the_model(tmp_path: Path) -> None:
    log = CallLog()
    samples: list[tuple[float, int, int]] = []
    async with running_gateway(log.setup) as gw:
        sampler = asyncio.create_task(_sample(gw, log, samples))
        try:
            _sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_hold_pcap.xml", timeout=30)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["remote_hangup"]
        assert [on for _c, on, _t in log.hold] == [True, False]
        held_at, resumed_at = log.hold[0][2], log.hold[1][2]
        before = [s for s in samples if s[0] < held_at]
        # (the handlers run just after the leg changed state: keep clear of both edges)
        during = [s for s in samples if held_at + 0.2 <= s[0] <= resumed_at - 0.1]
        after = [s for s in samples if s[0] > resumed_at + 0.3]
        assert before and during and after
        # audio reached the model before the hold...
        assert before[-1][1] > 0
        # ...sipp kept sending RTP while held, but nothing more reached the model...
        assert during[-1][2] - during[0][2] >= 40, (during[0], during[-1])
        assert during[-1][1] == during[0][1], (during[0], during[-1])
        # ...and after the resume it flows again.
        assert after[-1][1] > during[-1][1]


async def test_twenty_calls_at_once_all_talk(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        _sipp, result = await run_sipp(
            gw,
            tmp_path,
            scenario="e2e_pcap_short.xml",
            calls=20,
            extra=["-l", "20", "-r", "50"],
            timeout=30,
        )
        assert result.successful_calls == 20, result.explain()
        assert result.failed_calls == 0, result.explain()
        await assert_nothing_leaked(gw)
        assert len(log.calls) == 20
        assert log.outcomes() == ["remote_hangup"] * 20
        sessions = provider_sessions(gw)
        assert len(sessions) == 20
        # every call's model session heard the caller speak
        assert [s.stats["speech_started"] >= 1 for s in sessions] == [True] * 20
        # every caller was sent bot audio (the greeting, which the caller's speech interrupts)
        played = [_played_bytes(c) for c in log.calls]
        assert all(p > 0 for p in played), played


def _played_bytes(call: Call) -> int:
    return sum(item.played_bytes for item in call.playout.items.values())
