from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.media.playout import PlayoutQueue


def _queue() -> PlayoutQueue:
    # PCMU at 8 kHz: 8 bytes per ms, 160-byte frames
    return PlayoutQueue(frame_bytes=160, bytes_per_ms=8.0, silence_byte=0xFF)


def test_frames_are_exact_and_padded_with_silence() -> None:
    q = _queue()
    q.push("item1", "resp1", bytes(range(200)))
    first = q.pull(0.0)
    second = q.pull(0.02)
    assert first == bytes(range(160))
    assert second is not None and len(second) == 160
    assert second[:40] == bytes(range(160, 200))
    assert second[40:] == b"\xff" * 120
    assert q.pull(0.04) is None


def test_played_ms_counts_what_was_pulled_not_what_was_queued() -> None:
    q = _queue()
    q.push("a", "r", b"\x01" * 8000)  # 1000 ms queued
    for i in range(10):
        q.pull(i * 0.02)
    assert q.played_ms("a") == 200
    cleared = q.clear()
    assert cleared.item_id == "a"
    assert cleared.response_id == "r"
    assert cleared.played_ms == 200
    assert cleared.dropped_ms == 800
    assert q.pull(1.0) is None
    assert q.queued_ms == 0


def test_frames_join_across_items_and_account_each() -> None:
    q = _queue()
    q.push("a", "r1", b"\x01" * 100)
    q.push("b", "r2", b"\x02" * 300)
    f = q.pull(0.0)
    assert f == b"\x01" * 100 + b"\x02" * 60
    assert q.items["a"].played_bytes == 100
    assert q.items["b"].played_bytes == 60
    assert q.playing_item == "b"


def test_full_queue_refuses_instead_of_growing() -> None:
    q = PlayoutQueue(frame_bytes=160, bytes_per_ms=8.0, max_ms=100)
    assert q.push("a", "r", b"\x00" * 800)
    assert not q.push("a", "r", b"\x00" * 8)
    assert q.queued_ms == 100


@given(st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=30))
def test_bytes_out_equal_bytes_in(sizes: list[int]) -> None:
    q = _queue()
    data = b"".join(bytes([i % 250]) * n for i, n in enumerate(sizes))
    for i, n in enumerate(sizes):
        q.push(f"i{i}", "r", bytes([i % 250]) * n)
    out = b""
    while (f := q.pull(0.0)) is not None:
        assert len(f) == 160
        out += f
    assert out[: len(data)] == data
    assert set(out[len(data) :]) <= {0xFF}
    assert sum(q.items[f"i{i}"].played_bytes for i in range(len(sizes))) == len(data)


def test_reformat_keeps_the_queue_in_place_and_the_played_milliseconds() -> None:
    q = _queue()
    q.push("a", "r", bytes(range(200)) * 4)  # 100 ms
    q.pull(0.0)
    q.pull(0.02)  # 40 ms played
    # a 30 ms ptime at another width (two bytes a sample, say): queued audio is converted
    q.reformat(frame_bytes=480, bytes_per_ms=16.0, silence_byte=0, convert=lambda b: b + b)
    assert q.played_ms("a") == 40
    assert q.queued_ms == 60
    rest = (bytes(range(200)) * 4)[320:] * 2
    assert q.pull(0.04) == rest[:480]
    assert q.pull(0.07) == rest[480:]
    assert q.pull(0.10) is None
    assert q.played_ms("a") == 100
