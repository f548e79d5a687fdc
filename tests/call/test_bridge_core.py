"""The call bridge core (`gateway.call.bridge.CallBridge`) in simulated time: no event loop, no
sleep, no socket. Time is a number the test moves; what the bridge asks for is read from its
queues (`client_events`, `call_events`) and its return values.

Barge-in at every point of a response, truncate accounting, late deltas of an interrupted
response, response bookkeeping, hold and format changes (re-INVITE codec/ptime). Audio is checked
by content: what the caller is sent is compared byte for byte (G.711 passthrough) or by
correlation (transcoding) with what the model sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.call.bridge import (
    BOT_MEDIA_END_S,
    BargedIn,
    CallBridge,
    FirstAudioSent,
    ResponseHeard,
)
from gateway.call.events import BotMediaEnded, BotMediaStarted
from gateway.media.convert import decode, encode
from gateway.media.format import PCMA_8K, PCMU_8K, AudioFormat
from gateway.media.port import FormatChanged, HoldChanged
from gateway.realtime import events as rt

Pcm = npt.NDArray[np.int16]
PCM24 = AudioFormat("pcm16", 24000)
ULAW_SILENCE = 0xFF


def tone(ms: int, fmt: AudioFormat = PCMU_8K, freq: float = 440.0, phase: int = 0) -> bytes:
    """`ms` of a tone in `fmt`; `phase` (samples) lets consecutive chunks join seamlessly."""
    n = fmt.rate * ms // 1000
    t = (np.arange(n) + phase) / fmt.rate
    return encode((9000 * np.sin(2 * np.pi * freq * t)).astype(np.int16), fmt)


def speech(ms: int, fmt: AudioFormat, seed: int = 1) -> bytes:
    """A voiced, speech-like signal (harmonics of a gliding pitch) in `fmt`."""
    n = fmt.rate * ms // 1000
    t = np.arange(n) / fmt.rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / fmt.rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 10))
    return encode((0.25 * 32767 * sig / np.max(np.abs(sig))).astype(np.int16), fmt)


def correlation(a: Pcm, b: Pcm) -> float:
    """Peak normalised cross-correlation of `a` anywhere in `b` (b at least as long)."""
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    corr = np.correlate(y, x, mode="valid")
    energy = np.convolve(y**2, np.ones(len(x)), mode="valid")
    return float(np.max(corr / (np.sqrt(energy * np.sum(x**2)) + 1e-9)))


class Sim:
    """Drives a bridge as the media clock and the Realtime client would, in simulated time."""

    def __init__(
        self,
        native: AudioFormat = PCMU_8K,
        session: AudioFormat = PCMU_8K,
        *,
        frame_ms: int = 20,
        append_ms: int = 100,
        created_at: float = 0.0,
    ) -> None:
        self.bridge = CallBridge(
            native, frame_ms, session, session, append_ms=append_ms, created_at=created_at
        )
        self.now = created_at
        self.heard: list[bytes | None] = []
        self.sent: list[dict[str, Any]] = []
        self.events: list[object] = []

    @property
    def frame_s(self) -> float:
        return self.bridge.frame_ms / 1000

    def tick(self, frames: int = 1) -> list[bytes | None]:
        """`frames` packet times: one pull each (the caller sends nothing)."""
        out = []
        for _ in range(frames):
            frame = self.bridge.pull(self.now)
            out.append(frame)
            self.now += self.frame_s
        self.heard.extend(out)
        self._drain()
        return out

    def play_out(self, limit: int = 10_000) -> list[bytes]:
        """Pull until the queue is empty (the last pull returns None); the frames pulled."""
        out: list[bytes] = []
        for _ in range(limit):
            (frame,) = self.tick()
            if frame is None:
                return out
            out.append(frame)
        raise AssertionError("the queue never emptied")

    def server(self, *events: rt.ServerEvent) -> None:
        for ev in events:
            self.bridge.server_event(ev, self.now)
        self._drain()

    def delta(self, audio: bytes, response: str = "r1", item: str = "i1") -> bool:
        queued = self.bridge.server_event(rt.AudioDelta(response, item, audio), self.now)
        self._drain()
        return queued

    def barge_in(self, *, interrupt_response: bool) -> Any:
        """What the default scenario does on speech_started (`call.barge_in()`)."""
        self.server(rt.SpeechStarted(audio_start_ms=0, item_id="u1"))
        cleared = self.bridge.barge_in(self.now, cancel_response=not interrupt_response)
        self._drain()
        return cleared

    def _drain(self) -> None:
        while self.bridge.client_events:
            self.sent.append(self.bridge.client_events.popleft())
        while self.bridge.call_events:
            self.events.append(self.bridge.call_events.popleft())

    def sent_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["type"] == kind]

    def events_of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


# --- caller audio toward the model ----------------------------------------------------------


def test_caller_audio_goes_out_in_appends_of_append_ms_untouched_when_passthrough() -> None:
    sim = Sim()
    audio = tone(400)
    appends = [sim.bridge.deliver(audio[i : i + 160], i / 8000) for i in range(0, 3200, 160)]
    # one append per five 20 ms frames, nothing in between, the caller's bytes as they came
    assert [a is not None for a in appends] == [False, False, False, False, True] * 4
    assert b"".join(a for a in appends if a is not None) == audio


def test_caller_audio_is_converted_once_per_append_when_transcoding() -> None:
    sim = Sim(session=PCM24)
    said = speech(1000, PCMU_8K)
    appends = [sim.bridge.deliver(said[i : i + 160], i / 8000) for i in range(0, 8000, 160)]
    sent = [a for a in appends if a is not None]
    assert len(sent) == 10  # 100 ms each
    # every append is 100 ms of 24 kHz PCM16 (4800 bytes), give or take the resampler's rounding
    assert all(abs(len(a) - 4800) <= 4 for a in sent[1:]), [len(a) for a in sent]
    heard_by_model = decode(b"".join(sent), PCM24)
    original = decode(speech(1000, PCM24), PCM24)
    assert correlation(original[6000:18000], heard_by_model) > 0.97


def test_stop_media_to_model_drops_the_partial_batch_and_sends_nothing() -> None:
    sim = Sim()
    audio = tone(200)
    for i in range(3):
        assert sim.bridge.deliver(audio[i * 160 : (i + 1) * 160], 0.0) is None
    sim.bridge.set_media("model", False)
    assert all(sim.bridge.deliver(audio[:160], 0.0) is None for _ in range(10))
    sim.bridge.set_media("model", True)
    out = [sim.bridge.deliver(audio[i * 160 : (i + 1) * 160], 0.0) for i in range(5)]
    assert out[:4] == [None] * 4 and out[4] == audio[:800]  # the old three frames are gone
    with pytest.raises(ValueError, match="model' or 'caller"):
        sim.bridge.set_media("both", True)


def test_hold_stops_caller_audio_to_the_model_and_drops_the_partial_batch() -> None:
    sim = Sim()
    audio = tone(600)
    frames = [audio[i : i + 160] for i in range(0, len(audio), 160)]
    for f in frames[:3]:
        assert sim.bridge.deliver(f, sim.now) is None
    sim.bridge.leg_event(HoldChanged(on_hold=True), sim.now)
    assert [sim.bridge.deliver(f, sim.now) for f in frames[3:20]] == [None] * 17
    sim.bridge.leg_event(HoldChanged(on_hold=False), sim.now)
    out = [sim.bridge.deliver(f, sim.now) for f in frames[20:30]]
    # batching starts afresh on resume: nothing of before the hold is sent
    assert out == [None] * 4 + [b"".join(frames[20:25])] + [None] * 4 + [b"".join(frames[25:30])]


def test_bot_audio_keeps_playing_on_hold() -> None:
    # hold concerns the caller's audio toward the model; what the leg does with the bot's audio
    # while held (the SIP leg keeps sending it) is the leg's business
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    audio = tone(200)
    sim.delta(audio)
    sim.bridge.leg_event(HoldChanged(on_hold=True), sim.now)
    assert b"".join(sim.play_out()) == audio
    assert sim.bridge.item_played_ms("i1") == 200


def test_closed_bridge_sends_nothing_to_the_model() -> None:
    sim = Sim()
    sim.bridge.close()
    assert all(sim.bridge.deliver(tone(20), 0.0) is None for _ in range(10))


# --- bot audio toward the caller ------------------------------------------------------------


def test_bot_audio_is_sent_frame_by_frame_and_the_last_frame_padded_with_silence() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    audio = tone(90)
    assert sim.delta(audio[:400]) and sim.delta(audio[400:])
    frames = sim.play_out()
    assert [len(f) for f in frames] == [160] * 5
    assert b"".join(frames)[:720] == audio
    assert frames[-1][80:] == bytes([ULAW_SILENCE]) * 80
    # what was played counts what was sent, never the padding
    assert sim.bridge.item_played_ms("i1") == 90 == sim.bridge.item_audio_ms("i1")


def test_transcoded_bot_audio_is_converted_per_delta_and_heard_intact() -> None:
    sim = Sim(session=PCM24)
    sim.server(rt.ResponseCreated("r1"))
    answer = speech(1000, PCM24, seed=4)
    for i in range(0, len(answer), 4800):  # ten deltas of 100 ms
        assert sim.delta(answer[i : i + 4800])
    heard = decode(b"".join(sim.play_out()), PCMU_8K)
    assert correlation(decode(speech(1000, PCMU_8K, seed=4), PCMU_8K)[800:7000], heard) > 0.97
    held = sim.bridge.item_audio_ms("i1")
    assert held == 1000
    # the resampler holds its group delay back: never more played than the item holds
    assert 990 <= sim.bridge.item_played_ms("i1") <= held


def test_stop_media_to_caller_drops_queued_audio_and_ignores_deltas_meanwhile() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(200))
    sim.tick(2)
    sim.bridge.set_media("caller", False)
    assert sim.tick(3) == [None] * 3
    assert not sim.delta(tone(100))  # not queued, not counted as held
    assert sim.bridge.item_audio_ms("i1") == 200
    sim.bridge.set_media("caller", True)
    later = tone(100, freq=600)
    assert sim.delta(later)
    assert b"".join(sim.play_out())[:800] == later


def test_bot_media_started_and_ended_after_a_second_of_silence() -> None:
    sim = Sim(created_at=0.0)
    sim.tick(10)  # 200 ms of nothing
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(100))
    sim.play_out()
    assert sim.events_of(BotMediaStarted) == [BotMediaStarted("i1")]
    assert [e.setup_s for e in sim.events_of(FirstAudioSent)] == [pytest.approx(0.2)]
    # the last frame of audio left at 0.28 s; one second of silence later the bot's media ended
    silent_frames = round(BOT_MEDIA_END_S / 0.02)
    sim.tick(silent_frames - 3)
    assert sim.events_of(BotMediaEnded) == []
    sim.tick(6)
    assert sim.events_of(BotMediaEnded) == [BotMediaEnded("i1")]
    # a second answer: started again, but the call's first audio is counted once
    sim.delta(tone(40), item="i2")
    sim.tick(3)
    assert sim.events_of(BotMediaStarted)[-1] == BotMediaStarted("i2")
    assert len(sim.events_of(FirstAudioSent)) == 1


def test_response_latency_is_from_speech_stopped_to_the_first_frame_of_the_answer() -> None:
    sim = Sim()
    sim.tick(5)
    sim.server(rt.SpeechStopped(audio_end_ms=900, item_id="u1"))
    stopped_at = sim.now
    sim.tick(12)  # the model thinks for 240 ms
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(200))
    sim.tick(10)
    assert [e.latency_s for e in sim.events_of(ResponseHeard)] == [pytest.approx(0.24)]
    assert stopped_at == pytest.approx(0.1)


# --- barge-in at every point of a response --------------------------------------------------


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_barge_in_before_the_first_delta(interrupt_response: bool) -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.tick(3)
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert cleared.item_id is None
    assert sim.sent_of("conversation.item.truncate") == []  # nothing was heard: no truncate
    assert sim.events_of(BargedIn) == []
    cancels = sim.sent_of("response.cancel")
    assert cancels == ([] if interrupt_response else [{"type": "response.cancel"}])
    # the response's deltas arriving afterwards are never played nor counted
    assert not sim.delta(tone(200))
    assert sim.tick(15) == [None] * 15
    assert sim.bridge.item_audio_ms("i1") == 0
    sim.server(rt.ResponseDone("r1", "cancelled"))
    assert sim.bridge.active_response is None


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_barge_in_mid_response_truncates_at_exactly_what_was_heard(
    interrupt_response: bool,
) -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    answer = tone(1000)
    sim.delta(answer[:2000])  # 250 ms
    heard = sim.tick(7)  # 140 ms heard
    sim.delta(answer[2000:4000])  # the model is still sending
    heard += sim.tick(3)  # 200 ms heard, in the middle of the second delta's 250 ms
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert cleared.item_id == "i1" and cleared.response_id == "r1"
    assert cleared.played_ms == 200 and cleared.dropped_ms == 300
    assert b"".join(f for f in heard if f is not None) == answer[:1600]
    assert sim.sent_of("conversation.item.truncate") == [
        {
            "type": "conversation.item.truncate",
            "item_id": "i1",
            "content_index": 0,
            "audio_end_ms": 200,
        }
    ]
    cancels = sim.sent_of("response.cancel")
    assert cancels == ([] if interrupt_response else [{"type": "response.cancel"}])
    # the truncate goes before the cancel, as the provider must see them
    if not interrupt_response:
        kinds = [e["type"] for e in sim.sent]
        assert kinds.index("conversation.item.truncate") < kinds.index("response.cancel")
    # the next frame is silence: the bot stops within one packet time of the barge-in
    assert sim.tick(1) == [None]
    # late deltas of the interrupted response are dropped, and not counted as held
    assert not sim.delta(answer[4000:6000])
    assert sim.tick(10) == [None] * 10
    assert sim.bridge.item_audio_ms("i1") == 500
    assert sim.bridge.item_played_ms("i1") == 200


@pytest.mark.parametrize("interrupt_response", [True, False])
@pytest.mark.parametrize("response_done", [False, True])
def test_barge_in_after_the_last_delta_while_audio_is_still_queued(
    interrupt_response: bool, response_done: bool
) -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    answer = tone(600)
    for i in range(0, 4800, 800):
        sim.delta(answer[i : i + 800])
    sim.server(rt.AudioDone("r1", "i1"))
    if response_done:  # the model is done, its audio is not
        sim.server(rt.ResponseDone("r1", "completed"))
    sim.tick(13)  # 260 ms heard
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert (cleared.item_id, cleared.played_ms, cleared.dropped_ms) == ("i1", 260, 340)
    (truncate,) = sim.sent_of("conversation.item.truncate")
    assert truncate["audio_end_ms"] == 260 < sim.bridge.item_audio_ms("i1") == 600
    # a finished response is not cancelled, whoever cancels responses
    cancel_expected = not interrupt_response and not response_done
    assert sim.sent_of("response.cancel") == ([{"type": "response.cancel"}] * cancel_expected)
    assert sim.tick(5) == [None] * 5
    (barged,) = sim.events_of(BargedIn)
    assert (barged.item_id, barged.played_ms, barged.dropped_ms) == ("i1", 260, 340)


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_barge_in_after_playout_ended_truncates_nothing(interrupt_response: bool) -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(300))
    sim.server(rt.ResponseDone("r1", "completed"))
    sim.play_out()  # all of it heard, then one silent frame
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert cleared.item_id is None and cleared.dropped_ms == 0
    assert sim.sent == []  # no truncate (the caller heard it all), no cancel
    assert sim.events_of(BargedIn) == []
    # the next answer is not affected
    assert sim.delta(tone(100), response="r2", item="i2")
    assert len(sim.play_out()) == 5


def test_barge_in_on_the_last_frame_truncates_at_the_whole_item_never_more() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(200))
    sim.tick(10)  # the last frame has just been sent; no pull since
    cleared = sim.barge_in(interrupt_response=True)
    assert cleared.item_id == "i1" and cleared.played_ms == 200 and cleared.dropped_ms == 0
    (truncate,) = sim.sent_of("conversation.item.truncate")
    assert truncate["audio_end_ms"] == 200 == sim.bridge.item_audio_ms("i1")


def test_one_barge_in_one_truncate_however_often_the_caller_speaks_again() -> None:
    """Late deltas of the interrupted response keep arriving and the caller's VAD fires again:
    one truncate for the item, ever (tests/call/test_bridge.py watched 100 ms of wall clock for
    this). The next response is heard, and its own barge-in truncates its own item."""
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(400))
    sim.tick(6)
    sim.barge_in(interrupt_response=True)
    for _ in range(5):  # the rest of r1 streams in after the barge-in
        sim.delta(tone(200))
        sim.tick(4)
    sim.barge_in(interrupt_response=True)  # the caller's VAD fires again
    sim.tick(5)
    sim.server(rt.ResponseDone("r1", "cancelled"))
    sim.barge_in(interrupt_response=True)
    assert [t["item_id"] for t in sim.sent_of("conversation.item.truncate")] == ["i1"]
    assert sim.sent_of("conversation.item.truncate")[0]["audio_end_ms"] == 120
    assert len(sim.events_of(BargedIn)) == 1
    # the answer to what the caller said is heard, and is interrupted in its turn
    sim.server(rt.ResponseCreated("r2"))
    second = tone(300, freq=700)
    assert sim.delta(second, response="r2", item="i2")
    heard = sim.tick(4)
    assert b"".join(f for f in heard if f is not None) == second[:640]
    sim.barge_in(interrupt_response=True)
    assert [
        (t["item_id"], t["audio_end_ms"]) for t in sim.sent_of("conversation.item.truncate")
    ] == [
        ("i1", 120),
        ("i2", 80),
    ]


def message_added(response: str, item: str) -> rt.OutputItemAdded:
    """`response.output_item.added` of an assistant audio message."""
    return rt.OutputItemAdded(
        response, 0, {"id": item, "type": "message", "role": "assistant", "content": []}
    )


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_barge_in_before_the_first_audio_cancels_and_deletes_the_item(
    interrupt_response: bool,
) -> None:
    """The response has begun its item, no audio yet: the item is deleted (OpenAI refuses a
    truncate of an item with no audio), after the cancel when the client cancels."""
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"), message_added("r1", "i1"))
    sim.tick(3)
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert cleared.item_id is None
    assert sim.sent_of("conversation.item.truncate") == []
    expected = [] if interrupt_response else [{"type": "response.cancel"}]
    expected.append({"type": "conversation.item.delete", "item_id": "i1"})
    assert sim.sent == expected
    # its deltas arriving afterwards are never played; the end of the response deletes nothing
    assert not sim.delta(tone(200))
    assert sim.tick(5) == [None] * 5
    sim.server(rt.ResponseDone("r1", "cancelled", output=({"id": "i1", "type": "message"},)))
    assert len(sim.sent_of("conversation.item.delete")) == 1
    assert sim.events_of(BargedIn) == []


def test_barge_in_with_audio_received_but_none_played_deletes_never_truncates_at_zero() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(300))  # queued; the media clock has not pulled yet
    cleared = sim.barge_in(interrupt_response=True)
    assert (cleared.item_id, cleared.played_ms, cleared.dropped_ms) == ("i1", 0, 300)
    assert sim.sent == [{"type": "conversation.item.delete", "item_id": "i1"}]
    assert sim.tick(3) == [None] * 3


def test_an_item_the_response_begins_after_the_barge_in_is_deleted() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.barge_in(interrupt_response=False)
    assert sim.sent == [{"type": "response.cancel"}]
    sim.server(message_added("r1", "i1"))  # crossed the cancel on the wire
    assert sim.sent[1:] == [{"type": "conversation.item.delete", "item_id": "i1"}]
    # an item only its response.done names is deleted too, once
    sim.server(
        rt.ResponseDone(
            "r1",
            "cancelled",
            output=({"id": "i1", "type": "message"}, {"id": "i2", "type": "message"}),
        )
    )
    assert [e["item_id"] for e in sim.sent_of("conversation.item.delete")] == ["i1", "i2"]


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_items_queued_behind_the_playing_one_are_deleted_the_playing_one_truncated(
    interrupt_response: bool,
) -> None:
    """A finished answer still playing, the next response's audio queued behind it, and an item
    of that response with no audio yet: one truncate (what was heard), the response cancelled,
    and every item nothing was heard of deleted."""
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"), message_added("r1", "i1"))
    sim.delta(tone(400), response="r1", item="i1")
    sim.server(rt.ResponseDone("r1", "completed"))
    sim.server(rt.ResponseCreated("r2"), message_added("r2", "i2"))
    sim.delta(tone(200), response="r2", item="i2")
    sim.server(message_added("r2", "i3"))
    sim.tick(5)  # 100 ms of i1 heard
    cleared = sim.barge_in(interrupt_response=interrupt_response)
    assert (cleared.item_id, cleared.played_ms, cleared.queued_items) == ("i1", 100, ("i2",))
    kinds = [(e["type"], e.get("item_id")) for e in sim.sent]
    assert kinds == [
        ("conversation.item.truncate", "i1"),
        *([] if interrupt_response else [("response.cancel", None)]),
        ("conversation.item.delete", "i2"),
        ("conversation.item.delete", "i3"),
    ]
    assert sim.sent_of("conversation.item.truncate")[0]["audio_end_ms"] == 100
    assert sim.tick(3) == [None] * 3
    # the caller speaks again: nothing more is truncated or deleted
    sim.barge_in(interrupt_response=interrupt_response)
    sim.server(rt.ResponseDone("r2", "cancelled"))
    assert len(sim.sent) == len(kinds)


def test_a_fully_heard_item_of_the_response_under_way_is_left_alone() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"), message_added("r1", "i1"))
    sim.delta(tone(100), response="r1", item="i1")
    sim.play_out()  # all of i1 heard; the response goes on
    sim.server(message_added("r1", "i2"))
    sim.barge_in(interrupt_response=True)
    assert sim.sent == [{"type": "conversation.item.delete", "item_id": "i2"}]


def test_a_played_prompt_queued_behind_bot_audio_is_never_deleted() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(200))
    sim.bridge.play(np.zeros(800, np.int16), 8000)
    sim.tick(2)
    cleared = sim.barge_in(interrupt_response=True)
    assert len(cleared.queued_items) == 1  # the prompt's audio was dropped...
    assert [e["type"] for e in sim.sent] == ["conversation.item.truncate"]  # ...never deleted


def test_barge_in_reaction_is_measured_from_speech_started_to_the_last_frame_sent() -> None:
    sim = Sim(created_at=0.0)
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(1000))
    sim.tick(10)
    sim.server(rt.SpeechStarted(audio_start_ms=0, item_id="u1"))
    started = sim.now
    sim.tick(3)  # the barge-in reaches the bridge three frames later
    cleared = sim.bridge.barge_in(sim.now, cancel_response=False)
    sim._drain()
    (barged,) = sim.events_of(BargedIn)
    assert barged.reaction_s == pytest.approx(0.04)  # the third frame left at started + 40 ms
    assert barged.at_s == pytest.approx(started + 0.06)
    assert (barged.played_ms, cleared.played_ms) == (260, 260)


def test_a_played_prompt_is_cleared_by_barge_in_but_never_truncated() -> None:
    sim = Sim()
    sim.bridge.play(decode(tone(500), PCMU_8K), 8000)
    sim.tick(5)
    cleared = sim.barge_in(interrupt_response=True)
    assert cleared.response_id == "play" and cleared.played_ms == 100
    assert sim.sent == []
    assert sim.tick(3) == [None] * 3


def test_played_prompt_is_resampled_and_encoded_for_the_leg() -> None:
    sim = Sim()
    prompt = decode(speech(800, AudioFormat("pcm16", 16000), seed=2), AudioFormat("pcm16", 16000))
    sim.bridge.play(prompt, 16000)
    heard = decode(b"".join(sim.play_out()), PCMU_8K)
    assert correlation(decode(speech(800, PCMU_8K, seed=2), PCMU_8K)[800:5600], heard) > 0.97


# --- truncate accounting --------------------------------------------------------------------


def test_truncate_is_clamped_to_what_the_item_holds() -> None:
    sim = Sim(session=PCM24)
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(speech(300, PCM24))
    sim.bridge.truncate("i1", 10_000)
    sim.bridge.truncate("i1", -5)
    sim.bridge.truncate("unknown", 250)
    sim._drain()
    assert [(e["item_id"], e["audio_end_ms"]) for e in sim.sent] == [
        ("i1", 300),
        ("i1", 0),
        ("unknown", 0),
    ]


def test_played_ms_counts_the_leg_format_and_held_ms_the_session_format() -> None:
    # 24 kHz PCM16 in (48 bytes per ms), PCMU out (8 bytes per ms): both in milliseconds
    sim = Sim(session=PCM24)
    sim.server(rt.ResponseCreated("r1"))
    for _ in range(5):
        sim.delta(speech(100, PCM24, seed=3))
    sim.tick(17)
    cleared = sim.barge_in(interrupt_response=True)
    assert cleared.played_ms == 340
    (truncate,) = sim.sent_of("conversation.item.truncate")
    assert truncate["audio_end_ms"] == 340
    assert sim.bridge.item_audio_ms("i1") == 500


# --- responses ------------------------------------------------------------------------------


def test_a_response_is_asked_for_once_and_again_after_the_active_one() -> None:
    sim = Sim()
    sim.bridge.request_response({})
    sim.bridge.request_response({"instructions": "x"})  # asked already: it waits
    sim._drain()
    assert sim.sent == [{"type": "response.create"}]
    sim.server(rt.ResponseCreated("r1"))
    sim.server(rt.ResponseDone("r1", "completed"))
    assert sim.sent[1:] == [{"type": "response.create", "response": {"instructions": "x"}}]
    sim.server(rt.ResponseCreated("r2"), rt.ResponseDone("r2", "completed"))
    assert len(sim.sent) == 2  # nothing was waiting


def test_a_response_refused_as_busy_is_asked_for_after_the_server_made_one() -> None:
    sim = Sim()
    sim.bridge.request_response({})
    sim._drain()
    # the server's VAD made a response first: the client's response.create is refused
    sim.server(
        rt.ErrorOccurred(
            "invalid_request_error",
            "conversation_already_has_active_response",
            "busy",
            cause="response.create",
        ),
        rt.ResponseCreated("vad1"),
    )
    assert len(sim.sent) == 1
    sim.server(rt.ResponseDone("vad1", "completed"))
    assert sim.sent == [{"type": "response.create"}] * 2


def test_a_reconnect_forgets_the_response_under_way_and_asks_for_the_waiting_one() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    sim.delta(tone(200))
    sim.bridge.request_response({"instructions": "again"})
    sim._drain()
    assert sim.sent == []
    sim.server(rt.SessionReconnected(reason="dropped", reseeded_items=3))
    assert sim.bridge.active_response is None
    assert sim.sent == [{"type": "response.create", "response": {"instructions": "again"}}]
    # the dead response's audio still plays; a late delta of it (replayed by the provider) does
    # not
    assert not sim.delta(tone(100))
    assert len(sim.play_out()) == 10


# --- format changes (re-INVITE) -------------------------------------------------------------


def test_ptime_change_mid_response_keeps_playing_and_counting() -> None:
    sim = Sim()
    sim.server(rt.ResponseCreated("r1"))
    answer = tone(600)
    sim.delta(answer)
    before = sim.tick(10)  # 200 ms at 20 ms
    sim.bridge.leg_event(FormatChanged(PCMU_8K, 30), sim.now)
    after = sim.play_out()
    assert {len(f) for f in after} == {240}  # 30 ms frames from now on
    # the caller hears the whole answer, nothing dropped, nothing repeated
    assert (b"".join(f for f in before if f is not None) + b"".join(after))[:4800] == answer
    assert sim.bridge.item_played_ms("i1") == 600


def test_ptime_change_keeps_the_caller_audio_batch() -> None:
    sim = Sim()
    said = tone(400)
    out = [sim.bridge.deliver(said[i : i + 160], 0.0) for i in range(0, 480, 160)]  # 60 ms
    sim.bridge.leg_event(FormatChanged(PCMU_8K, 30), 0.0)
    out += [sim.bridge.deliver(said[i : i + 240], 0.0) for i in range(480, 3200, 240)]
    sent = [a for a in out if a is not None]
    assert b"".join(sent) == said[: len(b"".join(sent))]  # continuous: no frame lost
    assert len(b"".join(sent)) >= 2400


def test_codec_change_mid_response_converts_what_is_queued_and_what_comes() -> None:
    sim = Sim()  # PCMU leg, PCMU session (passthrough)
    sim.server(rt.ResponseCreated("r1"))
    answer = speech(800, PCMU_8K, seed=6)
    sim.delta(answer[:4000])
    before = sim.tick(10)  # 200 ms heard as PCMU
    sim.bridge.leg_event(FormatChanged(PCMA_8K, 20), sim.now)
    sim.delta(answer[4000:])  # the model still speaks PCMU; the leg now wants PCMA
    after = sim.play_out()
    heard_before = decode(b"".join(f for f in before if f is not None), PCMU_8K)
    heard = np.concatenate([heard_before, decode(b"".join(after), PCMA_8K)])
    original = decode(answer, PCMU_8K)
    # the whole answer, in order, with only the law-to-law rounding between them
    assert len(heard) >= len(original)
    assert np.max(np.abs(heard[: len(original)].astype(int) - original)) <= 1024
    assert correlation(original, heard) > 0.999
    assert sim.bridge.item_played_ms("i1") == 800
    # and a barge-in now truncates at everything heard, before and after the change
    sim.delta(speech(200, PCMU_8K), item="i2")
    sim.tick(4)
    sim.barge_in(interrupt_response=True)
    (truncate,) = sim.sent_of("conversation.item.truncate")
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("i2", 80)


def test_codec_change_converts_the_caller_audio_for_the_session() -> None:
    sim = Sim()  # PCMU session
    said = speech(400, PCMU_8K, seed=8)
    pcm = decode(said, PCMU_8K)
    out = [sim.bridge.deliver(said[i : i + 160], 0.0) for i in range(0, 480, 160)]
    sim.bridge.leg_event(FormatChanged(PCMA_8K, 20), 0.0)
    as_alaw = encode(pcm, PCMA_8K)
    out += [sim.bridge.deliver(as_alaw[i : i + 160], 0.0) for i in range(480, 3200, 160)]
    sent = b"".join(a for a in out if a is not None)
    assert len(sent) == 3200  # four appends, nothing lost at the change
    heard_by_model = decode(sent, PCMU_8K)
    assert np.max(np.abs(heard_by_model.astype(int) - pcm)) <= 1024
    assert correlation(pcm, heard_by_model) > 0.999
