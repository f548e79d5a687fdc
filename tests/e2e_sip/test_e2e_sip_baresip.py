"""baresip (Debian package baresip), headless, calls the whole gateway (embedded local provider)
and records what it hears. Checked by content: the greeting and the echo of what baresip said
are in the recording (cross-correlation), and speech during the greeting is a barge-in that
stops bot audio within 40 ms and truncates the greeting at what was actually played."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import telcodecs

from gateway.media.format import AudioFormat
from tests.support.audio import best_correlation, windows_found
from tests.support.baresip import baresip_call, speech_wav
from tests.support.gateway import assert_nothing_leaked, provider_sessions, running_gateway
from tests.support.local_provider import client_events
from tests.support.scenarios import CallLog
from tests.support.waiting import wait_for


async def test_baresip_hears_the_greeting_then_the_echo_of_what_it_said(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        # silence while the whole greeting plays, then the phrase, then time for its echo
        source, said = speech_wav(tmp_path, len(greeting) / 8000 + 0.7, 4.0)
        phone = await baresip_call(gw, log, tmp_path, source)
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert log.outcomes() == ["remote_hangup"]
        assert call.stats["barge_ins"] == 0
        heard = phone.heard()
        # the greeting, start to end (G.711 both ways: sample for sample)
        found = windows_found(greeting, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.85, found
        # the echo of what baresip said, after the greeting
        found = windows_found(said, heard[len(greeting) :])
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found


async def test_barge_in_over_sip_stops_the_greeting_within_40ms(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        greeting = telcodecs.ulaw_decode(
            gw.local_provider.options.prompts.audio("greeting", AudioFormat("pcmu", 8000))
        )
        # speak 1.5 s into the greeting (which is longer than that)
        assert len(greeting) / 8000 > 3.0
        source, said = speech_wav(tmp_path, 1.5, 3.5)
        phone = await baresip_call(gw, log, tmp_path, source)
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert call.stats["barge_ins"] == 1
        started = call.bridge.speech_started_at
        assert started is not None
        greeting_id = next(iter(call.playout.items))
        played = call.playout.items[greeting_id]
        # bot audio toward the caller stopped within 40 ms of speech_started reaching the gateway
        assert played.last_played_at is not None
        assert played.last_played_at - started <= 0.04, played.last_played_at - started
        # the truncate carried the milliseconds actually sent (PCMU: 8 bytes per ms)
        [engine] = provider_sessions(gw)
        [truncate] = client_events(engine, "conversation.item.truncate")
        assert truncate["item_id"] == greeting_id
        assert truncate["audio_end_ms"] == played.played_bytes // 8
        assert 0 < truncate["audio_end_ms"] < len(greeting) // 8
        await wait_for(lambda: engine.stats["truncated"] == 1, 2, "truncated")
        assert engine.stats["errors"] == 0
        # by content: baresip heard the greeting's start, not its end, then the echo
        heard = phone.heard()
        assert np.mean(np.array(windows_found(greeting[:8000], heard)) >= 0.9) >= 0.75
        assert best_correlation(greeting[-8000:], heard) < 0.5
        found = windows_found(said, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found
