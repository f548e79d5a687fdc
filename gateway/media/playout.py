"""The playout queue toward the caller, with per-item accounting of what was actually played.

Bot audio arrives from the model in bursts faster than real time; the leg's pacer pulls one
frame per packet time. The queue keeps, for each assistant item, how many milliseconds were
*sent to the caller* (not received), which is exactly what `conversation.item.truncate`'s
`audio_end_ms` must carry on barge-in (pipecat#2106/#3677 came from counting bytes received).

Sans-I/O: no asyncio, no clock; frames are fixed-size byte strings in the leg's native format.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Segment:
    item_id: str
    response_id: str
    data: bytes
    offset: int = 0


@dataclass(slots=True)
class ItemPlayout:
    """What is known about one assistant item's audio on this call."""

    item_id: str
    response_id: str
    queued_bytes: int = 0
    played_bytes: int = 0
    first_played_at: float | None = None
    last_played_at: float | None = None


@dataclass(frozen=True, slots=True)
class PlayoutCleared:
    """What a `clear()` dropped: the item that was playing and how much of it was played;
    `queued_items` the other items whose audio was dropped, in order (queued behind it)."""

    item_id: str | None
    response_id: str | None
    played_ms: int
    dropped_ms: int
    queued_items: tuple[str, ...] = ()


@dataclass
class PlayoutQueue:
    """FIFO of bot audio in native leg format, pulled one `frame_bytes` frame at a time."""

    frame_bytes: int
    bytes_per_ms: float
    silence_byte: int = 0
    max_ms: int = 120_000
    _segments: deque[_Segment] = field(default_factory=deque)
    _queued: int = 0
    items: dict[str, ItemPlayout] = field(default_factory=dict)
    _current: str | None = None

    @property
    def queued_ms(self) -> float:
        """Milliseconds of audio waiting to be played."""
        return self._queued / self.bytes_per_ms

    @property
    def playing_item(self) -> str | None:
        """The item whose audio was last pulled, while any of it is still queued or playing."""
        return self._current

    def push(self, item_id: str, response_id: str, data: bytes) -> bool:
        """Queue audio of an item; False (and nothing queued) when the queue is full."""
        if not data:
            return True
        if (self._queued + len(data)) / self.bytes_per_ms > self.max_ms:
            return False
        info = self.items.get(item_id)
        if info is None:
            info = self.items[item_id] = ItemPlayout(item_id, response_id)
        info.queued_bytes += len(data)
        self._segments.append(_Segment(item_id, response_id, data))
        self._queued += len(data)
        return True

    def pull(self, now: float) -> bytes | None:
        """One frame to send now, padded with silence at the end of the audio; None if empty."""
        if not self._segments:
            self._current = None
            return None
        need = self.frame_bytes
        head = self._segments[0]
        if len(head.data) - head.offset >= need:
            # Common case: one slice of one segment, no joins.
            out = head.data[head.offset : head.offset + need]
            head.offset += need
            self._account(head, need, now)
            if head.offset == len(head.data):
                self._segments.popleft()
            self._queued -= need
            return out
        parts: list[bytes] = []
        while need and self._segments:
            head = self._segments[0]
            take = min(need, len(head.data) - head.offset)
            parts.append(head.data[head.offset : head.offset + take])
            head.offset += take
            need -= take
            self._queued -= take
            self._account(head, take, now)
            if head.offset == len(head.data):
                self._segments.popleft()
        if need:
            parts.append(bytes([self.silence_byte]) * need)
        return b"".join(parts)

    def _account(self, seg: _Segment, nbytes: int, now: float) -> None:
        info = self.items[seg.item_id]
        info.played_bytes += nbytes
        if info.first_played_at is None:
            info.first_played_at = now
        info.last_played_at = now
        self._current = seg.item_id

    def played_ms(self, item_id: str) -> int:
        """Whole milliseconds of `item_id` sent to the caller so far."""
        info = self.items.get(item_id)
        return int(info.played_bytes / self.bytes_per_ms) if info else 0

    def clear(self) -> PlayoutCleared:
        """Drop everything queued (barge-in); report the item that was playing."""
        current = self._current
        if current is None and self._segments:
            current = self._segments[0].item_id
        dropped = self._queued
        queued = tuple(dict.fromkeys(s.item_id for s in self._segments if s.item_id != current))
        self._segments.clear()
        self._queued = 0
        self._current = None
        info = self.items.get(current) if current else None
        return PlayoutCleared(
            item_id=current,
            response_id=info.response_id if info else None,
            played_ms=self.played_ms(current) if current else 0,
            dropped_ms=int(dropped / self.bytes_per_ms),
            queued_items=queued,
        )

    def reformat(
        self,
        frame_bytes: int,
        bytes_per_ms: float,
        silence_byte: int,
        convert: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """The leg's frame size or format changed (a re-INVITE): what is queued is converted
        with `convert` (when the format changed) and keeps its place; what each item played so
        far keeps its milliseconds."""
        if convert is not None:
            queued = 0
            segments: deque[_Segment] = deque()
            for seg in self._segments:
                data = convert(seg.data[seg.offset :])
                segments.append(_Segment(seg.item_id, seg.response_id, data))
                queued += len(data)
            self._segments = segments
            self._queued = queued
        scale = bytes_per_ms / self.bytes_per_ms
        if scale != 1.0:
            for info in self.items.values():
                info.played_bytes = round(info.played_bytes * scale)
                info.queued_bytes = round(info.queued_bytes * scale)
        self.frame_bytes = frame_bytes
        self.bytes_per_ms = bytes_per_ms
        self.silence_byte = silence_byte

    def forget(self, item_id: str) -> None:
        """Stop tracking an item (e.g. after its truncate was sent)."""
        self.items.pop(item_id, None)
