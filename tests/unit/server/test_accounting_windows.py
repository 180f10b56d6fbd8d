"""Accounting (in = out or filtered + failed + late) for sliding and session windows.

The same generated JSON-lines inputs as `test_accounting`, through the same in-process
server as `velo-sql run`, grouped in sliding windows (a row in several windows, late
only when all of them had closed) and in sessions (late only when its own session had
ended and it meets no open one); each count is checked against a row-at-a-time model.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.session_model import sessions
from tests.unit.server.test_accounting import ROWS, _run

SIZE_MS, ADVANCE_MS, GAP_MS = 20, 5, 4
FAILING = ("bad_cast", "malformed")


def _sliding_model(rows: list[tuple[str, int]]) -> tuple[int, int, int]:
    """(late rows, rows in some window, copies of rows in windows)."""
    highest: int | None = None
    late = kept = copies = 0
    for kind, ts in rows:
        if kind in FAILING:
            continue
        latest = ts // ADVANCE_MS * ADVANCE_MS
        starts = [latest - i * ADVANCE_MS for i in range(SIZE_MS // ADVANCE_MS)]
        open_windows = [s for s in starts if highest is None or s + SIZE_MS > highest]
        if not open_windows:
            late += 1
            continue
        kept += 1
        copies += len(open_windows)
        highest = ts if highest is None else max(highest, ts)
    return late, kept, copies


def _check(run: object, rows: list[tuple[str, int]], late: int, counted: int) -> None:
    kinds = [kind for kind, _ in rows]
    stats = run.stats  # type: ignore[attr-defined]
    assert run.state == "completed", run.error  # type: ignore[attr-defined]
    assert stats.records_in == len(rows)
    assert stats.records_failed == sum(kinds.count(k) for k in FAILING)
    assert stats.late_records == late
    assert stats.records_in == counted + stats.records_failed + stats.late_records


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, batch=st.integers(1, 25))
def test_a_sliding_window_job_accounts_for_every_record(
    rows: list[tuple[str, int]], batch: int
) -> None:
    select = (
        "SELECT k, COUNT(*) AS c, SUM(CAST(v AS INTEGER)) AS s FROM src "
        f"GROUP BY k WINDOW SLIDING(ts, {SIZE_MS}ms, {ADVANCE_MS}ms)"
    )
    run, out, groups = _run(rows, select, batch)
    late, kept, copies = _sliding_model(rows)
    _check(run, rows, late, kept)
    assert sum(row["c"] for row in out) == copies
    dropped = [g for g in groups if g["message"].startswith("late records dropped")]
    assert [g["count"] for g in dropped] == ([late] if late else [])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, batch=st.integers(1, 25))
def test_a_session_window_job_accounts_for_every_record(
    rows: list[tuple[str, int]], batch: int
) -> None:
    select = (
        "SELECT k, COUNT(*) AS c, SUM(CAST(v AS INTEGER)) AS s FROM src "
        f"GROUP BY k WINDOW SESSION(ts, {GAP_MS}ms)"
    )
    run, out, groups = _run(rows, select, batch)
    timed = [(i, "all", ts) for i, (kind, ts) in enumerate(rows) if kind not in FAILING]
    model = sessions(timed, GAP_MS, 0)
    counted = len(timed) - len(model.late)
    _check(run, rows, len(model.late), counted)
    assert sorted(row["c"] for row in out) == sorted(len(s) for s in model.sessions)
    dropped = [g for g in groups if g["message"].startswith("late records dropped")]
    assert [g["count"] for g in dropped] == ([len(model.late)] if model.late else [])
