"""WebRTC test peers: an echoing test sink (`EchoSink`), a paced PCM source track for aiortc
clients (`PcmSourceTrack`), an aiortc `Client`, and the gateway's WebRTC routes on loopback
(`gateway_server`). The test signals and the correlation checks are in `audio.py`."""

from __future__ import annotations

import asyncio
import fractions
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from numpy.typing import NDArray

from gateway.config import Settings
from gateway.http.errors import error_middleware
from gateway.legs.webrtc.leg import WebRtcLeg
from gateway.legs.webrtc.service import OfferInfo
from gateway.media.port import DtmfReceived, LegEnded, LegEvent
from gateway.secret import Secret
from gateway.webrtc.ice import IcePolicy, pregather
from gateway.webrtc.routes import WebRtcService, add_webrtc_routes

RATE = 48000
FRAME = 960


class EchoSink:
    """A test-only MediaSink: records caller audio and leg events, and plays caller audio
    back (echo) after `delay_frames`, or `outbound` PCM when given."""

    def __init__(
        self,
        outbound: NDArray[np.int16] | None = None,
        on_leg_ended: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._on_leg_ended = on_leg_ended
        self._end_tasks: list[asyncio.Task[None]] = []
        self.received = bytearray()
        self.events: list[LegEvent] = []
        self._echo: deque[bytes] = deque()
        self._outbound = outbound
        self._out_pos = 0
        self.pulls = 0
        self.changed = asyncio.Event()

    def deliver(self, frame: bytes, now: float) -> None:
        assert len(frame) == FRAME * 2
        self.received += frame
        self._echo.append(frame)

    def pull(self, now: float) -> bytes | None:
        self.pulls += 1
        if self._outbound is not None:
            chunk = self._outbound[self._out_pos : self._out_pos + FRAME]
            self._out_pos += FRAME
            return chunk.tobytes() if len(chunk) == FRAME else None
        return self._echo.popleft() if self._echo else None

    def leg_event(self, event: LegEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, LegEnded) and self._on_leg_ended is not None:
            # as the bridge does: end the call on the loop, outside the leg's call stack
            self._end_tasks.append(asyncio.ensure_future(self._on_leg_ended()))

    def received_pcm(self) -> NDArray[np.int16]:
        return np.frombuffer(bytes(self.received), dtype=np.int16)

    def digits(self) -> str:
        return "".join(e.digit for e in self.events if isinstance(e, DtmfReceived))

    def ended(self) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, LegEnded)]

    async def wait_for(self, predicate: object, timeout: float = 10.0) -> None:
        assert callable(predicate)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out; events so far: {self.events}")
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.1))
            except TimeoutError:
                pass


class PcmSourceTrack(MediaStreamTrack):
    """An aiortc audio track playing `pcm` (mono 48 kHz) in paced 20 ms frames, then silence;
    it records nothing, and stops being live on `stop()`."""

    kind = "audio"

    def __init__(self, pcm: NDArray[np.int16]) -> None:
        super().__init__()
        self._pcm = pcm
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self._pcm[self._n * FRAME : (self._n + 1) * FRAME]
        data = np.zeros(FRAME, dtype=np.int16)
        data[: len(chunk)] = chunk
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = RATE
        frame.pts = self._n * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


def frame_from(frame: AudioFrame) -> NDArray[np.int16]:
    """Mono int16 samples of a decoded aiortc frame (first channel)."""
    raw = np.asarray(frame.to_ndarray(), dtype=np.int16)
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return raw[0]
    return raw.reshape(-1, channels)[:, 0]


@dataclass
class Harness:
    """A gateway HTTP server on loopback with the WebRTC routes and a test call manager."""

    service: WebRtcService
    base_url: str
    sinks: dict[str, EchoSink] = field(default_factory=dict)
    legs: dict[str, WebRtcLeg] = field(default_factory=dict)
    infos: list[OfferInfo] = field(default_factory=list)


@asynccontextmanager
async def gateway_server(
    api_token: str = "",
    cors_origins: tuple[str, ...] = (),
    outbound: NDArray[np.int16] | None = None,
    connect_timeout: float = 20.0,
) -> AsyncIterator[Harness]:
    """Run the WebRTC routes on 127.0.0.1:<free port> with an echo sink per call."""
    settings = Settings(
        http_listen="127.0.0.1:0", api_token=Secret(api_token), cors_origins=list(cors_origins)
    )
    counter = 0
    harness: Harness

    async def create_call(leg: WebRtcLeg, info: OfferInfo) -> str:
        nonlocal counter
        counter += 1
        call_id = f"call-{counter}"
        sink = EchoSink(outbound, on_leg_ended=leg.aclose)
        leg.attach(sink)
        harness.sinks[call_id] = sink
        harness.legs[call_id] = leg
        harness.infos.append(info)
        return call_id

    async def hangup(call_id: str) -> None:
        await harness.legs[call_id].aclose()

    service = WebRtcService(
        settings,
        create_call,
        hangup,
        include_loopback_candidates=True,
        ice_addresses=["127.0.0.1"],
        connect_timeout=connect_timeout,
    )
    app = web.Application(middlewares=[error_middleware])
    add_webrtc_routes(app, service)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    harness = Harness(service, f"http://127.0.0.1:{port}")
    try:
        yield harness
    finally:
        for leg in harness.legs.values():
            await leg.aclose()
        await runner.cleanup()


LOOPBACK_ONLY = IcePolicy(host_addresses=("127.0.0.1",))


class Client:
    """An aiortc peer that sends `pcm`, records what it hears, and has an `events` channel."""

    def __init__(self, pcm: NDArray[np.int16]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.source = PcmSourceTrack(pcm)
        self.pc.addTrack(self.source)
        self.channel = self.pc.createDataChannel("events")
        self.page_events: list[dict[str, object]] = []
        self.channel.on("message", lambda m: self.page_events.append(json.loads(m)))
        self.heard: list[NDArray[np.int16]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: object) -> None:
        self._tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track: object) -> None:
        while True:
            try:
                frame = await track.recv()  # type: ignore[attr-defined]
            except MediaStreamError:
                return
            self.heard.append(frame_from(frame))

    async def offer_sdp(self) -> str:
        await pregather(self.pc, LOOPBACK_ONLY)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    def heard_pcm(self) -> NDArray[np.int16]:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
