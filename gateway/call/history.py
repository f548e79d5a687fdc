"""Call history: what each call was, kept in an embedded SQLite database (docs/console.md).

`CallTrace` collects, on the event loop and in the call's own spots (transcripts as the Call sees
them, tool answers in the tool runner, the latency observations the bridge already reports), what
the history keeps of one call. At the call's end the Call turns it into one record (a plain
dict) and the `History` queues it; one writer task stores the queue in a worker thread
(`asyncio.to_thread`), so no SQLite call ever runs on the event loop or the media path. Reads
go through the same thread lock. Records older than `history_retention_days` are purged at start
and hourly.

The schema is one table, `calls`: the columns a list needs, and the rest of the record as JSON
in `detail`. `PRAGMA user_version` holds `SCHEMA_VERSION`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.logs import get_logger

log = get_logger("history")

SCHEMA_VERSION = 1
#: the columns of `calls`, in order; `detail` is JSON: transcript, tool_calls, errors, latency
COLUMNS = (
    "id",
    "leg",
    "direction",
    "caller",
    "called",
    "provider",
    "model",
    "started_at",
    "answered_at",
    "ended_at",
    "outcome",
    "duration_s",
    "recording",
    "detail",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,          -- the call id (as in GET /calls and the logs)
    leg TEXT NOT NULL,            -- sip / webrtc
    direction TEXT NOT NULL,      -- inbound / outbound
    caller TEXT NOT NULL,
    called TEXT NOT NULL,
    provider TEXT NOT NULL,       -- openai / yandex / local / url
    model TEXT NOT NULL,
    started_at REAL NOT NULL,     -- Unix seconds: the call arrived (or was placed)
    answered_at REAL,             -- Unix seconds: the call was answered; NULL if never
    ended_at REAL NOT NULL,       -- Unix seconds
    outcome TEXT NOT NULL,        -- remote_hangup, api_hangup, end_call, provider_failed, ...
    duration_s REAL NOT NULL,     -- answered to ended
    recording TEXT,               -- path of the stereo WAV, NULL when not recorded
    detail TEXT NOT NULL          -- JSON: transcript, tool_calls, errors, latency
);
CREATE INDEX IF NOT EXISTS calls_by_end ON calls (ended_at);
"""
#: records queued for the writer at most; beyond, a record is dropped (and logged)
QUEUE_LIMIT = 1000
PURGE_EVERY_S = 3600.0
#: list entries kept per call at most (a runaway call cannot grow a record without bound)
MAX_ENTRIES = 500


@dataclass
class CallTrace:
    """What the history keeps of a live call, filled in by the call's own observers. Times are
    seconds since the call was created (loop clock)."""

    transcript: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: per answered turn: vad_ms (caller stopped → speech_stopped), model_ms (→ first audio
    #: delta), gateway_ms (→ first packet to the caller), total_ms (speech_stopped → packet)
    responses: list[dict[str, float]] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    #: the gateway's own processing (MEDIA_ADDED_LATENCY's observations): sum and count
    added_to_model_s: float = 0.0
    added_to_model_n: int = 0
    added_to_caller_s: float = 0.0
    added_to_caller_n: int = 0

    def add(self, entries: list[Any], entry: Any) -> None:
        if len(entries) < MAX_ENTRIES:
            entries.append(entry)

    def latency(self) -> dict[str, Any]:
        """The call's latency figures (milliseconds), medians of its turns where several."""

        def median(values: list[float]) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[len(ordered) // 2], 1)

        stages = ("vad_ms", "model_ms", "gateway_ms", "total_ms")
        return {
            "turns": self.responses,
            "median": {k: median([r[k] for r in self.responses if k in r]) for k in stages},
            "barge_in_reaction_ms": self.barge_in_ms,
            "processing_to_model_ms": _mean_ms(self.added_to_model_s, self.added_to_model_n),
            "processing_to_caller_ms": _mean_ms(self.added_to_caller_s, self.added_to_caller_n),
        }


def _mean_ms(total_s: float, n: int) -> float | None:
    return round(total_s / n * 1000, 3) if n else None


class HistoryStore:
    """The SQLite file, used from one thread at a time (the lock); blocking calls."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def insert(self, record: dict[str, Any]) -> None:
        """Store one call record (a later record of the same id replaces it)."""
        row = [record.get(c) for c in COLUMNS[:-1]]
        row.append(json.dumps(record.get("detail", {}), default=str))
        marks = ",".join("?" * len(COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO calls ({','.join(COLUMNS)}) VALUES ({marks})", row
            )

    def list(self, limit: int = 50, before: float | None = None) -> list[dict[str, Any]]:
        """The newest calls first (without `detail`); `before`: ended before this Unix time."""
        cols = ",".join(COLUMNS[:-1])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {cols} FROM calls WHERE ended_at < ? ORDER BY ended_at DESC LIMIT ?",
                (before if before is not None else float("inf"), limit),
            ).fetchall()
        return [dict(zip(COLUMNS[:-1], r, strict=True)) for r in rows]

    def get(self, call_id: str) -> dict[str, Any] | None:
        """One call's whole record, `detail` decoded; None if unknown."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {','.join(COLUMNS)} FROM calls WHERE id = ?", (call_id,)
            ).fetchone()
        if row is None:
            return None
        record = dict(zip(COLUMNS, row, strict=True))
        record["detail"] = json.loads(record["detail"])
        return record

    def purge(self, older_than: float) -> int:
        """Delete the calls that ended before `older_than` (Unix time); how many went."""
        with self._lock:
            cur = self._db.execute("DELETE FROM calls WHERE ended_at < ?", (older_than,))
        return cur.rowcount

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class History:
    """The async side: a queue of finished calls and the one task that writes them."""

    def __init__(self, path: str | Path, retention_days: float) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * 86400.0
        self.store: HistoryStore | None = None
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open (or create) the database in a thread and start the writer."""
        self.store = await asyncio.to_thread(HistoryStore, self.path)
        await self._purge()
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="history")

    def submit(self, record: dict[str, Any]) -> None:
        """Queue a finished call's record; never blocks (a full queue drops it, logged)."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            log.warning("history_queue_full", call_id=record.get("id"))

    async def _purge(self) -> None:
        if self.store is None or self.retention_s <= 0:
            return
        try:
            gone = await asyncio.to_thread(self.store.purge, time.time() - self.retention_s)
        except sqlite3.Error as exc:
            log.error("history_purge_failed", error=str(exc))
            return
        if gone:
            log.info("history_purged", calls=gone)

    async def _writer(self) -> None:
        store = self.store
        assert store is not None
        next_purge = time.monotonic() + PURGE_EVERY_S
        while True:
            try:
                record = await asyncio.wait_for(self._queue.get(), PURGE_EVERY_S)
            except TimeoutError:
                record = {}
            if record is None:
                return
            if record:
                try:
                    await asyncio.to_thread(store.insert, record)
                except (sqlite3.Error, ValueError, TypeError) as exc:
                    log.error("history_write_failed", call_id=record.get("id"), error=str(exc))
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_EVERY_S
                await self._purge()

    async def list(self, limit: int = 50, before: float | None = None) -> list[dict[str, Any]]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.list, limit, before)

    async def get(self, call_id: str) -> dict[str, Any] | None:
        assert self.store is not None
        return await asyncio.to_thread(self.store.get, call_id)

    async def aclose(self) -> None:
        """Write what is queued, then close the database."""
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.to_thread(store.close)
