"""`RtpSession`: the sans-I/O RTP/RTCP endpoint of one call leg (G.711, G.722 or Opus, plus
RFC 4733).

No sockets, no asyncio, no clock of its own: every method takes `now` (loop.time() seconds).

Receive: `receive_datagram(data, addr, now)` never raises. Garbage, short packets, a wrong
version, an unknown payload type, duplicates and packets from a source not (yet) accepted are
dropped and counted in `stats.dropped[reason]`. Audio goes to the jitter buffer,
telephone-events to the DTMF receiver. `read_frame(now)` yields one ptime of payload per call:
G.711 bytes (concealed by the jitter buffer), or a G.722 or Opus payload (b"" when lost: the
leg's decoder conceals it). The session carries payloads, never decodes: the codecs live in
gateway/media/wideband.py. Clocks (RFC 3551 §4.5.2, RFC 7587): 8000 for G.711 and G.722 (whose
audio is 16 kHz), 48000 for Opus; Opus' payload type is the negotiated dynamic one.

Strict source and symmetric RTP (Asterisk's `strictrtp`, rtpengine's strict source; RFC 4961
in spirit, as SBCs do for NAT): RTP is sent to the SDP address until a source is learned, then
to that source. Which source the session learns:
- the exact address the SDP names, at once (even over another source: signalling is the
  authority on where the far end is);
- with `strict_source`, any other source only from the SDP's IP or the signalling source's IP
  (`signalling_ip`: a phone behind NAT) with any port (symmetric NAT); others: `wrong_source`;
- never while the learned source is still sending (a packet within `relatch_after` seconds):
  `competing_source`; after that silence (a NAT rebinding) a new source may take over;
- only after PROBATION_PACKETS consecutive packets (same SSRC, sequence numbers +1) from it;
  the packets before are dropped as `probation` (a sprayer hitting ports with stray packets
  never gets there).
RTCP is accepted from the learned source's IP (before one is learned: the SDP's or signalling's).
The receive fast path is untouched: all of this runs only for a packet from another address.

The no-RTP timeout (`media_timeout`) runs from the session's creation (the answer), not from
the first packet: a far end that never sends ends with MediaTimedOut. None (hold) pauses it;
`set_media_timeout` restarts it.

Send: the shared media clock calls `packetize(payload, now)` once per ptime. It returns the
datagram for `remote_addr`: the payload, silence when the payload is None, or an RFC 4733
packet while a digit queued with `start_dtmf()` is being sent. With comfort noise negotiated
(`cn_pt`, RFC 3389) and nothing to play, one CN packet starts the silence and then nothing is
sent (None) except a CN refresh every `cn_refresh` seconds; the timestamp runs on regardless.
CN is received whenever the SDP lists it (`cn_receive_pt`) but sent only with `send_cn` (an
explicit `cn_pt` sends). Received CN is not played as packets: `read_frame` renders the frames
of the gap it starts as comfort noise at its level (gateway.rtp.comfort_noise) until audio sent
after it plays.

RTCP (RFC 3550 §6): `get_timer()`/`handle_timer(now)` produce an SR (after we sent) or RR with
SDES CNAME about every `rtcp_interval` seconds (randomised 0.5-1.5x, §6.3.1), collected with
`rtcp_datagrams_to_send()`. `receive_rtcp()` takes the far end's reports: RTT from LSR/DLSR.

SRTP (RFC 3711, keyed by SDES `a=crypto`, RFC 4568): `set_srtp(local, remote)` makes every
datagram in and out go through an `SrtpContext` (gateway.rtp.srtp): unprotected first in
`receive_datagram`/`receive_rtcp`, protected last in `packetize` and the RTCP queue. A packet
that fails authentication or is a replay is dropped as `srtp_auth`/`srtp_replay`. Plain RTP
pays one attribute check per packet each way.

Events (`next_event()`): MediaStarted, RemoteLatched, SsrcChanged, DtmfDigitReceived,
MediaTimedOut.

Per packet cost matters (hundreds of calls per core, 50 packets/s each way per call):
`receive_datagram`, `packetize` and the jitter buffer's `push`/`pop` start with a fast path
for the common case that falls back to the general code for anything else and must give the
same results; tests/rtp/test_fast_paths.py runs both on the same streams and compares them.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from telcodecs import g711_silence

from gateway.errors import DtmfError, RtpParseError
from gateway.media.format import PTIME_MAX_MS, PTIME_MIN_MS
from gateway.rtp.comfort_noise import CN_LEVEL_MAX, cn_level, next_offset, noise_g711, noise_pcm16
from gateway.rtp.dtmf import DtmfDigitReceived, DtmfReceiver, DtmfSender, TelephoneEvent
from gateway.rtp.jitter import JitterBuffer, PacketJitterBuffer, ReceptionStats
from gateway.rtp.packet import RTP_FIXED_HEADER, RtpHeaderWriter, is_rtcp, parse_header
from gateway.rtp.rtcp import (
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    SdesChunk,
    compact_ntp,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from gateway.rtp.srtp import SRTP_DROP_REASONS, CryptoAttribute, SrtpContext

__all__ = [
    "CODEC_CLOCK_RATES",
    "CODEC_PAYLOAD_TYPES",
    "COMFORT_NOISE",
    "DROP_REASONS",
    "PROBATION_PACKETS",
    "Address",
    "DtmfDigitReceived",
    "MediaStarted",
    "MediaTimedOut",
    "RemoteLatched",
    "RtpEvent",
    "RtpSession",
    "RtpStats",
    "SsrcChanged",
]

Address = tuple[str, int]

#: Payload types of the codecs we carry: static ones (RFC 3551 table 4), and for Opus the dynamic
#: one we offer (the negotiation's is passed in)
CODEC_PAYLOAD_TYPES: Final = {"pcmu": 0, "pcma": 8, "g722": 9, "opus": 111}
#: RTP clock of each codec (RFC 3551 §4.5.2: G.722's is 8000 though it samples at 16 kHz)
CODEC_CLOCK_RATES: Final = {"pcmu": 8000, "pcma": 8000, "g722": 8000, "opus": 48000}
#: codecs whose payloads are whole packets (not one byte per RTP tick)
PACKET_CODECS: Final = frozenset({"opus"})
CN_PAYLOAD_TYPE: Final = 13
_G711: Final = frozenset({"pcmu", "pcma"})
#: what `read_frame` returns for a wideband codec's frame of comfort noise (compared by identity)
COMFORT_NOISE: Final = bytes(bytearray(b"comfort noise"))  # a distinct object, never interned
CLOCK_RATE: Final = 8000
#: sent when there is nothing to play and no payload was given: G.722's encoding of silence
#: (per tick), Opus' 20 ms CELT silence frame (TOC 0xF8: config 31, mono, one frame)
_G722_SILENCE: Final = 0xFA
_OPUS_SILENCE: Final = b"\xf8\xff\xfe"
#: Consecutive packets (same SSRC, sequence +1) a source must send before it is learned, unless
#: it is the exact SDP address. RFC 3550 A.1 asks 2 of a new SSRC, Asterisk's strictrtp 4; 3
#: costs a phone behind NAT 40 ms once, and one stray packet per port (a scanner) never passes.
PROBATION_PACKETS: Final = 3

#: Every `stats.dropped` key (bounded: safe as a metrics label).
DROP_REASONS: Final = (
    "short",
    "version",
    "padding",
    "csrc_overrun",
    "extension_overrun",
    "unknown_pt",
    "wrong_source",
    "competing_source",
    "probation",
    "duplicate",
    "late",
    "bad_sequence",
    "event_short",
    "rtcp_malformed",
    "rtcp_wrong_source",
    *SRTP_DROP_REASONS,
)


@dataclass(frozen=True, slots=True)
class RtpEvent:
    """Base class of the session's events."""


