"""The media-port interface: how audio and media events cross between a call leg and the bridge.

A leg (SIP/RTP or WebRTC) terminates the caller's media. The bridge (the Call) connects it to the
Realtime session. They meet here, in two small halves:

* `MediaPort` is implemented by each leg. It tells the bridge the leg's native audio format and
  frame size, accepts call-control actions that concern media (DTMF out, close), and hands over
  leg events (`LegEvent` subclasses below).
* `MediaSink` is implemented by the bridge and given to the leg at start. The leg *pushes* caller
  audio into `deliver()` one frame at a time, and *pulls* audio for the caller from `pull()` when
  its pacer says a frame is due (the SIP leg on the shared media clock, the WebRTC leg from
  aiortc's sender). A pull that returns None means "nothing to play": the leg sends silence or
  comfort noise, so NAT bindings and trunk timers stay alive.

Frames are exactly `frame_ms` of audio in `native` format: G.711 bytes for a SIP leg that can pass
G.711 through, or little-endian PCM16 bytes at the leg's rate (48 kHz for WebRTC Opus).
Everything is called on the event loop thread; nothing here blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from gateway.media.format import AudioFormat

# --- events from a leg to the bridge (past tense, as in aioquic)


@dataclass(frozen=True, slots=True)
class LegEvent:
    """Base class of everything a leg reports."""


@dataclass(frozen=True, slots=True)
class DtmfReceived(LegEvent):
    """A DTMF digit from the caller. `source`: rfc4733, sip_info, inband or datachannel."""

    digit: str
    source: str
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class MediaStarted(LegEvent):
    """The first caller media arrived (or arrived again after an SSRC change)."""


@dataclass(frozen=True, slots=True)
class MediaStopped(LegEvent):
    """Caller media stopped arriving (timeout) without the call ending."""


@dataclass(frozen=True, slots=True)
class HoldChanged(LegEvent):
    """The caller put the call on hold (sendonly/inactive) or resumed it."""

    on_hold: bool


@dataclass(frozen=True, slots=True)
class FormatChanged(LegEvent):
    """The leg's native format or frame size changed (re-INVITE with another codec/ptime)."""

    native: AudioFormat
    frame_ms: int


@dataclass(frozen=True, slots=True)
class TransferProgress(LegEvent):
    """Progress of a blind transfer (SIP REFER/NOTIFY sipfrag status)."""

    status: int
    final: bool


@dataclass(frozen=True, slots=True)
class LegEnded(LegEvent):
    """The far end hung up, cancelled, or the leg failed. `reason` is a short bounded token."""

    reason: str


class MediaSink(Protocol):
    """The bridge's half, given to a leg at start."""

    def deliver(self, frame: bytes, now: float) -> None:
        """One `frame_ms` frame of caller audio in the leg's native format."""

    def pull(self, now: float) -> bytes | None:
        """One `frame_ms` frame for the caller in native format, or None for silence."""

    def leg_event(self, event: LegEvent) -> None:
        """A leg event; the bridge handles it on the loop, never inside the leg's call stack."""


class MediaPort(ABC):
    """A call leg's media, as the bridge sees it. Implemented by the SIP and WebRTC legs.

    Leg events raised before `attach()` (a BYE right after the ACK, a DTMF digit while the call
    starts) are held and delivered, in order, when the sink is attached: none is ever lost.
    Subclasses call `super().__init__()`, report events with `_emit()` and, in `attach()`, call
    `_attach_sink()` first."""

    leg: str  # "sip" or "webrtc": a bounded metrics label
    native: AudioFormat
    frame_ms: int

    def __init__(self) -> None:
        self._sink: MediaSink | None = None
        self._held_events: list[LegEvent] | None = []  # None once the leg is closed

    @abstractmethod
    def attach(self, sink: MediaSink) -> None:
        """Start moving media to and from `sink`. Called once, after the call is answered."""

    def _attach_sink(self, sink: MediaSink) -> None:
        """Set the sink, then deliver the events held until now."""
        if self._sink is not None:
            raise RuntimeError("attach() called twice")
        self._sink = sink
        held, self._held_events = self._held_events, []
        for event in held or ():
            sink.leg_event(event)

    def _emit(self, event: LegEvent) -> None:
        """Report a leg event to the sink, or hold it until `attach()`; dropped once closed."""
        if self._sink is not None:
            self._sink.leg_event(event)
        elif self._held_events is not None:
            self._held_events.append(event)

    def _detach_sink(self) -> None:
        """On close: forget the sink (the call holds the leg, never the reverse) and stop
        holding events."""
        self._sink = None
        self._held_events = None

    @abstractmethod
    def send_dtmf(self, digits: str) -> None:
        """Send DTMF toward the caller (RFC 4733 on SIP, data channel on WebRTC)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop media and free the port, socket and tasks. Safe to call twice."""

    @property
    def g711_passthrough(self) -> AudioFormat | None:
        """The G.711 format frames are in when the leg carries G.711, else None."""
        return self.native if self.native.encoding != "pcm16" else None
