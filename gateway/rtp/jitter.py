"""Receive side of one RTP stream: reception statistics and the playout (jitter) buffer.

`ReceptionStats` is RFC 3550 Appendix A verbatim in spirit: A.1 sequence validation with the
extended highest sequence number and cycle count, A.3 loss (cumulative and per interval), A.8
interarrival jitter; plus duplicate detection over the last 128 sequence numbers.

`JitterBuffer` is a sample FIFO keyed by RTP timestamp, not a packet queue, so a sender's
packetisation does not matter: 30 ms packets are played as 20 ms frames without gaps. It holds
G.711 bytes (one byte per sample at 8 kHz, so timestamp units are byte offsets), or G.722 bytes
(64 kbit/s: one byte per tick of its 8000 Hz RTP clock, RFC 3551 §4.5.2, so the same holds):

* `push()` copies a packet's payload to its place relative to the playout point P (the RTP
  timestamp of the next sample to play). Packets are thereby reordered; a packet whose samples
  are all already present is a duplicate; one whose samples are all before P is late (dropped).
* `pop()` returns exactly one frame per call and advances P by one frame. Missing samples are
  concealed: the last good frame repeated with fading (-2, -6, -12 dB), then silence once 60 ms
  are missing in a row.
* Delay adapts between `min_delay_ms` and `max_delay_ms` in whole frames. A late packet or high
  A.8 jitter grows the target by a frame (a concealment frame is inserted without advancing P);
  after `shrink_after` seconds in which every packet arrived more than 1.5 frames early, it
  shrinks by a frame: the next missing frame is skipped instead of concealed (or, failing one
  within another `shrink_after`, a frame of audio is skipped). At the start of a talk spurt
  after silence, P is re-aligned instead, which lowers the delay without audible cuts.
* A timestamp discontinuity (a jump beyond the window, or three in-order late packets in a row)
  restarts playout at the packet, as does `reset()` after an SSRC change.
* G.722 cannot be faded in the code domain: a frame not wholly received pops as b"" (lost), and
  the decoder (gateway/media/wideband.py) conceals it.

`PacketJitterBuffer` plays codecs whose payloads are not byte-per-tick (Opus, RFC 7587): whole
packets keyed by timestamp, one frame's packet per `pop()`, b"" for a lost one (the decoder's
PLC conceals it). It shares `ReceptionStats` and the counters; its delay grows on late packets
between the same bounds and does not shrink.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Final

from telcodecs import g711_gain_table, g711_silence_code

__all__ = [
    "JitterBuffer",
    "JitterStats",
    "PacketJitterBuffer",
    "PushResult",
    "ReceptionStats",
]

_SEQ_MOD: Final = 1 << 16
_MAX_DROPOUT: Final = 3000  # RFC 3550 A.1
_MAX_MISORDER: Final = 100
_DUP_WINDOW: Final = 128


class ReceptionStats:
    """RFC 3550 A.1/A.3/A.8 for one source, plus duplicate detection. No probation: the source
    is known from signalling, so the first packet plays."""

    __slots__ = (
        "_bad_seq",
        "_prev_arrival",
        "_prev_ts",
        "_seen",
        "base_seq",
        "clock_rate",
        "cycles",
        "duplicates",
        "expected_prior",
        "jitter",
        "max_seq",
        "received",
        "received_prior",
        "started",
    )

    # update() results
    ACCEPTED: Final = 0
    DUPLICATE: Final = 1
    BAD_SEQUENCE: Final = 2

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self._bad_seq = _SEQ_MOD + 1
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.duplicates = 0
        self.jitter = 0.0  # A.8, in timestamp units
        self._prev_arrival = -1.0
        self._prev_ts = 0
        self._seen = [-1] * _DUP_WINDOW

    def reset(self) -> None:
        self.__init__(self.clock_rate)  # type: ignore[misc]

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._seen = [-1] * _DUP_WINDOW

    def update(self, seq: int) -> int:
        """A.1 `update_seq` with duplicate detection. Returns ACCEPTED, DUPLICATE or BAD_SEQUENCE
        (a jump: the first packet after it is dropped; a second in sequence restarts counting).

        `JitterBuffer.push` inlines the next in-order case: keep the two in step."""
        if not self.started:
            self.started = True
            self._init_seq(seq)
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if 0 < udelta < _MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += _SEQ_MOD  # sequence wrapped
                self.max_seq = seq
            elif udelta == 0 or udelta > _SEQ_MOD - _MAX_MISORDER:
                pass  # duplicate or reordered: checked below
            elif seq == self._bad_seq:
                self._init_seq(seq)  # two sequential packets after a jump: the source restarted
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return self.BAD_SEQUENCE
        ext = self.extended(seq)
        slot = ext % _DUP_WINDOW
        if self._seen[slot] == ext:
            self.duplicates += 1
            return self.DUPLICATE
        self._seen[slot] = ext
        self.received += 1
        return self.ACCEPTED

    def extended(self, seq: int) -> int:
        """The extended sequence number of `seq`, placed relative to the highest seen."""
        ext = self.cycles + seq
        if seq > self.max_seq and seq - self.max_seq > _SEQ_MOD // 2:
            ext -= _SEQ_MOD  # an old packet from before the wrap
        return ext

    def update_jitter(self, arrival: float, timestamp: int) -> None:
        """A.8: J += (|D(i-1,i)| - J) / 16, with arrival in seconds. (Inlined in `push`.)"""
        arrival_units = arrival * self.clock_rate
        if self._prev_arrival >= 0:
            ts_delta = (timestamp - self._prev_ts) & 0xFFFFFFFF
            if ts_delta & 0x80000000:
                ts_delta -= 1 << 32
            d = abs((arrival_units - self._prev_arrival) - ts_delta)
            self.jitter += (d - self.jitter) / 16.0
        self._prev_arrival = arrival_units
        self._prev_ts = timestamp

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.started else 0

    @property
    def lost(self) -> int:
        """A.3 cumulative packets lost (negative if duplicates were counted by the sender)."""
        return self.expected - self.received if self.started else 0

    def interval_fraction_lost(self) -> int:
        """A.3 fraction lost since the previous call, as 8-bit fixed point; resets the interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    @property
    def jitter_seconds(self) -> float:
        return self.jitter / self.clock_rate


