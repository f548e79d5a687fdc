"""A Call in early media (an outbound call whose far end sent a 18x with SDP): the far end's
audio is recorded, not sent to the model, nothing is played to it, and the scenario gets
`EarlyMedia` then, on the answer, `CallConnected` (and the greeting) once."""

from __future__ import annotations

from pathlib import Path

from gateway.call.call import Call, CallOptions
from gateway.call.default_scenario import setup
from gateway.call.events import CallConnected, CallEvent, EarlyMedia
from gateway.call.manager import CallManager
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import best_correlation, read_stereo_wav, speech_like
from tests.support.local_provider import sent_client_events
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for


async def test_early_media_is_recorded_not_sent_then_the_answer_connects(
    provider: LocalProvider, tmp_path: Path
) -> None:
    call, m = await open_call(provider, options=CallOptions(record_dir=str(tmp_path)))
    call.early = 183
    seen: list[CallEvent] = []

    def scenario(c: Call) -> None:
        setup(c)
        c.on(EarlyMedia, seen.append)
        c.on(CallConnected, seen.append)

    task = CallManager(10).start(call, scenario)
    announcement = speech_like(1.0)
    m.leg.say(announcement)
    await wait_for(lambda: len(m.leg.sent) > 70, 5.0)  # 1.4 s of ticks
    assert seen == [EarlyMedia(183)]
    assert all(frame is None for _, frame in m.leg.sent)  # no greeting into the early media
    assert sent_client_events(provider, "input_audio_buffer.append") == []
    call.connected()
    call.connected()  # a retransmitted 2xx: connected once
    await wait_for(lambda: any(f is not None for _, f in m.leg.sent), 8.0)  # the greeting
    assert seen == [EarlyMedia(183), CallConnected()]
    m.leg.say(speech_like(0.5, seed=2))
    await wait_for(lambda: sent_client_events(provider, "input_audio_buffer.append") != [], 5.0)
    await call.hangup("completed")
    await task
    assert call.recorder is not None
    _rate, stereo = read_stereo_wav(call.recorder.wav_path)
    assert best_correlation(announcement[1000:7000], stereo[:12000, 0]) > 0.95
