"""RTP test vectors (`tests/vectors/rtp/`, written by its make_vectors.py) and `LossyLink`, a
seeded in-memory network for jitter and loss."""

from __future__ import annotations

import random
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rtp"


def vector(name: str) -> bytes:
    """The bytes of one vector file."""
    return (VECTORS / name).read_bytes()


def invalid_vectors(parser: str) -> list[tuple[str, str]]:
    """(file, expected `RtpParseError.reason`) of the `invalid_*.bin` vectors for `parser`
    ("rtp" or "rtcp"), from `invalid_reasons.txt` (written by make_vectors.py)."""
    rows = [line.split("\t") for line in (VECTORS / "invalid_reasons.txt").read_text().splitlines()]
    return [(name, reason) for name, kind, reason, _why in rows if kind == parser]


class LossyLink:
    """A seeded in-memory network (aiortc's DummyConnection idea): loss, jitter, duplicates.

    `send(data, now)` schedules delivery; `deliver_until(now)` returns what has arrived, in
    arrival order, so reordering follows from the jitter.
    """

    def __init__(
        self,
        seed: int,
        loss: float = 0.0,
        jitter: float = 0.0,
        duplicate: float = 0.0,
        base_delay: float = 0.01,
        drop: set[int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss, self.jitter, self.duplicate = loss, jitter, duplicate
        self.base_delay = base_delay
        self.drop = drop or set()  # indices of packets to lose deterministically
        self.sent = 0
        self.lost = 0
        self._queue: list[tuple[float, int, bytes]] = []
        self._n = 0

    def send(self, data: bytes, now: float) -> None:
        index = self.sent
        self.sent += 1
        if index in self.drop or self.rng.random() < self.loss:
            self.lost += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.base_delay + self.rng.uniform(0, self.jitter)
            self._queue.append((now + delay, self._n, data))
            self._n += 1

    def deliver_until(self, now: float) -> list[tuple[float, bytes]]:
        self._queue.sort()
        ready = [item for item in self._queue if item[0] <= now]
        self._queue = self._queue[len(ready) :]
        return [(t, d) for t, _, d in ready]