# --- concealment fades: G.711 code translation tables (telcodecs), made once at import

_FADE_GAINS: Final = (0.8, 0.5, 0.25)  # about -2, -6, -12 dB: 60 ms, then silence
_FADE_TABLES: Final[dict[str, tuple[bytes, ...]]] = {
    codec: tuple(g711_gain_table(codec, g) for g in _FADE_GAINS) for codec in ("pcmu", "pcma")
}
#: codecs whose bytes map 1:1 to RTP ticks but cannot be faded: a lost frame pops as b""
_DECODER_CONCEALS: Final = {"g722": 0xFA}  # G.722's encoding of silence from a reset encoder


@dataclass(slots=True)
class JitterStats:
    """Playout counters for one stream (plain ints; adapters export them)."""

    pushed: int = 0
    late: int = 0
    duplicates: int = 0  # whole payload already buffered (sequence duplicates count upstream)
    played: int = 0  # frames of received audio played
    concealed: int = 0  # frames (fully or partly) made up by repetition and fading
    silence: int = 0  # frames of silence after 60 ms of loss or while the sender is idle
    stalls: int = 0  # frames inserted to grow the delay
    skips: int = 0  # frames dropped to shrink it
    resyncs: int = 0  # playout restarted (timestamp discontinuity, SSRC change)


class PushResult:
    """Values returned by `JitterBuffer.push`."""

    BUFFERED: Final = 0
    LATE: Final = 1
    DUPLICATE: Final = 2
    RESYNCED: Final = 3
    BAD_SEQUENCE: Final = 4