@dataclass(frozen=True, slots=True)
class MediaStarted(RtpEvent):
    """The first valid RTP arrived (again, after a MediaTimedOut)."""


@dataclass(frozen=True, slots=True)
class RemoteLatched(RtpEvent):
    """Outgoing RTP now goes to `addr`, the source of the received media."""

    addr: Address


@dataclass(frozen=True, slots=True)
class SsrcChanged(RtpEvent):
    """The far end's SSRC changed; the receive stream restarted."""

    old_ssrc: int
    new_ssrc: int


@dataclass(frozen=True, slots=True)
class MediaTimedOut(RtpEvent):
    """No RTP for `media_timeout` seconds (counted from the answer if none ever came)."""


# DtmfDigitReceived (from gateway.rtp.dtmf) is the fifth event type.
RtpEventType = MediaStarted | RemoteLatched | SsrcChanged | MediaTimedOut | DtmfDigitReceived


@dataclass(slots=True)
class RtpStats:
    """Counters of one session, as plain data. Counters only grow; the gauges at the end are
    refreshed from the jitter buffer and reports when `RtpSession.stats` is read."""

    packets_in: int = 0
    octets_in: int = 0
    packets_out: int = 0
    octets_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    lost: int = 0  # A.3 cumulative, summed over SSRCs
    late: int = 0
    duplicates: int = 0
    concealed_frames: int = 0
    silence_frames: int = 0
    played_frames: int = 0
    ssrc_changes: int = 0
    relatches: int = 0
    dtmf_received: int = 0
    dtmf_sent: int = 0
    # gauges
    jitter_seconds: float = 0.0
    target_delay_ms: float = 0.0
    rtt_seconds: float | None = None
    remote_fraction_lost: float | None = None
    remote_cumulative_lost: int | None = None
    remote_jitter_seconds: float | None = None


_NTP_BYE_REASON: Final = b"call ended"

#: `stats.dropped` key of each JitterBuffer.push result (PushResult values 0-4), None: kept
_PUSH_DROPS: Final = (None, "late", "duplicate", None, "bad_sequence")
_unpack_fixed_header: Final = RTP_FIXED_HEADER.unpack_from
_pack_fixed_header: Final = RTP_FIXED_HEADER.pack


