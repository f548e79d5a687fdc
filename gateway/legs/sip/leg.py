"""The SIP call leg: a SIP dialog (gateway.sip) plus its RTP stream (gateway.rtp), as a MediaPort.

`SipLeg` is serviced by the process's shared media clock: on each tick it takes one frame from
the jitter buffer to the bridge, pulls one frame from the bridge's playout queue and sends it,
recording how late the packet left against its deadline. Signalling actions (BYE, REFER) go
through `SipControl`, which drives the sans-I/O endpoint and flushes its transport.

The leg's `native` format is the codec's: G.711 bytes at 8 kHz (the bridge passes them on when
the Realtime session takes the same law), PCM16 at 16 kHz for G.722 and at 48 kHz for Opus. A
wideband leg decodes each frame the session reads and encodes each frame it sends with its own
streaming codec (gateway/media/wideband.py); the bridge resamples straight to the session's
rate, so no 8 kHz step is on a wideband call's path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

from gateway.errors import DtmfError
from gateway.logs import get_logger
from gateway.media.clock import MediaClock, Outbox
from gateway.media.format import PCMA_8K, PCMU_8K, AudioFormat
from gateway.media.port import (
    DtmfReceived,
    FormatChanged,
    HoldChanged,
    LegEnded,
    MediaPort,
    MediaSink,
    MediaStarted,
)
from gateway.media.wideband import WIDEBAND_RATES, WidebandCodec, codec_for, wants_fec
from gateway.rtp.dtmf import DTMF_EVENTS, DtmfDigitReceived
from gateway.rtp.session import COMFORT_NOISE, MediaTimedOut, RtpEventType, RtpSession
from gateway.rtp.session import MediaStarted as RtpMediaStarted
from gateway.rtp.transport import RtpEndpoint
from gateway.sip.sdp import RemoteMedia

log = get_logger("leg.sip")


class SipControl(Protocol):
    """Signalling actions a SIP leg needs; implemented by the SIP call service."""

    def hangup(self, handle: int) -> None: ...
    def refer(self, handle: int, target_uri: str) -> None: ...


class SipLeg(MediaPort):
    """One SIP call's media: RTP in and out on the shared media clock."""

    leg = "sip"

    def __init__(
        self,
        handle: int,
        rtp: RtpEndpoint,
        control: SipControl,
        clock_for: Callable[[int], MediaClock],
        *,
        media_timeout: float | None = 30.0,
        remote: RemoteMedia | None = None,
    ) -> None:
        super().__init__()
        self.handle = handle
        self.media_timeout = media_timeout  # no-RTP timeout outside hold (None: off)
        self.rtp = rtp
        self.session = rtp.session
        self._control = control
        self._clock_for = clock_for
        self.native = native_format(self.session.codec)
        self.frame_ms = self.session.ptime_ms
        # Opus: FEC in what we send when the far end's fmtp asks for it (RFC 7587 §7)
        self._fec = remote is not None and wants_fec(remote.fmtp)
        self._codec: WidebandCodec | None = codec_for(
            self.session.codec, self.frame_ms, fec=self._fec
        )
        self._clock: MediaClock | None = None
        self._on_hold = False
        self.remote_ended = False
        self._closed = False
        self._dtmf_queue: list[str] = []
        rtp.on_event = self._rtp_event
        self._send = rtp.send  # bound once: the clock calls it 50 times a second
        self._poll = rtp.poll

    # --- MediaPort

    def attach(self, sink: MediaSink) -> None:
        self._attach_sink(sink)  # events raised before now (a BYE right after the ACK) follow
        if self._closed:
            return
        self._clock = self._clock_for(self.frame_ms)
        self._clock.add(self)
        self.rtp.start_polling()  # the tick reads the RTP socket from now on (issue 20)

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        """One packet time: caller audio to the bridge, one packet for the caller into `outbox`
        (the clock sends the slot's packets together and records their lateness)."""
        self._poll(now)  # what arrived since the last tick, before its frame is taken
        try:
            self._tick(now, outbox)
        except BaseException:  # the clock drops a ticker that raises: hand the socket back
            self.rtp.stop_polling()
            raise

    def _tick(self, now: float, outbox: Outbox) -> None:
        sink = self._sink
        if sink is None:
            return
        frame = self.session.read_frame(now)
        codec = self._codec
        if frame is not None and not self._on_hold:
            if codec is not None:
                if frame is COMFORT_NOISE:  # RFC 3389: noise at the CN's level, at our rate
                    frame = self.session.comfort_noise_pcm(codec.frame_samples).tobytes()
                elif frame:
                    frame = codec.decode(frame).tobytes()
                else:  # lost: rebuilt from the next packet's FEC if it is here, else concealed
                    frame = codec.decode(frame, self.session.next_payload()).tobytes()
            sink.deliver(frame, now)
        payload = sink.pull(now)
        if codec is not None:  # silence is encoded too: the encoder's state runs on
            pcm = np.frombuffer(payload, "<i2") if payload is not None else None
            payload = codec.encode(pcm if pcm is not None else _silence(codec.frame_samples))
        if self._dtmf_queue and not self.session.sending_dtmf:
            self._start_next_dtmf()
        datagram = self.session.packetize(payload, now)
        if datagram is not None:
            outbox.add(self._send, datagram)

    def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 digits toward the caller (ValueError if none was negotiated)."""
        if self.session.dtmf_pt is None:
            raise ValueError("the caller negotiated no telephone-event")
        bad = [d for d in digits if d not in DTMF_EVENTS]
        if bad or not digits:
            raise ValueError(f"not DTMF digits: {digits!r}")
        self._dtmf_queue.extend(digits)

    def _start_next_dtmf(self) -> None:
        digit = self._dtmf_queue.pop(0)
        with contextlib.suppress(DtmfError):
            self.session.start_dtmf(digit, 100)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._clock is not None:
            self._clock.remove(self)
            self.rtp.stop_polling()
        self._detach_sink()
        if not self.remote_ended:
            with contextlib.suppress(Exception):
                self._control.hangup(self.handle)
        await self.rtp.aclose()

    # --- from the RTP session and the SIP dialog

    def _rtp_event(self, event: RtpEventType) -> None:
        if isinstance(event, DtmfDigitReceived):
            self._emit(DtmfReceived(event.digit, "rfc4733", event.duration_ms))
        elif isinstance(event, RtpMediaStarted):
            self._emit(MediaStarted())
        elif isinstance(event, MediaTimedOut) and not self._on_hold:
            self._emit(LegEnded("media_timeout"))

    def remote_hangup(self, reason: str) -> None:
        """The dialog ended from the far side (BYE) or by the endpoint (timeouts)."""
        self.remote_ended = True
        self._emit(LegEnded(reason))

    def dtmf_info(self, digit: str, duration_ms: int) -> None:
        self._emit(DtmfReceived(digit, "sip_info", duration_ms))

    def media_updated(self, media: RemoteMedia, now: float) -> None:
        """A re-INVITE/UPDATE (or the answer) set the media: hold/resume, address, codec or
        ptime."""
        old = (self.session.codec, self.frame_ms)
        codec, ptime, on_hold = media.codec, media.ptime, media.on_hold
        apply_remote(self.session, media)
        if media.rtcp_mux:  # RFC 5761: our RTCP socket is no longer needed
            self.rtp.release_rtcp()
        timeout = None if on_hold else self.media_timeout
        if timeout != self.session.media_timeout:  # hold pauses it, resume (or answer) restarts
            self.session.set_media_timeout(timeout, now)
            self.rtp.session_changed()
        fec = wants_fec(media.fmtp)
        if (codec, ptime) != old or fec != self._fec:
            self.native = native_format(codec)
            # a new codec: a new coder's state (the jitter buffer restarted with the new stream)
            self._fec = fec
            self._codec = codec_for(codec, ptime, fec=fec)
            if ptime != self.frame_ms and self._clock is not None:
                self._clock.remove(self)
                self.frame_ms = ptime
                self._clock = self._clock_for(ptime)
                self._clock.add(self)
            self.frame_ms = ptime
            self._emit(FormatChanged(self.native, ptime))
        if on_hold != self._on_hold:
            self._on_hold = on_hold
            self._emit(HoldChanged(on_hold))

    def stats_summary(self) -> dict[str, object]:
        """RTP figures for the end-of-call log line."""
        s = self.session.stats
        return {
            "rtp_in": s.packets_in,
            "rtp_out": s.packets_out,
            "rtp_lost": s.lost,
            "rtp_late": s.late,
            "jitter_ms": round(s.jitter_seconds * 1000, 2),
            "rtt_ms": round(s.rtt_seconds * 1000, 1) if s.rtt_seconds is not None else None,
        }


def native_format(codec: str) -> AudioFormat:
    """The leg's audio format for an RTP codec: G.711 as is, a wideband codec's PCM16 rate."""
    if codec == "pcma":
        return PCMA_8K
    if codec in WIDEBAND_RATES:
        return AudioFormat("pcm16", WIDEBAND_RATES[codec])
    return PCMU_8K


_SILENCE: dict[int, np.ndarray] = {}


def _silence(samples: int) -> np.ndarray:
    pcm = _SILENCE.get(samples)
    if pcm is None:
        pcm = _SILENCE[samples] = np.zeros(samples, dtype=np.int16)
    return pcm


def apply_remote(session: RtpSession, media: RemoteMedia) -> None:
    """Point `session` at the remote media an offer or answer describes: the codec with its
    negotiated payload type (Opus' is dynamic), telephone-event at its own clock, and the SRTP
    keys (new ones re-key it, none make it plain RTP)."""
    session.update_remote(
        media.remote_rtp,
        media.codec,
        media.dtmf_payload_type,
        media.ptime,
        rtcp_addr=media.remote_rtcp,
        payload_type=media.payload_type,
        dtmf_clock=media.dtmf_clock_rate,
        cn_pt=media.cn_payload_type,
    )
    session.set_srtp(media.local_crypto, media.crypto)
