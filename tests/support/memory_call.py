"""A Call on an in-memory leg, for bridge tests: `MemoryLeg` plays caller audio from an array on
the media clock and keeps every frame the bridge sends back; `open_call` builds a Call on one,
connected to a local provider. The real legs are tested with sipp, baresip and Chromium; this
lets the bridge be tested against the real local provider alone."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

from gateway.call.call import Call, CallInfo, CallOptions
from gateway.call.default_scenario import TOOLS
from gateway.media.clock import MediaClock, Outbox
from gateway.media.convert import decode, encode
from gateway.media.format import PCMU_8K, AudioFormat
from gateway.media.port import LegEnded, MediaPort, MediaSink
from gateway.realtime import events as rt
from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.local.server import LocalProvider
from gateway.realtime.profiles import ProviderProfile, make_profile


class MemoryLeg(MediaPort):
    """A SIP-like leg in memory: `say()` queues caller audio, `sent` keeps what the bridge
    answered per tick, `heard()` decodes it."""

    leg = "sip"

    def __init__(self, clock: MediaClock, native: AudioFormat, frame_ms: int = 20) -> None:
        self.native = native
        self.frame_ms = frame_ms
        self._clock = clock
        self._sink: MediaSink | None = None
        self._caller = np.zeros(0, dtype=np.int16)
        self._pos = 0
        self.sent: list[tuple[float, bytes | None]] = []
        self.dtmf_sent: list[str] = []
        self.closed = False
        self.ticks = 0

    def say(self, pcm: npt.NDArray[np.int16]) -> None:
        """Queue caller audio (at the leg's rate), played from the next tick on."""
        rest = self._caller[self._pos :]
        self._caller = np.concatenate([rest, pcm.astype(np.int16)])
        self._pos = 0

    def attach(self, sink: MediaSink) -> None:
        self._sink = sink
        self._clock.add(self)

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        assert self._sink is not None
        self.ticks += 1
        n = self.native.rate * self.frame_ms // 1000
        chunk = self._caller[self._pos : self._pos + n]
        self._pos += len(chunk)
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.int16)])
        self._sink.deliver(encode(chunk, self.native), now)
        self.sent.append((now, self._sink.pull(now)))

    def heard(self) -> npt.NDArray[np.int16]:
        """Everything the bridge sent, silence where it sent nothing, decoded."""
        n = self.native.frame_bytes(self.frame_ms)
        silence = encode(np.zeros(n // self.native.bytes_per_sample, np.int16), self.native)
        return decode(b"".join(f if f is not None else silence for _, f in self.sent), self.native)

    def hang_up(self) -> None:
        assert self._sink is not None
        self._sink.leg_event(LegEnded("remote_hangup"))

    def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    async def aclose(self) -> None:
        self._clock.remove(self)
        self._sink = None
        self.closed = True
        await asyncio.sleep(0)


async def open_call(
    provider: LocalProvider,
    native: AudioFormat = PCMU_8K,
    *,
    fmt: AudioFormat | None = None,
    options: CallOptions | None = None,
    turn: rt.TurnDetection | None = None,
    profile: ProviderProfile | None = None,
) -> tuple[Call, MediaLegAndClock]:
    """Call "c1" (inbound SIP) on a `MemoryLeg` with its own media clock, its Realtime client
    connected to `provider` (server VAD, the default scenario's tools); not started yet."""
    profile = profile or make_profile("local", base_url=provider.url)
    fmt = fmt or native
    config = rt.SessionConfig(
        instructions="test",
        voice="marin",
        input_format=fmt,
        output_format=fmt,
        turn_detection=turn
        or rt.TurnDetection(
            type="server_vad",
            silence_duration_ms=400,
            create_response=True,
            interrupt_response=True,
        ),
        tools=TOOLS,
        tool_choice="auto",
    )
    client = RealtimeClient(profile, config, reconnect=ReconnectPolicy(attempts=1, within_s=1.0))
    await client.connect()
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 20, slots=1)
    leg = MemoryLeg(clock, native)
    call = Call(
        "c1",
        CallInfo(leg="sip", direction="inbound", provider="local"),
        leg,
        client,
        options or CallOptions(transfer_targets={"operator": "sip:op@127.0.0.1"}),
        created_at=loop.time(),
    )
    return call, MediaLegAndClock(leg, clock)


class MediaLegAndClock:
    """The leg and the media clock of a call `open_call` built."""

    def __init__(self, leg: MemoryLeg, clock: MediaClock) -> None:
        self.leg = leg
        self.clock = clock