class RtpSession:
    """One call leg's RTP stream and its RTCP (sans-I/O). See the module docstring."""

    def __init__(
        self,
        *,
        now: float,
        codec: str = "pcmu",
        remote_addr: Address | None = None,
        dtmf_pt: int | None = 101,
        ptime_ms: int = 20,
        ssrc: int | None = None,
        cname: str | None = None,
        cn_pt: int | None = None,
        send_cn: bool = False,
        rtcp_interval: float = 5.0,
        media_timeout: float | None = 30.0,
        relatch_after: float = 2.0,
        strict_source: bool = True,
        signalling_ip: str | None = None,
        wall_offset: float = 0.0,
        rng: random.Random | None = None,
        payload_type: int | None = None,
        dtmf_clock: int | None = None,
    ) -> None:
        self._rng = rng or random.Random()
        self.ssrc = ssrc if ssrc is not None else self._rng.getrandbits(32)
        self.cname = (cname or f"{self.ssrc:08x}@gateway").encode()
        self.rtcp_interval = rtcp_interval
        self.media_timeout = media_timeout
        self.relatch_after = relatch_after
        self.strict_source = strict_source
        self._signalling_ip = _normal_ip(signalling_ip) if signalling_ip else None
        self.wall_offset = wall_offset  # add to `now` to get Unix time (for NTP timestamps)
        self.cn_pt = cn_pt  # CN is sent with it (None: never)
        self.cn_receive_pt = cn_pt  # the far end's CN (RFC 3389), rendered as noise
        self.send_cn = send_cn or cn_pt is not None  # send CN when an SDP negotiates it
        self.cn_refresh = 5.0
        # a received CN's gap: its level (-dBov), its timestamp, the noise table's read offset
        self._cn_gap = False
        self._cn_level = CN_LEVEL_MAX
        self._cn_timestamp = 0
        self._cn_offset = 0
        self._stats = RtpStats()
        self._events: deque[RtpEventType] = deque()
        #: the queued events themselves: adapters test it (cheap) before draining next_event()
        self.pending_events = self._events
        #: set when input may have moved get_timer() earlier (DTMF, media start); adapters clear it
        self.timer_dirty = True
        self._rtcp_out: list[tuple[bytes, Address]] = []
        self._writer = RtpHeaderWriter(self.ssrc)
        self._ssrc_word = self._writer.ssrc  # the SSRC as sent (32 bits)
        # send state: random initial sequence number and timestamp (RFC 3550 §5.1)
        self._seq = self._rng.getrandbits(16)
        self._ts = self._rng.getrandbits(32)
        self._marker = True
        self._last_send = -1.0
        self._sent_since_report = False
        self._cn_sent_at: float | None = None
        # receive state
        self._remote_ssrc: int | None = None
        self._latched: Address | None = None
        self._latched_rtcp: Address | None = None
        self._last_rx = -1.0  # the last packet accepted from the learned source
        self._timeout_from = now  # the media timeout runs from here if no packet came since
        self._allowed_ips: frozenset[str] = frozenset()
        # the source on probation: address, SSRC, last sequence number, packets in a row
        self._candidate: Address | None = None
        self._candidate_ssrc = 0
        self._candidate_seq = 0
        self._candidate_count = 0
        #: the last address a packet was refused from (for the adapter's rate-limited log line)
        self.last_refused: Address | None = None
        self._media_started = False
        self._timed_out = False
        self._media_flowing = False  # _media_started and not _timed_out: the receive fast path
        # the send fast path applies: the DTMF sender is known inactive, the codec byte-per-tick
        self._dtmf_idle = True
        self._lost_prior = 0  # losses of earlier SSRCs
        self._lsr = 0  # compact NTP of the last SR received, and when (for DLSR)
        self._lsr_at = 0.0
        self._next_rtcp = now + rtcp_interval * self._rng.uniform(0.25, 0.75)
        self._closed = False
        self.remote_addr: Address | None = None
        self.remote_rtcp_addr: Address | None = None
        self._sdp_addr: Address | None = None
        self._sdp_source: Address | None = None  # _sdp_addr as a packet from it shows its source
        self._sdp_rtcp_addr: Address | None = None
        self._srtp: SrtpContext | None = None  # SRTP (RFC 3711): see set_srtp
        self._configure(codec, dtmf_pt, ptime_ms, payload_type, dtmf_clock)
        self._set_remote(remote_addr, None)

    # --- configuration

    def _configure(
        self,
        codec: str,
        dtmf_pt: int | None,
        ptime_ms: int,
        payload_type: int | None = None,
        dtmf_clock: int | None = None,
    ) -> None:
        if codec not in CODEC_PAYLOAD_TYPES:
            raise ValueError(f"unsupported codec {codec!r}: {', '.join(CODEC_PAYLOAD_TYPES)}")
        if not PTIME_MIN_MS <= ptime_ms <= PTIME_MAX_MS:
            raise ValueError(f"ptime {ptime_ms} ms: {PTIME_MIN_MS}-{PTIME_MAX_MS}")
        if payload_type is not None and not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type}: 0-127")
        self.codec = codec
        self.payload_type = CODEC_PAYLOAD_TYPES[codec] if payload_type is None else payload_type
        self.dtmf_pt = dtmf_pt
        self.ptime_ms = ptime_ms
        clock = CODEC_CLOCK_RATES[codec]
        self.clock_rate = clock
        self.frame_samples = clock * ptime_ms // 1000  # RTP ticks per frame
        self._stall_gap = 3.5 * ptime_ms / 1000  # a longer gap between sends: the clock stalled
        self._audio_word = 0x8000 | self.payload_type  # V=2 and PT: the header's first word
        self._packet_codec = codec in PACKET_CODECS
        if codec == "g722":
            self.silence_payload = bytes((_G722_SILENCE,)) * self.frame_samples
        elif self._packet_codec:
            self.silence_payload = _OPUS_SILENCE
        else:
            self.silence_payload = g711_silence(codec, self.frame_samples)
        # a packet codec's timestamp advances by the frame, not by its payload's length: its
        # ticks take the general send path (G.711's fast path stays as it is)
        self._dtmf_idle = not self._packet_codec
        self._cn_payload = b"\x7f"  # RFC 3389 §3: noise level -127 dBov, no spectrum
        old = getattr(self, "_jitter", None)
        self._jitter: JitterBuffer | PacketJitterBuffer
        if self._packet_codec:
            self._jitter = PacketJitterBuffer(ptime_ms, clock_rate=clock)
        else:
            self._jitter = JitterBuffer(codec, ptime_ms, clock_rate=clock)
        if old is not None:  # a new codec or ptime: same source, playout restarts
            self._jitter.started = old.started
            self._jitter.reset()
            reception = old.reception
            if reception.clock_rate != clock:  # A.8 jitter is kept in timestamp units
                reception.jitter *= clock / reception.clock_rate
                reception.clock_rate = clock
                reception._prev_arrival = -1.0
            self._jitter.reception = reception
            self._jitter.stats = old.stats
        # RFC 4733 §2.1: events on the telephone-event's clock (the codec's unless negotiated)
        self.dtmf_clock = dtmf_clock or clock
        self._dtmf_tx = DtmfSender(self.dtmf_clock, ptime_ms)
        old_rx = getattr(self, "_dtmf_rx", None)
        if old_rx is None or old_rx.clock_rate != self.dtmf_clock:
            self._dtmf_rx = DtmfReceiver(self.dtmf_clock)

    def _set_remote(self, addr: Address | None, rtcp_addr: Address | None) -> None:
        self._sdp_addr = addr
        self._sdp_rtcp_addr = rtcp_addr or (addr and (addr[0], addr[1] + 1))
        self._latched = self._latched_rtcp = None
        self._candidate = None
        self.remote_addr = addr
        self.remote_rtcp_addr = self._sdp_rtcp_addr
        self._sdp_source = addr and (_normal_ip(addr[0]), addr[1])
        allowed = {ip for ip in (addr and _normal_ip(addr[0]), self._signalling_ip) if ip}
        # an IPv4 peer as a dual-stack socket reports it (RFC 4291 §2.5.5.2)
        allowed |= {f"::ffff:{ip}" for ip in allowed if "." in ip}
        self._allowed_ips = frozenset(allowed)

    def update_remote(
        self,
        addr: Address | None,
        codec: str,
        dtmf_pt: int | None,
        ptime_ms: int,
        *,
        rtcp_addr: Address | None = None,
        cn_pt: int | None = None,
        payload_type: int | None = None,
        dtmf_clock: int | None = None,
    ) -> None:
        """Apply a new SDP (re-INVITE/UPDATE). A new address (RTP or RTCP) drops the learned
        source and becomes the one expected; the same address keeps it (a session refresh).
        A new codec, payload type, ptime or telephone-event clock restarts playout. `addr`
        None stops sending."""
        rtcp = rtcp_addr or (addr and (addr[0], addr[1] + 1))
        if (addr, rtcp) != (self._sdp_addr, self._sdp_rtcp_addr):
            self._set_remote(addr, rtcp_addr)
        self.cn_receive_pt = cn_pt
        self.cn_pt = cn_pt if self.send_cn else None
        pt = CODEC_PAYLOAD_TYPES.get(codec) if payload_type is None else payload_type
        clock = dtmf_clock or CODEC_CLOCK_RATES.get(codec)
        if (codec, ptime_ms, pt, clock) != (
            self.codec,
            self.ptime_ms,
            self.payload_type,
            self.dtmf_clock,
        ):
            self._configure(codec, dtmf_pt, ptime_ms, payload_type, dtmf_clock)
            self._marker = True
        self.dtmf_pt = dtmf_pt
        if dtmf_pt is None:
            self._dtmf_tx.clear()

    def set_srtp(self, local: CryptoAttribute | None, remote: CryptoAttribute | None) -> None:
        """Key SRTP/SRTCP (RFC 4568): `local` for what we send, `remote` for what we receive;
        new keys re-key (RFC 4568 §7.1.4); None for either turns SRTP off (plain RTP)."""
        if local is None or remote is None:
            self._srtp = None
        elif self._srtp is None:
            self._srtp = SrtpContext(local, remote)
        else:
            self._srtp.rekey(local, remote)

    @property
    def srtp(self) -> SrtpContext | None:
        """The SRTP context, None for plain RTP."""
        return self._srtp

    def _srtp_in(self, data: bytes) -> bytes | None:
        """The RTP inside an SRTP datagram (SRTCP under rtcp-mux passes as it is, to
        receive_rtcp), or None: dropped and counted (authentication, replay)."""
        assert self._srtp is not None
        if is_rtcp(data):
            return data
        clear = self._srtp.unprotect(data)
        if clear is None:
            stats = self._stats
            stats.packets_in += 1
            stats.octets_in += len(data)
            stats.dropped[self._srtp.failure] += 1
        return clear

    def set_media_timeout(self, seconds: float | None, now: float) -> None:
        """Change or disable (None, e.g. on hold) the no-RTP timeout, counted afresh from `now`
        (the timer may move earlier: `timer_dirty`)."""
        self.media_timeout = seconds
        self._timeout_from = now
        self.timer_dirty = True

    # --- receive

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram from the RTP socket. Never raises."""
        if self._srtp is not None:  # the one check plain RTP pays
            clear = self._srtp_in(data)
            if clear is None:
                return
            data = clear
        # Fast path for nearly every packet: RFC 3550 §5.1 V=2 without padding, extension or
        # CSRCs (first octet 0x80), our audio payload type (never RTCP: its second octet is
        # 192-223, RFC 5761 §4, 64-95 without the marker bit; ours is 0, 8, 9 or dynamic 96-127,
        # RFC 5761 §4 keeps 64-95 free), from the latched
        # source and SSRC while media flows. Exactly what the general path below does for it.
        if (
            len(data) > 12
            and data[0] == 0x80
            and data[1] & 0x7F == self.payload_type
            and addr == self._latched
            and self._media_flowing
        ):
            _first, seq, timestamp, ssrc = _unpack_fixed_header(data)
            if ssrc == self._remote_ssrc:
                stats = self._stats
                stats.packets_in += 1
                stats.octets_in += len(data)
                self._last_rx = now
                result = self._jitter.push(seq, timestamp, data[12:], now)
                if result:
                    reason = _PUSH_DROPS[result]
                    if reason is not None:
                        stats.dropped[reason] += 1
                return
        self._receive_general(data, addr, now)

    def _receive_general(self, data: bytes, addr: Address, now: float) -> None:
        """`receive_datagram` for any datagram (the fast path covers a subset of these)."""
        stats = self._stats
        stats.packets_in += 1
        stats.octets_in += len(data)
        if is_rtcp(data):  # rtcp-mux (RFC 5761) or a confused peer
            self.receive_rtcp(data, addr, now)
            return
        try:
            payload_type, _marker, seq, timestamp, ssrc, payload = parse_header(data)
        except RtpParseError as exc:
            stats.dropped[exc.reason] += 1
            return
        if payload_type == self.payload_type:
            audio = True
        elif payload_type in (self.dtmf_pt, self.cn_receive_pt):
            audio = False
        else:
            stats.dropped["unknown_pt"] += 1
            return
        if addr != self._latched and not self._learn(addr, ssrc, seq, now):
            return
        if ssrc != self._remote_ssrc:
            if self._remote_ssrc is not None:
                self._restart_stream(ssrc)
            self._remote_ssrc = ssrc
        self._last_rx = now
        if not self._media_started or self._timed_out:
            self._media_started = True
            self._timed_out = False
            self._media_flowing = True
            self.timer_dirty = True
            self._events.append(MediaStarted())
        jitter = self._jitter
        if audio:
            reason = _PUSH_DROPS[jitter.push(seq, timestamp, payload, now)]
            if reason is not None:
                stats.dropped[reason] += 1
            return
        self.timer_dirty = True  # telephone-event or CN: the DTMF end timer may move
        verdict = jitter.reception.update(seq)
        if verdict == ReceptionStats.DUPLICATE:
            stats.dropped["duplicate"] += 1
        elif verdict == ReceptionStats.BAD_SEQUENCE:
            stats.dropped["bad_sequence"] += 1
        elif payload_type == self.dtmf_pt:
            try:
                event = TelephoneEvent.parse(payload)
            except RtpParseError as exc:
                stats.dropped[exc.reason] += 1
                return
            self._digits(self._dtmf_rx.receive(timestamp, event, now))
        else:  # CN (RFC 3389 §3): the gap from `timestamp` on is noise at its level
            level = cn_level(payload)
            if level is not None:
                self._cn_level = level
            self._cn_timestamp = timestamp
            self._cn_gap = True

    def _learn(self, addr: Address, ssrc: int, seq: int, now: float) -> bool:
        """Whether a valid packet from `addr`, not the learned source, is accepted; if so,
        `addr` is the source from now on (see the module docstring for the rules)."""
        if addr != self._sdp_source:
            reason: str | None
            if self.strict_source and addr[0] not in self._allowed_ips:
                reason = "wrong_source"
            elif self._latched is not None and now - self._last_rx < self.relatch_after:
                reason = "competing_source"  # never switch away from a source still sending
            else:
                if (
                    addr == self._candidate
                    and ssrc == self._candidate_ssrc
                    and seq == (self._candidate_seq + 1) & 0xFFFF
                ):
                    self._candidate_count += 1
                else:  # a new candidate (or the old one out of sequence) starts over
                    self._candidate = addr
                    self._candidate_ssrc = ssrc
                    self._candidate_count = 1
                self._candidate_seq = seq
                reason = None if self._candidate_count >= PROBATION_PACKETS else "probation"
            if reason is not None:
                self._stats.dropped[reason] += 1
                self.last_refused = addr
                return False
        self._candidate = None
        if self._latched is not None:
            self._stats.relatches += 1
        self._latched = addr
        self.remote_addr = addr
        self._events.append(RemoteLatched(addr))
        return True

    def _digits(self, digits: list[DtmfDigitReceived]) -> None:
        for digit in digits:
            self._stats.dtmf_received += 1
            self._events.append(digit)

    def _restart_stream(self, new_ssrc: int) -> None:
        assert self._remote_ssrc is not None
        self._stats.ssrc_changes += 1
        self._lost_prior += max(0, self._jitter.reception.lost)
        self._jitter.reset()
        self._dtmf_rx.reset()
        self._cn_gap = False
        self._lsr = 0
        self._events.append(SsrcChanged(self._remote_ssrc, new_ssrc))

    def read_frame(self, now: float) -> bytes | None:
        """One ptime of payload: G.711 (audio, concealment, silence or comfort noise), G.722 or
        Opus (b"": lost, the decoder conceals; `COMFORT_NOISE`: the leg renders comfort noise
        at `comfort_noise_pcm`); None before media."""
        if self._cn_gap:
            return self._read_cn_gap(now)
        return self._jitter.pop(now)

    def next_payload(self) -> bytes | None:
        """A packet codec's payload for the frame after the one last read, if it has arrived
        (what an FEC decoder would use); None otherwise."""
        jitter = self._jitter
        return jitter.next_payload() if isinstance(jitter, PacketJitterBuffer) else None

    def _read_cn_gap(self, now: float) -> bytes:
        """`read_frame` after a CN packet: audio still buffered from before it plays; every
        other frame (concealment, silence) is comfort noise, until audio sent after the CN
        plays (RFC 3389 §4: the noise lasts until the next speech packet)."""
        jitter = self._jitter
        played = jitter.stats.played
        frame = jitter.pop(now)
        if frame is not None and jitter.stats.played != played:
            if (jitter.newest_timestamp - self._cn_timestamp) & 0xFFFFFFFF < 0x80000000:
                self._cn_gap = False  # audio from after the CN: the talk spurt
            return frame
        return self._comfort_noise()

    def _comfort_noise(self) -> bytes:
        """One frame of comfort noise at the level of the last CN: G.711 coded here, for a
        wideband codec `COMFORT_NOISE` (the leg asks `comfort_noise_pcm` at its own rate)."""
        if self.codec not in _G711:
            return COMFORT_NOISE
        n = self.frame_samples
        offset = self._cn_offset
        self._cn_offset = next_offset(offset, n)
        return noise_g711(self.codec, self._cn_level, n, offset)

    def comfort_noise_pcm(self, samples: int) -> npt.NDArray[np.int16]:
        """`samples` of comfort noise at the last CN's level, as int16 at the leg's rate."""
        offset = self._cn_offset
        self._cn_offset = next_offset(offset, samples)
        return noise_pcm16(self._cn_level, samples, offset)

    # --- send

    def packetize(self, payload: bytes | None, now: float) -> bytes | None:
        """The next outgoing RTP datagram for one ptime tick.

        `payload`: G.711 audio in this session's codec, or None for "nothing to play" (silence,
        or CN/DTX when `cn_pt` is set: then the result may be None, meaning send nothing). An
        RFC 4733 packet replaces the audio while a digit is being sent.
        """
        last = self._last_send
        if (
            self._dtmf_idle
            and (last < 0 or now - last <= self._stall_gap)
            and (payload is not None or self.cn_pt is None)
        ):
            # Fast path: audio or plain silence on time, no digit being sent, no CN: the general
            # path below, inlined. RFC 3550 §5.1: sequence number +1, timestamp + samples;
            # the marker starts a talk spurt (RFC 3551 §4.1).
            self._last_send = now
            if payload is None:
                payload = self.silence_payload
                marker = False
                self._marker = True  # the next real audio starts a talk spurt
            else:
                marker = self._marker
                self._marker = False
                self._cn_sent_at = None
            ts = self._ts
            n = len(payload)
            self._ts = (ts + n) & 0xFFFFFFFF
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
            stats = self._stats
            stats.packets_out += 1
            stats.octets_out += n
            self._sent_since_report = True
            word = self._audio_word
            header = _pack_fixed_header(word | 0x80 if marker else word, seq, ts, self._ssrc_word)
            if self._srtp is None:  # the one check plain RTP pays
                return header + payload
            return self._srtp.protect(header + payload)
        datagram = self._packetize_general(payload, now)
        if datagram is None or self._srtp is None:
            return datagram
        return self._srtp.protect(datagram)

    def _packetize_general(self, payload: bytes | None, now: float) -> bytes | None:
        """`packetize` for any tick (the fast path covers a subset of these)."""
        samples = self.frame_samples
        last = self._last_send
        if last >= 0 and now - last > self._stall_gap:
            # the clock stalled: keep timestamps on the wall clock, start a new talk spurt
            missed = int((now - self._last_send) * 1000 / self.ptime_ms + 0.5) - 1
            self._ts = (self._ts + missed * samples) & 0xFFFFFFFF
            self._marker = True
        self._last_send = now
        ts = self._ts
        dtmf = self._dtmf_tx
        if not dtmf.active:
            self._dtmf_idle = not self._packet_codec  # until start_dtmf queues a digit
        elif self.dtmf_pt is not None:
            event = dtmf.next_packet(ts)
            if event is not None:
                body, marker, event_ts = event
                self._ts = (ts + samples) & 0xFFFFFFFF
                self._marker = True  # the audio after the event starts a talk spurt
                self._stats.dtmf_sent = dtmf.sent_digits
                return self._emit(self.dtmf_pt, marker, event_ts, body)
        if payload is None:
            if self.cn_pt is not None:
                self._ts = (ts + samples) & 0xFFFFFFFF
                if self._cn_sent_at is None or now - self._cn_sent_at >= self.cn_refresh:
                    self._cn_sent_at = now
                    self._marker = True
                    return self._emit(self.cn_pt, False, ts, self._cn_payload)
                return None
            payload = self.silence_payload
            self._marker = True  # the next real audio starts a talk spurt
            marker = False
        else:
            marker = self._marker
            self._marker = False
            self._cn_sent_at = None
        # G.711 and G.722: one byte per tick (RFC 3551 §4.5.2); a packet codec: one frame
        self._ts = (ts + (samples if self._packet_codec else len(payload))) & 0xFFFFFFFF
        return self._emit(self.payload_type, marker, ts, payload)

    def _emit(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> bytes:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        stats = self._stats
        stats.packets_out += 1
        stats.octets_out += len(payload)
        self._sent_since_report = True
        return self._writer.build(payload_type, marker, seq, timestamp, payload)

    def start_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send `digit` as RFC 4733 events on the next ticks (queued behind earlier digits).

        Raises DtmfError for a non-digit or when no telephone-event was negotiated
        (`dtmf_pt is None`: the bridge then falls back to in-band tones).
        """
        if self.dtmf_pt is None:
            raise DtmfError("no telephone-event payload type negotiated")
        self._dtmf_tx.queue(digit, duration_ms)
        self._dtmf_idle = False

    @property
    def sending_dtmf(self) -> bool:
        return self._dtmf_tx.active

    # --- timers

    def get_timer(self) -> float | None:
        """When `handle_timer` wants to run next (RTCP, DTMF end timeout, media timeout)."""
        if self._closed:
            return None
        timer = self._next_rtcp
        dtmf = self._dtmf_rx.get_timer()
        if dtmf is not None and dtmf < timer:
            timer = dtmf
        if self.media_timeout is not None and not self._timed_out:
            deadline = max(self._last_rx, self._timeout_from) + self.media_timeout
            timer = min(timer, deadline)
        return timer

    def handle_timer(self, now: float) -> None:
        if self._closed:
            return
        self._digits(self._dtmf_rx.handle_timer(now))
        if (
            self.media_timeout is not None
            and not self._timed_out
            and now >= max(self._last_rx, self._timeout_from) + self.media_timeout
        ):
            self._timed_out = True
            self._media_flowing = False
            self._events.append(MediaTimedOut())
        if now >= self._next_rtcp:
            self._queue_rtcp(self._report(now))
            self._next_rtcp = now + self.rtcp_interval * self._rng.uniform(0.5, 1.5)

    def next_event(self) -> RtpEventType | None:
        return self._events.popleft() if self._events else None

    # --- RTCP

    def _report(self, now: float) -> list[RtcpPacket]:
        blocks = []
        reception = self._jitter.reception
        if self._remote_ssrc is not None and reception.started:
            dlsr = int((now - self._lsr_at) * 65536) if self._lsr else 0
            blocks.append(
                RtcpReportBlock(
                    ssrc=self._remote_ssrc,
                    fraction_lost=reception.interval_fraction_lost(),
                    cumulative_lost=reception.lost,
                    highest_sequence=reception.extended_max & 0xFFFFFFFF,
                    jitter=int(reception.jitter),
                    lsr=self._lsr,
                    dlsr=dlsr & 0xFFFFFFFF,
                )
            )
        report: RtcpPacket
        if self._sent_since_report:
            self._sent_since_report = False
            elapsed = max(0.0, now - self._last_send)
            report = RtcpSenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=ntp_timestamp(now + self.wall_offset),
                rtp_timestamp=(self._ts + int(elapsed * self.clock_rate)) & 0xFFFFFFFF,
                packet_count=self._stats.packets_out,
                octet_count=self._stats.octets_out,
                reports=blocks,
            )
        else:
            report = RtcpReceiverReport(ssrc=self.ssrc, reports=blocks)
        sdes = RtcpSourceDescription([SdesChunk(self.ssrc, ((1, self.cname),))])
        return [report, sdes]

    def _queue_rtcp(self, packets: list[RtcpPacket]) -> None:
        if self.remote_rtcp_addr is None:
            return
        data = serialize_compound(packets)
        if self._srtp is not None:
            data = self._srtp.protect_rtcp(data)
        self._rtcp_out.append((data, self.remote_rtcp_addr))
        self._stats.rtcp_out += 1

    def rtcp_datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """RTCP datagrams queued since the last call, with their destination."""
        out, self._rtcp_out = self._rtcp_out, []
        return out

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram from the RTCP socket. Never raises."""
        stats = self._stats
        stats.rtcp_in += 1
        latched = self._latched  # the same rules as RTP: its source's IP, else the expected IPs
        if (addr[0] != latched[0]) if latched is not None else (addr[0] not in self._allowed_ips):
            stats.dropped["rtcp_wrong_source"] += 1
            self.last_refused = addr
            return
        if self._srtp is not None:
            clear = self._srtp.unprotect_rtcp(data)
            if clear is None:
                stats.dropped[self._srtp.failure] += 1
                return
            data = clear
        try:
            packets = parse_compound(data)
        except RtpParseError:
            stats.dropped["rtcp_malformed"] += 1
            return
        if self._latched_rtcp != addr:
            self._latched_rtcp = addr  # symmetric RTCP
            self.remote_rtcp_addr = addr
        arrival = compact_ntp(ntp_timestamp(now + self.wall_offset))
        for packet in packets:
            if isinstance(packet, RtcpSenderReport) and packet.ssrc in (self._remote_ssrc, None):
                self._lsr = compact_ntp(packet.ntp_timestamp)
                self._lsr_at = now
            if isinstance(packet, RtcpSenderReport | RtcpReceiverReport):
                for block in packet.reports:
                    if block.ssrc != self.ssrc:
                        continue
                    stats.rtt_seconds = round_trip_time(arrival, block.lsr, block.dlsr)
                    stats.remote_fraction_lost = block.fraction_lost / 256
                    stats.remote_cumulative_lost = block.cumulative_lost
                    stats.remote_jitter_seconds = block.jitter / self.clock_rate

    # --- end and stats

    def close(self, now: float) -> None:
        """Queue a final report with BYE (§6.6); timers stop. Safe to call twice."""
        if self._closed:
            return
        packets = self._report(now)
        packets.append(RtcpBye([self.ssrc], _NTP_BYE_REASON))
        self._queue_rtcp(packets)
        self._closed = True

    @property
    def latched(self) -> Address | None:
        """The source RTP is latched to (learned), or None before one is."""
        return self._latched

    @property
    def expected_ips(self) -> frozenset[str]:
        """The IPs a new source may come from under `strict_source` (the SDP's, signalling's)."""
        return self._allowed_ips

    @property
    def remote_ssrc(self) -> int | None:
        return self._remote_ssrc

    @property
    def jitter_buffer(self) -> JitterBuffer | PacketJitterBuffer:
        return self._jitter

    @property
    def stats(self) -> RtpStats:
        """The counters, with the jitter-buffer figures brought up to date."""
        stats = self._stats
        jb = self._jitter
        reception = jb.reception
        stats.lost = self._lost_prior + max(0, reception.lost)
        stats.late = jb.stats.late
        stats.duplicates = stats.dropped["duplicate"]
        stats.concealed_frames = jb.stats.concealed
        stats.silence_frames = jb.stats.silence
        stats.played_frames = jb.stats.played
        stats.jitter_seconds = reception.jitter_seconds
        stats.target_delay_ms = jb.target_ms
        return stats


def _normal_ip(host: str) -> str:
    """`host` in the form a socket reports it (IPv6 compressed, lower case); else as given."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host  # a host name in c= (RFC 4566 §5.7): matches no packet source