@cache
def _run_of(byte: int, length: int) -> bytes:
    """`length` copies of `byte` (immutable, so one per size serves every call)."""
    return bytes((byte,)) * length


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


_BUFFERED: Final = PushResult.BUFFERED


class JitterBuffer:
    """Playout buffer for one G.711 or G.722 stream. `pop(now)` gives one `frame_ms` frame per
    call (b"" for a G.722 frame not wholly received: the decoder conceals it)."""

    def __init__(
        self,
        codec: str = "pcmu",
        frame_ms: int = 20,
        *,
        clock_rate: int = 8000,
        min_delay_ms: int = 20,
        max_delay_ms: int = 60,
        shrink_after: float = 3.0,
    ) -> None:
        if codec not in _FADE_TABLES and codec not in _DECODER_CONCEALS:
            raise ValueError(f"unsupported codec {codec!r}")
        self.codec = codec
        self.frame = clock_rate * frame_ms // 1000
        self.clock_rate = clock_rate
        self.min_delay = max(
            self.frame, clock_rate * min_delay_ms // 1000 // self.frame * self.frame
        )
        self.max_delay = max(self.min_delay, clock_rate * max_delay_ms // 1000)
        self.shrink_after = shrink_after
        # a packet further ahead than this is a timestamp jump
        self._jump = self.max_delay + 4 * self.frame
        self._capacity = self._jump + 4096
        self._decoder_conceals = codec in _DECODER_CONCEALS
        if self._decoder_conceals:
            self._silence_byte = _DECODER_CONCEALS[codec]
            self._fades: tuple[bytes, ...] = ()
        else:
            self._silence_byte = g711_silence_code(codec)
            self._fades = _FADE_TABLES[codec]
        self.silence_frame = bytes((self._silence_byte,)) * self.frame
        # read-only runs of one byte, shared by every buffer of the same size (issue 20: three
        # private copies were 15 KiB of each call's memory)
        self._fill = _run_of(self._silence_byte, self._capacity)
        self._zeros = _run_of(0, self._capacity)
        self._ones = _run_of(1, self._capacity)
        self._zero_frame = bytes(self.frame)
        # one frame of bytes copied in and out by struct's C code: cheaper than slicing
        frame_bytes = struct.Struct(f"{self.frame}s")
        self._put_frame = frame_bytes.pack_into
        self._get_frame = frame_bytes.unpack_from
        self._frame_ones = b"\x01" * self.frame
        self.reception = ReceptionStats(clock_rate)
        self.stats = JitterStats()
        self.target = self.min_delay
        self._buf = bytearray(self._fill)
        self._mask = bytearray(self._capacity)  # 1 where a sample is present
        self.started = False
        self._resync = False
        self._playout = 0  # P: RTP timestamp (mod 2**32) of the next sample to play
        self._ahead = 0  # samples from P to the end of the furthest buffered packet
        self._newest = 0  # timestamp of the newest packet (mod 2**32)
        self._late_run = 0
        self._last_frame = self.silence_frame
        self._missing = 0  # consecutive frames concealed
        self._pending_stall = 0
        self._pending_skip = 0
        self._skip_by = 0.0
        self._window_start = 0.0
        self._window_min = self._jump
        self._window_late = False

    @property
    def target_ms(self) -> float:
        return self.target * 1000 / self.clock_rate

    @property
    def newest_timestamp(self) -> int:
        """The RTP timestamp of the newest packet buffered (0 before any)."""
        return self._newest

    @property
    def buffered(self) -> int:
        """Samples buffered ahead of the playout point."""
        return self._ahead

    def reset(self) -> None:
        """A new source (SSRC change): drop buffered audio and sequence state; the next packet
        restarts playout. Frames keep coming from `pop` meanwhile (concealment, then silence)."""
        self._clear()
        self.reception.reset()
        self._resync = True

    def _clear(self) -> None:
        self._buf[:] = self._fill
        self._mask[:] = self._zeros
        self._ahead = 0
        self._late_run = 0

    def _restart(self, timestamp: int, now: float) -> None:
        self._clear()
        self._playout = (timestamp - self.target) & 0xFFFFFFFF
        self._newest = timestamp
        self._resync = False
        self._pending_stall = self._pending_skip = 0
        self._missing = len(self._fades)  # the pre-roll before the first packet is silence
        self._window_start = now
        self._window_min = self._jump
        self._window_late = False

    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> int:
        """Account for and buffer one audio packet. Returns a PushResult value.

        The next packet in sequence that lands at or after the end of the buffered audio (the
        steady state) takes a fast path with the same results as `ReceptionStats.update`,
        `update_jitter` and `push_payload`, which handle everything else."""
        rec = self.reception
        if rec.started and seq == (rec.max_seq + 1) & 0xFFFF:
            # A.1 update_seq with udelta == 1: count a wrap, advance max_seq. The extended
            # number is above every one seen since _init_seq, so it cannot be a duplicate.
            if not seq:
                rec.cycles += _SEQ_MOD
            rec.max_seq = seq
            ext = rec.cycles + seq
            rec._seen[ext % _DUP_WINDOW] = ext
            rec.received += 1
            in_order = True
        else:
            verdict = rec.update(seq)
            if verdict == ReceptionStats.DUPLICATE:
                self.stats.duplicates += 1
                return PushResult.DUPLICATE
            if verdict == ReceptionStats.BAD_SEQUENCE:
                return PushResult.BAD_SEQUENCE
            in_order = rec.extended(seq) == rec.extended_max
        # A.8 interarrival jitter: `update_jitter` inlined, the same arithmetic in the same order
        arrival = now * rec.clock_rate
        prev_arrival = rec._prev_arrival
        if prev_arrival >= 0:
            ts_delta = (timestamp - rec._prev_ts) & 0xFFFFFFFF
            if ts_delta & 0x80000000:
                ts_delta -= 1 << 32
            rec.jitter += (abs((arrival - prev_arrival) - ts_delta) - rec.jitter) / 16.0
        rec._prev_arrival = arrival
        rec._prev_ts = timestamp
        frame = self.frame
        target = self.target
        if target < self.max_delay and frame + 2 * rec.jitter > target + frame // 2:
            self._grow()  # A.8 jitter says the target is too small
            target = self.target
        # push_payload's buffered case for the newest packet: playout running, the packet starts
        # at or after the end of the buffered audio (so none of its samples is present yet: the
        # mask is 0 from _ahead on) and within the window, not a talk spurt to re-align
        offset = (timestamp - self._playout) & 0xFFFFFFFF
        ahead = self._ahead
        n = len(payload)
        end = offset + n
        if (
            in_order
            and ahead <= offset < self._jump
            and (ahead or offset <= target + 2 * frame)
            and n
            and end <= self._capacity
            and self.started
            and not self._resync
        ):
            self.stats.pushed += 1
            if 0 < (timestamp - self._newest) & 0xFFFFFFFF < 0x80000000:
                self._newest = timestamp
            self._late_run = 0
            if n == frame:
                self._put_frame(self._buf, offset, payload)
                self._put_frame(self._mask, offset, self._frame_ones)
            else:
                self._buf[offset:end] = payload
                self._mask[offset:end] = self._ones[:n]
            self._ahead = end
            self._window_min = min(self._window_min, offset)
            return _BUFFERED
        return self.push_payload(timestamp, payload, now, in_order)

    def push_payload(
        self, timestamp: int, payload: bytes, now: float, in_order: bool | None = None
    ) -> int:
        """Buffer one payload by timestamp, no sequence accounting. Returns a PushResult.

        `in_order`: the packet has the highest sequence number so far (None: judge by
        timestamp). A late in-order packet means the timeline moved, not a reordering.
        `push` inlines the common buffered case: keep the two in step."""
        stats = self.stats
        stats.pushed += 1
        result = PushResult.BUFFERED
        if not self.started or self._resync:
            if self.started:
                stats.resyncs += 1
            self.started = True
            self._restart(timestamp, now)
            result = PushResult.RESYNCED
        n = len(payload)
        offset = _signed32(timestamp - self._playout)
        ahead_of_newest = _signed32(timestamp - self._newest) > 0
        if ahead_of_newest:
            self._newest = timestamp
        newest = ahead_of_newest if in_order is None else in_order
        if offset + n <= 0:  # every sample is before the playout point
            if newest and (offset < -self._jump or self._late_run >= 2):
                offset = self._resync_at(timestamp, now)  # the timestamps jumped back
                result = PushResult.RESYNCED
            else:
                stats.late += 1
                self._window_late = True
                if newest:
                    self._late_run += 1
                self._grow()
                return PushResult.LATE
        elif offset >= self._jump or (
            newest and self._ahead == 0 and offset > self.target + 2 * self.frame
        ):
            # a jump forward, or a talk spurt after silence that would play too late
            offset = self._resync_at(timestamp, now)
            result = PushResult.RESYNCED
        if newest:
            self._late_run = 0
        if offset < 0:  # partly late: keep the part still to be played
            stats.late += 1
            self._window_late = True
            payload = payload[-offset:]
            n += offset
            offset = 0
        end = offset + n
        if end > self._capacity:
            n = self._capacity - offset
            payload = payload[:n]
            end = self._capacity
        mask = self._mask
        if mask.find(0, offset, end) == -1:
            stats.duplicates += 1
            return PushResult.DUPLICATE
        if n == self.frame:
            self._put_frame(self._buf, offset, payload)
            self._put_frame(mask, offset, self._frame_ones)
        else:
            self._buf[offset:end] = payload
            mask[offset:end] = self._ones[:n]
        self._ahead = max(self._ahead, end)
        self._window_min = min(self._window_min, offset)
        return result

    def _resync_at(self, timestamp: int, now: float) -> int:
        self.stats.resyncs += 1
        self._restart(timestamp, now)
        return self.target

    def _grow(self) -> None:
        if self.target < self.max_delay:
            self.target = min(self.max_delay, self.target + self.frame)
            self._pending_stall += 1
            self._window_min = self._jump

    def _advance(self, samples: int) -> None:  # inlined in pop's fast path for one frame
        del self._buf[:samples]
        del self._mask[:samples]
        if samples == self.frame:
            self._buf += self.silence_frame
            self._mask += self._zero_frame
        else:
            self._buf += self._fill[:samples]
            self._mask += self._zeros[:samples]
        self._ahead = max(0, self._ahead - samples)
        self._playout = (self._playout + samples) & 0xFFFFFFFF

    def pop(self, now: float) -> bytes | None:
        """One frame of G.711: received audio, concealment or silence. None before any packet."""
        mask = self._mask
        if (
            self.started
            and not self._pending_skip
            and not self._pending_stall
            and now - self._window_start < self.shrink_after
            and mask.startswith(self._frame_ones)
        ):  # the common case: no delay change due and the whole frame received
            frame = self.frame
            buf = self._buf
            out: bytes = self._get_frame(buf)[0]
            self._last_frame = out
            self._missing = 0
            self.stats.played += 1
            # _advance(frame) inlined
            del buf[:frame]
            del mask[:frame]
            buf += self.silence_frame
            mask += self._zero_frame
            self._ahead -= frame  # stays >= 0: a whole frame is present, so _ahead >= frame
            self._playout = (self._playout + frame) & 0xFFFFFFFF
            return out
        return self._pop_general(now)

    def _pop_general(self, now: float) -> bytes | None:
        """`pop` for any state (the fast path covers a subset of these)."""
        if not self.started:
            return None
        frame = self.frame
        stats = self.stats
        if now - self._window_start >= self.shrink_after:
            self._maybe_shrink(now)
        if self._pending_skip and (
            self._mask.find(1, 0, frame) == -1 or now >= self._skip_by
        ):  # shrink where a frame is missing anyway, or after waiting one more window for one
            stats.skips += self._pending_skip // frame
            self._advance(self._pending_skip)
            self._pending_skip = 0
        if self._pending_stall:
            self._pending_stall -= 1
            stats.stalls += 1
            return self._conceal()
        mask = self._mask
        if mask.find(0, 0, frame) == -1:
            out = bytes(self._buf[:frame])
            self._last_frame = out
            self._missing = 0
            stats.played += 1
        elif mask.find(1, 0, frame) != -1 and not self._decoder_conceals:
            out = self._merge(self._conceal())  # partly received
        else:
            out = self._conceal()
        self._advance(frame)
        return out

    def _conceal(self) -> bytes:
        missing = self._missing
        self._missing = missing + 1
        if self._decoder_conceals:  # lost: the decoder conceals (and falls silent) itself
            if missing < len(_FADE_GAINS):
                self.stats.concealed += 1
            else:
                self.stats.silence += 1
            return b""
        if missing < len(self._fades):
            self.stats.concealed += 1
            return self._last_frame.translate(self._fades[missing])
        self.stats.silence += 1
        return self.silence_frame

    def _merge(self, filler: bytes) -> bytes:
        out = bytearray(filler)
        mask, buf, frame = self._mask, self._buf, self.frame
        i = mask.find(1, 0, frame)
        while i != -1:
            j = mask.find(0, i, frame)
            if j == -1:
                j = frame
            out[i:j] = buf[i:j]
            i = mask.find(1, j, frame) if j < frame else -1
        self._missing = 0
        self._last_frame = bytes(out)
        return self._last_frame

    def _maybe_shrink(self, now: float) -> None:
        # every packet in the window had more than 1.5 frames to spare: one frame can go
        if (
            not self._window_late
            and self.target > self.min_delay
            and self._window_min >= self.frame + self.frame // 2
            and self._window_min < self._jump
            and self.frame + 2 * self.reception.jitter <= self.target - self.frame // 2
        ):
            self.target -= self.frame
            self._pending_skip += self.frame
            self._skip_by = now + self.shrink_after
        self._window_start = now
        self._window_min = self._jump
        self._window_late = False


class PacketJitterBuffer:
    """Playout buffer of whole packets for one stream of a codec whose payload size does not
    follow its RTP clock (Opus). The same interface as `JitterBuffer`: `push` returns a
    PushResult value, `pop(now)` one frame's payload (b"" when it is missing: the decoder
    conceals it), None before any packet. A sender's packets must be one frame long (the SDP's
    ptime): a packet between frame boundaries is played at the boundary it starts after."""

    def __init__(
        self,
        frame_ms: int = 20,
        *,
        clock_rate: int = 48000,
        min_delay_ms: int = 20,
        max_delay_ms: int = 60,
    ) -> None:
        self.codec = "packets"
        self.frame = clock_rate * frame_ms // 1000
        self.clock_rate = clock_rate
        self.min_delay = max(
            self.frame, clock_rate * min_delay_ms // 1000 // self.frame * self.frame
        )
        self.max_delay = max(self.min_delay, clock_rate * max_delay_ms // 1000)
        self._jump = self.max_delay + 4 * self.frame
        self.silence_frame = b""
        self.reception = ReceptionStats(clock_rate)
        self.stats = JitterStats()
        self.target = self.min_delay
        self.started = False
        self._resync = False
        self._playout = 0  # P: RTP timestamp of the next frame to play
        self._packets: dict[int, bytes] = {}  # offset from P (ticks) -> payload
        self._newest = 0  # timestamp of the newest packet buffered (mod 2**32)
        self._late_run = 0
        self._missing = 0
        self._pending_stall = 0

    @property
    def target_ms(self) -> float:
        return self.target * 1000 / self.clock_rate

    @property
    def newest_timestamp(self) -> int:
        """The RTP timestamp of the newest packet buffered (0 before any)."""
        return self._newest

    @property
    def buffered(self) -> int:
        """Ticks buffered ahead of the playout point (to the end of the furthest packet)."""
        return max(self._packets, default=-self.frame) + self.frame if self._packets else 0

    def reset(self) -> None:
        """A new source: drop buffered packets and sequence state; the next packet restarts."""
        self._packets.clear()
        self.reception.reset()
        self._resync = True

    def _restart(self, timestamp: int) -> None:
        self._packets.clear()
        self._playout = (timestamp - self.target) & 0xFFFFFFFF
        self._resync = False
        self._late_run = 0
        self._pending_stall = 0
        self._missing = len(_FADE_GAINS)

    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> int:
        """Account for (RFC 3550 A.1, A.8) and buffer one packet. Returns a PushResult."""
        rec = self.reception
        verdict = rec.update(seq)
        if verdict == ReceptionStats.DUPLICATE:
            self.stats.duplicates += 1
            return PushResult.DUPLICATE
        if verdict == ReceptionStats.BAD_SEQUENCE:
            return PushResult.BAD_SEQUENCE
        in_order = rec.extended(seq) == rec.extended_max
        rec.update_jitter(now, timestamp)
        stats = self.stats
        stats.pushed += 1
        result = PushResult.BUFFERED
        if not self.started or self._resync:
            if self.started:
                stats.resyncs += 1
            self.started = True
            self._restart(timestamp)
            result = PushResult.RESYNCED
        offset = _signed32(timestamp - self._playout)
        if offset < 0:
            if in_order and (offset < -self._jump or self._late_run >= 2):
                stats.resyncs += 1  # the timestamps jumped back: the timeline moved
                self._restart(timestamp)
                offset, result = self.target, PushResult.RESYNCED
            else:
                stats.late += 1
                if in_order:
                    self._late_run += 1
                if self.target < self.max_delay:  # a frame more delay from now on
                    self.target += self.frame
                    self._pending_stall += 1
                return PushResult.LATE
        elif offset >= self._jump or (
            in_order and not self._packets and offset > self.target + 2 * self.frame
        ):  # a jump forward, or a talk spurt after silence that would play too late
            stats.resyncs += 1
            self._restart(timestamp)
            offset, result = self.target, PushResult.RESYNCED
        if in_order:
            self._late_run = 0
        if offset in self._packets:
            stats.duplicates += 1
            return PushResult.DUPLICATE
        self._packets[offset] = payload
        if result == PushResult.RESYNCED or _signed32(timestamp - self._newest) > 0:
            self._newest = timestamp
        return result

    def pop(self, now: float) -> bytes | None:
        """One frame's payload, b"" when it is missing, None before any packet."""
        if not self.started:
            return None
        stats = self.stats
        if self._pending_stall:  # grow the delay: a concealed frame, P stays
            self._pending_stall -= 1
            stats.stalls += 1
            self._count_missing()
            return b""
        frame = self.frame
        packets = self._packets
        out = packets.pop(0, None)
        if out is None and packets:  # a packet that starts inside this frame plays now
            inside = [k for k in packets if k < frame]
            if inside:
                out = packets.pop(min(inside))
        # P advances one frame: every packet's offset moves down by one frame
        self._packets = {k - frame: v for k, v in packets.items() if k >= frame} if packets else {}
        self._playout = (self._playout + frame) & 0xFFFFFFFF
        if out is None:
            self._count_missing()
            return b""
        self._missing = 0
        stats.played += 1
        return out

    def next_payload(self) -> bytes | None:
        """The payload of the frame after the one last popped, if it is here (for FEC)."""
        return self._packets.get(0)

    def _count_missing(self) -> None:
        missing = self._missing
        self._missing = missing + 1
        if missing < len(_FADE_GAINS):
            self.stats.concealed += 1
        else:
            self.stats.silence += 1
