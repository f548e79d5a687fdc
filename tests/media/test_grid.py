"""DeadlineGrid arithmetic (sans-I/O): absolute deadlines, bounded catch-up, skipping a stall."""

from __future__ import annotations

import pytest

from gateway.media.grid import DeadlineGrid


def test_deadlines_are_absolute() -> None:
    grid = DeadlineGrid(0.02, max_behind=2, t0=100.0)
    assert grid.deadline == 100.0
    assert grid.due(100.0) == 100.0
    assert grid.advance() == pytest.approx(100.02)
    # a step run 7 ms late does not shift later deadlines (no drift)
    assert grid.due(100.027) == pytest.approx(100.02)
    assert grid.advance() == pytest.approx(100.04)
    assert grid.n == 2 and grid.stalls == 0 and grid.skipped == 0


def test_deadlines_never_drift_over_many_late_steps() -> None:
    grid = DeadlineGrid(0.005, max_behind=20)
    grid.start(7.0)
    for i in range(10_000):
        deadline = grid.due(grid.deadline + (i % 7) * 0.001)  # up to 6 ms late, never a stall
        assert deadline == 7.0 + i * 0.005
        grid.advance()
    assert grid.stalls == 0


def test_short_stall_catches_up_long_stall_skips_ahead() -> None:
    grid = DeadlineGrid(0.02, max_behind=2, t0=0.0)
    grid.due(0.0)
    grid.advance()
    # at 41 ms steps 1 and 2 are due: a small catch-up, nothing skipped
    assert grid.due(0.041) == pytest.approx(0.02)
    grid.advance()
    assert grid.due(0.041) == pytest.approx(0.04)
    grid.advance()
    assert grid.skipped == 0 and grid.stalls == 0
    # at 505 ms steps 3..25 are due: the last three run (two behind), twenty are skipped
    assert grid.due(0.505) == pytest.approx(0.46)
    assert grid.stalls == 1 and grid.skipped == 20 and grid.n == 23
    late = []
    for _ in range(3):
        late.append(grid.due(0.505))
        grid.advance()
    assert late == pytest.approx([0.46, 0.48, 0.50])
    assert grid.deadline == pytest.approx(0.52)  # back on the original grid
    assert grid.stalls == 1


def test_a_stall_can_skip_every_overdue_step() -> None:
    # the WebRTC leg's setting: after a stall it runs only the step due now
    grid = DeadlineGrid(0.02, max_behind=9, resume_behind=0, t0=0.0)
    grid.advance()
    assert grid.due(0.201) == pytest.approx(0.02)  # 9 steps behind: still caught up
    assert grid.stalls == 0
    grid.start(0.0)
    grid.advance()
    deadline = grid.due(1.007)  # 49 steps behind: a stall
    assert deadline == pytest.approx(1.0) and deadline <= 1.007 < deadline + 0.02
    assert grid.skipped == 49 and grid.stalls == 1
    assert grid.advance() == pytest.approx(1.02)


def test_start_restarts_the_grid_and_keeps_the_counters() -> None:
    grid = DeadlineGrid(0.03, max_behind=1)
    grid.due(1.0)
    grid.start(5.0)
    assert grid.n == 0 and grid.deadline == 5.0 and grid.due(5.0) == 5.0
    assert grid.stalls == 1 and grid.skipped == 32


@pytest.mark.parametrize(
    ("step", "max_behind", "resume_behind"),
    [(0.0, 2, None), (-0.02, 2, None), (0.02, 2, 3), (0.02, -1, None)],
)
def test_bad_arguments(step: float, max_behind: int, resume_behind: int | None) -> None:
    with pytest.raises(ValueError):
        DeadlineGrid(step, max_behind, resume_behind)
