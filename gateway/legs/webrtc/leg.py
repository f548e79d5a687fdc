"""The WebRTC call leg: an aiortc RTCPeerConnection seen by the bridge as a `MediaPort`.

Native format: PCM16 mono at 48 kHz in 20 ms frames (960 samples, 1920 bytes).

* Inbound: a task reads the remote audio track (aiortc's decoded frames: s16 stereo 48 kHz for
  Opus, s16 mono 8 kHz for G.711), downmixes to mono, resamples to 48 kHz when needed, cuts
  exact 20 ms frames and hands them to `sink.deliver()`.
* Outbound: `_OutboundTrack.recv()` is what aiortc's sender awaits for every frame. It waits for
  the absolute deadline start + n·20 ms on the loop clock (a `DeadlineGrid`), then pulls one
  frame from `sink.pull()` (None: silence).
* The `events` data channel, opened by the page, carries JSON both ways: page → gateway
  `{"type": "dtmf", "digit": "5"}` and `{"type": "hangup"}`; gateway → page whatever
  `send_event()` is given (transcript deltas, agent state, the call id) and DTMF sent with
  `send_dtmf()` as `{"type": "dtmf", "digits": "123"}`.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from numpy.typing import NDArray
from telcodecs import Resampler

from gateway import metrics
from gateway.errors import BadOffer, CallRejected, NoFreePort
from gateway.logs import get_logger
from gateway.media.format import PCM16_48K
from gateway.media.grid import DeadlineGrid
from gateway.media.port import DtmfReceived, LegEnded, MediaPort, MediaSink, MediaStarted
from gateway.webrtc.ice import IcePolicy, consent_expired, pregather
from gateway.webrtc.signalling import preferred_codecs, valid_digit

log = get_logger("webrtc.leg")

RATE = PCM16_48K.rate
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = PCM16_48K.frame_bytes(FRAME_MS)
_FRAME_S = FRAME_MS / 1000
_SILENCE = bytes(FRAME_BYTES)
_TIME_BASE = fractions.Fraction(1, RATE)
# 200 ms (10 frames) overdue is a stall: the pacer skips ahead instead of bursting to catch up
_MAX_BEHIND = 9
_MAX_PAGE_MESSAGE = 1024
_MAX_PENDING_EVENTS = 256
_MAX_CHANNEL_BUFFER = 1 << 20
EVENTS_CHANNEL = "events"

_FRAMES_IN = metrics.RTP_PACKETS.labels(direction="in")
_FRAMES_OUT = metrics.RTP_PACKETS.labels(direction="out")


class _OutboundTrack(MediaStreamTrack):
    """Audio toward the browser, paced against absolute 20 ms deadlines on the loop clock."""

    kind = "audio"

    def __init__(self, leg: WebRtcLeg) -> None:
        super().__init__()
        self._leg = leg
        self._grid: DeadlineGrid | None = None
        self._n = 0  # frames sent: the pts runs on over a skip, as it did before the grid

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        grid = self._grid
        if grid is None:
            self._grid = grid = DeadlineGrid(_FRAME_S, _MAX_BEHIND, resume_behind=0, t0=now)
        else:
            deadline = grid.deadline
            if deadline > now:
                await asyncio.sleep(deadline - now)
                now = loop.time()
            metrics.RTP_SEND_LATENESS.observe(max(0.0, now - deadline))
            grid.due(now)  # the loop stalled: skip ahead, do not burst
        if self.readyState != "live":
            raise MediaStreamError
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._leg._pull(now))
        frame.sample_rate = RATE
        frame.pts = self._n * FRAME_SAMPLES
        frame.time_base = _TIME_BASE
        self._n += 1
        grid.advance()
        _FRAMES_OUT.inc()
        return frame


class WebRtcLeg(MediaPort):
    """One browser call. Build it, `await accept(offer_sdp)` for the answer, then `attach()`.

    `on_ended` (optional) is called once with the reason when the leg ends for any cause,
    including `aclose()`; the HTTP side uses it to forget the call's resource.
    """

    leg = "webrtc"
    native = PCM16_48K
    frame_ms = FRAME_MS

    def __init__(
        self,
        policy: IcePolicy,
        *,
        connect_timeout: float = 20.0,
        on_ended: Callable[[WebRtcLeg, str], None] | None = None,
    ) -> None:
        super().__init__()
        self.call_id: str | None = None
        #: the body of the page's pagehide beacon (gateway.webrtc.routes), set with call_id
        self.hangup_secret = ""
        self.codec: str | None = None
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._on_ended = on_ended
        self._pc = RTCPeerConnection(policy.configuration())
        self._track = _OutboundTrack(self)
        self._channel: Any = None
        self._pending_events: deque[str] = deque(maxlen=_MAX_PENDING_EVENTS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbuf = bytearray()
        self._resampler: Any = None
        self._media_started = False
        self._pull_failed = False
        self._connected = False
        self._ended: str | None = None
        self._closed = False
        self._pc.on("track", self._on_track)
        self._pc.on("datachannel", self._on_datachannel)
        self._pc.on("connectionstatechange", self._on_connection_state)

    # --- signalling

    async def accept(self, offer_sdp: str) -> str:
        """Apply the offer, gather candidates (no trickle) and return the answer SDP.

        Raises BadOffer when aiortc cannot answer the offer, CallRejected(503) when no UDP
        port is free. The caller must `aclose()` the leg on failure.
        """
        transceiver = self._pc.addTransceiver(self._track, direction="sendrecv")
        transceiver.setCodecPreferences(preferred_codecs())
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError, InternalError...
            raise BadOffer(f"the offer cannot be answered: {_short(exc)}") from None
        try:
            await pregather(self._pc, self._policy)
        except NoFreePort:
            raise CallRejected(
                503, "no free UDP port for media", retry_after=5, reason="no_port"
            ) from None
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)
        codecs = transceiver._codecs
        self.codec = codecs[0].mimeType.split("/", 1)[1].lower() if codecs else None
        self._spawn(self._watch_connect())
        return str(self._pc.localDescription.sdp)

    @property
    def ended(self) -> str | None:
        """Why the leg ended (remote_hangup, ice_failed, closed), or None while it lives."""
        return self._ended

    @property
    def connection_state(self) -> str:
        """aiortc's connection state: new, connecting, connected, failed or closed."""
        return str(self._pc.connectionState)

    # --- MediaPort

    def attach(self, sink: MediaSink) -> None:
        """Start moving media to and from `sink`; leg events raised before now follow."""
        self._attach_sink(sink)

    def send_dtmf(self, digits: str) -> None:
        """DTMF toward the caller: a data-channel message the page turns into tones."""
        self.send_event({"type": "dtmf", "digits": digits})

    async def aclose(self) -> None:
        """Close the peer connection and end the tasks; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._track.stop()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._pc.close()
        self._pending_events.clear()
        self._inbuf.clear()
        self._report_end("closed", notify_sink=False)
        self._detach_sink()

    # --- events to the page

    def send_event(self, event: dict[str, Any]) -> None:
        """Send a JSON event to the page on the `events` channel; buffered until it opens."""
        if self._closed:
            return
        text = json.dumps(event, separators=(",", ":"))
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            if channel.bufferedAmount > _MAX_CHANNEL_BUFFER:
                log.warning("page_event_dropped", call_id=self.call_id, reason="backlog")
                return
            channel.send(text)
        else:
            self._pending_events.append(text)

    # --- aiortc callbacks

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_inbound(track))

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != EVENTS_CHANNEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_page_message)
        if channel.readyState == "open":
            self._flush_events()
        else:
            channel.on("open", self._flush_events)

    def _flush_events(self) -> None:
        channel = self._channel
        while self._pending_events and channel is not None and channel.readyState == "open":
            channel.send(self._pending_events.popleft())

    def _on_page_message(self, message: object) -> None:
        if not isinstance(message, str) or len(message) > _MAX_PAGE_MESSAGE:
            return
        try:
            obj = json.loads(message)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "dtmf":
            digit = valid_digit(obj.get("digit"))
            if digit is not None:
                self._emit(DtmfReceived(digit, "datachannel"))
        elif kind == "hangup":
            self._report_end("remote_hangup")

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._connected = True
        elif state == "failed":
            if not self._connected and self._ended is None:  # a set-up that never connected
                log.warning("webrtc_connect_failed", call_id=self.call_id, reason="ice_failed")
            self._report_end("ice_failed")
        elif state == "closed" and not self._closed:
            self._report_end(self._remote_end_reason())

    def _remote_end_reason(self) -> str:
        # aiortc closes (not fails) the connection when ICE consent is lost
        return "ice_failed" if consent_expired(self._pc) else "remote_hangup"

    # --- tasks

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._connect_timeout)
        if not self._connected:
            log.warning(
                "webrtc_connect_failed",
                call_id=self.call_id,
                reason="ice_timeout",
                state=str(self._pc.connectionState),
                timeout_s=self._connect_timeout,
            )
            self._report_end("ice_failed")

    async def _read_inbound(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                if not self._closed:
                    self._report_end(self._remote_end_reason())
                return
            sink = self._sink
            if sink is None or not isinstance(frame, AudioFrame):  # keep aiortc's queue empty
                continue
            _FRAMES_IN.inc()
            pcm = self._mono48k(frame)
            now = loop.time()
            if not self._media_started:
                self._media_started = True
                sink.leg_event(MediaStarted())
            if not self._inbuf and len(pcm) == FRAME_BYTES:  # Opus at 20 ms: the usual case
                self._deliver(sink, pcm, now)
                continue
            self._inbuf += pcm
            while len(self._inbuf) >= FRAME_BYTES:
                chunk = bytes(self._inbuf[:FRAME_BYTES])
                del self._inbuf[:FRAME_BYTES]
                self._deliver(sink, chunk, now)

    def _deliver(self, sink: MediaSink, frame: bytes, now: float) -> None:
        try:
            sink.deliver(frame, now)
        except Exception:
            log.exception("sink_deliver_failed", call_id=self.call_id)

    def _mono48k(self, frame: AudioFrame) -> bytes:
        """An aiortc-decoded frame as PCM16 mono 48 kHz bytes."""
        raw = frame.to_ndarray()
        if raw.dtype != np.int16:
            raise ValueError(f"unexpected decoded audio format {frame.format.name}")
        samples: NDArray[np.int16] = np.asarray(raw, dtype=np.int16)
        channels = len(frame.layout.channels)
        mono: NDArray[np.int16]
        if channels == 1:
            mono = samples.reshape(-1)
        else:
            pairs = samples if frame.format.is_planar else samples.reshape(-1, channels).T
            mono = ((pairs[0].astype(np.int32) + pairs[1]) >> 1).astype(np.int16)
        if frame.sample_rate != RATE:
            if self._resampler is None or self._resampler.src_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, RATE)
            mono = self._resampler.process(mono)
        return mono.tobytes()

    def _pull(self, now: float) -> bytes:
        sink = self._sink
        if sink is None or self._closed:
            return _SILENCE
        try:
            data = sink.pull(now)
        except Exception:
            if not self._pull_failed:
                self._pull_failed = True
                log.exception("sink_pull_failed", call_id=self.call_id)
            return _SILENCE
        if data is None:
            return _SILENCE
        if len(data) != FRAME_BYTES:
            data = data[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
        return data

    # --- leg events

    def _report_end(self, reason: str, *, notify_sink: bool = True) -> None:
        if self._ended is not None:
            return
        self._ended = reason
        if notify_sink:
            self._emit(LegEnded(reason))
        if self._on_ended is not None:
            callback, self._on_ended = self._on_ended, None
            callback(self, reason)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
