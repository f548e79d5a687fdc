"""The call history store (gateway.call.history): schema, restart survival, retention purge,
and the writer task that keeps SQLite off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from gateway.call.history import COLUMNS, SCHEMA_VERSION, History, HistoryStore


def record(call_id: str, ended_at: float, **detail: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "leg": "sip",
        "direction": "inbound",
        "caller": "alice",
        "called": "agent",
        "provider": "local",
        "model": "local-echo",
        "started_at": ended_at - 10,
        "answered_at": ended_at - 9,
        "ended_at": ended_at,
        "outcome": "remote_hangup",
        "duration_s": 9.0,
        "recording": None,
        "detail": detail,
    }


def test_schema_is_the_documented_one(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.close()
    db = sqlite3.connect(tmp_path / "h.sqlite3")
    cols = [row[1] for row in db.execute("PRAGMA table_info(calls)")]
    assert tuple(cols) == COLUMNS
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    doc = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    for col in COLUMNS:  # every column is documented
        assert f"`{col}`" in doc, col
    db.close()


def test_a_record_survives_a_restart_of_the_store(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.sqlite3"  # the directory is made
    transcript = [{"role": "user", "text": "[caller: 1.2 s]", "at_s": 3.1}]
    store = HistoryStore(path)
    store.insert(record("c1", time.time(), transcript=transcript))
    store.close()
    again = HistoryStore(path)
    got = again.get("c1")
    assert got is not None and got["detail"]["transcript"] == transcript
    assert [c["id"] for c in again.list()] == ["c1"]
    assert again.get("nope") is None
    again.close()


def test_retention_purges_only_the_old_calls(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    now = time.time()
    store.insert(record("old", now - 40 * 86400))
    store.insert(record("new", now - 86400))
    assert store.purge(now - 30 * 86400) == 1
    assert [c["id"] for c in store.list()] == ["new"]
    store.close()


def test_the_list_is_newest_first_and_pages_with_before(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(5):
        store.insert(record(f"c{i}", 1000.0 + i))
    assert [c["id"] for c in store.list(limit=2)] == ["c4", "c3"]
    assert [c["id"] for c in store.list(limit=2, before=1003.0)] == ["c2", "c1"]
    store.close()


async def test_the_writer_stores_off_the_loop_and_purges_at_start(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    old = HistoryStore(path)
    old.insert(record("ancient", time.time() - 10 * 86400))
    old.close()
    history = History(path, retention_days=7)
    await history.start()
    assert await history.list() == []  # purged at start
    threads: list[str] = []
    real_insert = history.store.insert  # type: ignore[union-attr]

    def insert(rec: dict[str, Any]) -> None:
        threads.append(threading.current_thread().name)
        real_insert(rec)

    history.store.insert = insert  # type: ignore[union-attr,method-assign]
    history.submit(record("c1", time.time()))
    history.submit(record("c2", time.time()))
    await history.aclose()  # writes what is queued
    assert threads and threading.main_thread().name not in threads
    reopened = History(path, retention_days=7)
    await reopened.start()
    assert {c["id"] for c in await reopened.list()} == {"c1", "c2"}
    await reopened.aclose()


async def test_a_failing_write_is_logged_and_the_writer_goes_on(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite3", retention_days=0)
    await history.start()
    history.submit({"id": "bad"})  # NOT NULL columns missing: sqlite3.IntegrityError
    history.submit(record("good", time.time()))
    await asyncio.sleep(0)
    await history.aclose()
    store = HistoryStore(tmp_path / "h.sqlite3")
    assert [c["id"] for c in store.list()] == ["good"]
    store.close()
