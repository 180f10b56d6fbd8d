"""Tumbling windows on event time: bounds, emission on the watermark, late rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from tests.unit.engine.harness import run_job
from velostream.errors import ErrorKind, Stage
from velostream.sql.model import EmitMode

T0 = datetime(2024, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# In arrival order. Row 4 (b@50s) arrives after a@61s; row 6 (b@5s) after a@130s.
SECONDS = [0, 10, 59, 61, 50, 130, 5, 185]
EVENTS = pa.table(
    {
        "k": ["a", "b", "a", "a", "b", "a", "b", "a"],
        "v": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
        "ts": pa.array([at(s) for s in SECONDS], pa.timestamp("ms")),
        "epoch": pa.array([int(at(s).timestamp() * 1000) for s in SECONDS], pa.int64()),
    }
)
MINUTE = [T0 + timedelta(minutes=m) for m in range(5)]


def test_tumbling_with_time_column_and_watermark_allowance() -> None:
    run = run_job(
        "SELECT k, _window_start AS ws, _window_end AS we, COUNT(*) AS c, SUM(v) AS s "
        "FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)",
        EVENTS,
        batch_size=2,
        props={"watermark.max_out_of_orderness": "15s"},
    )
    # b@50s is within 15s of the max seen (61s); b@5s is not (max 130s): late, dropped
    assert run.rows == [
        {"k": "a", "ws": MINUTE[0], "we": MINUTE[1], "c": 2, "s": 4},
        {"k": "b", "ws": MINUTE[0], "we": MINUTE[1], "c": 2, "s": 7},
        {"k": "a", "ws": MINUTE[1], "we": MINUTE[2], "c": 1, "s": 4},
        {"k": "a", "ws": MINUTE[2], "we": MINUTE[3], "c": 1, "s": 6},
        {"k": "a", "ws": MINUTE[3], "we": MINUTE[4], "c": 1, "s": 8},
    ]
    assert run.executor is not None
    assert run.executor.late_records == 1  # type: ignore[attr-defined]
    assert run.late == []


def test_windows_are_emitted_when_the_watermark_passes_their_end() -> None:
    run = run_job(
        "SELECT k, _window_start AS ws, COUNT(*) AS c FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)",
        EVENTS,
        batch_size=1,
        props={"watermark.max_out_of_orderness": "15s"},
    )
    per_batch = [t.to_pylist() for t in run.outputs]
    # the first minute closes when a@130s lifts the watermark to 115s (6th batch)
    assert [len(rows) for rows in per_batch] == [0, 0, 0, 0, 0, 2, 0, 1, 2]
    assert per_batch[5] == [
        {"k": "a", "ws": MINUTE[0], "c": 2},
        {"k": "b", "ws": MINUTE[0], "c": 2},
    ]
    # a@185s closes minute 2 (watermark 170s); minutes 3 and 4 are open until the end
    assert per_batch[7] == [{"k": "a", "ws": MINUTE[1], "c": 1}]
    assert per_batch[8] == [
        {"k": "a", "ws": MINUTE[2], "c": 1},
        {"k": "a", "ws": MINUTE[3], "c": 1},
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8])
def test_interval_size_event_time_property_and_tumble_functions(batch_size: int) -> None:
    run = run_job(
        "SELECT k, TUMBLE_START(ts, INTERVAL '1' MINUTE) AS ws, "
        "TUMBLE_END(ts, INTERVAL '1' MINUTE) AS we, COUNT(*) AS c "
        "FROM t GROUP BY k WINDOW TUMBLING(INTERVAL '1' MINUTE)",
        EVENTS,
        batch_size=batch_size,
        props={"event.time.field": "ts"},
    )
    # no allowance: b@50s (after a@61s) and b@5s are late
    assert run.rows == [
        {"k": "a", "ws": MINUTE[0], "we": MINUTE[1], "c": 2},
        {"k": "b", "ws": MINUTE[0], "we": MINUTE[1], "c": 1},
        {"k": "a", "ws": MINUTE[1], "we": MINUTE[2], "c": 1},
        {"k": "a", "ws": MINUTE[2], "we": MINUTE[3], "c": 1},
        {"k": "a", "ws": MINUTE[3], "we": MINUTE[4], "c": 1},
    ]
    assert run.executor is not None
    assert run.executor.late_records == 2  # type: ignore[attr-defined]


def test_epoch_millisecond_event_time_gives_epoch_millisecond_bounds() -> None:
    base = int(T0.timestamp() * 1000)
    run = run_job(
        "SELECT _window_start AS ws, _window_end AS we, COUNT(*) AS c, SUM(v) AS s "
        "FROM t WINDOW TUMBLING(epoch, 1m)",
        EVENTS,
        batch_size=3,
        props={"watermark.max_out_of_orderness": "1m"},
    )
    # b@5s is late even with 1m allowed: the max seen is 130s by then
    assert run.rows == [
        {"ws": base, "we": base + 60_000, "c": 4, "s": 1 + 2 + 3 + 5},
        {"ws": base + 60_000, "we": base + 120_000, "c": 1, "s": 4},
        {"ws": base + 120_000, "we": base + 180_000, "c": 1, "s": 6},
        {"ws": base + 180_000, "we": base + 240_000, "c": 1, "s": 8},
    ]


@pytest.mark.parametrize(("size", "starts"), [("30s", [0, 30, 60]), ("500ms", [0, 0.5, 1])])
def test_window_sizes_in_other_units(size: str, starts: list[float]) -> None:
    table = pa.table(
        {"ts": pa.array([at(0), at(starts[1] + 0.1), at(starts[2])], pa.timestamp("ms"))}
    )
    run = run_job(
        f"SELECT _window_start AS ws, COUNT(*) AS c FROM t WINDOW TUMBLING(ts, {size})", table
    )
    assert run.column("ws") == [at(s) for s in starts]


def test_late_rows_dead_lettered_with_their_reference() -> None:
    run = run_job(
        "SELECT k, COUNT(*) AS c FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)",
        EVENTS,
        batch_size=3,
        props={"late.data.strategy": "dead_letter"},
    )
    assert [(r.ref, r.raw) for r in run.late] == [("t.csv:6", b"line 6"), ("t.csv:8", b"line 8")]
    assert {(r.stage, r.kind) for r in run.late} == {(Stage.PROCESS, ErrorKind.EXECUTION)}
    assert all("late" in r.message for r in run.late)
    assert run.bad == []
    assert run.executor is not None
    assert run.executor.late_records == 2  # type: ignore[attr-defined]


def test_late_rows_dropped_by_default_are_only_counted() -> None:
    run = run_job("SELECT COUNT(*) AS c FROM t WINDOW TUMBLING(ts, 1m)", EVENTS, batch_size=8)
    assert run.late == [] and run.bad == []
    assert run.executor is not None
    assert run.executor.late_records == 2  # type: ignore[attr-defined]
    assert run.column("c") == [3, 1, 1, 1]


def test_emit_changes_on_a_window_emits_the_running_value_per_row() -> None:
    run = run_job(
        "SELECT k, _window_start AS ws, COUNT(*) AS c, SUM(v) AS s "
        "FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)",
        EVENTS,
        batch_size=3,
        emit=EmitMode.CHANGES,
        props={"watermark.max_out_of_orderness": "15s"},
    )
    assert run.rows == [
        {"k": "a", "ws": MINUTE[0], "c": 1, "s": 1},
        {"k": "b", "ws": MINUTE[0], "c": 1, "s": 2},
        {"k": "a", "ws": MINUTE[0], "c": 2, "s": 4},
        {"k": "a", "ws": MINUTE[1], "c": 1, "s": 4},
        {"k": "b", "ws": MINUTE[0], "c": 2, "s": 7},
        {"k": "a", "ws": MINUTE[2], "c": 1, "s": 6},
        # b@5s is late
        {"k": "a", "ws": MINUTE[3], "c": 1, "s": 8},
    ]
    # nothing more at the end: every row was emitted as it came
    assert len(run.outputs) == 3
    assert run.executor is not None and run.executor.finish() is None


def test_window_with_having_order_by_and_where() -> None:
    run = run_job(
        "SELECT k, _window_start AS ws, SUM(v) AS s FROM t WHERE v > 1 GROUP BY k "
        "WINDOW TUMBLING(ts, 1m) HAVING SUM(v) <> 4 ORDER BY s DESC",
        EVENTS,
        batch_size=4,
        props={"watermark.max_out_of_orderness": "1m"},
    )
    # windows in time order, ORDER BY within a window; b@5s is late (watermark 70s)
    assert run.rows == [
        {"k": "b", "ws": MINUTE[0], "s": 7},
        {"k": "a", "ws": MINUTE[0], "s": 3},
        {"k": "a", "ws": MINUTE[2], "s": 6},
        {"k": "a", "ws": MINUTE[3], "s": 8},
    ]


def test_rows_without_an_event_time_are_bad_records() -> None:
    table = pa.table({"ts": pa.array([at(0), None, at(1)], pa.timestamp("ms"))})
    run = run_job("SELECT COUNT(*) AS c FROM t WINDOW TUMBLING(ts, 1m)", table, batch_size=2)
    assert run.column("c") == [2]
    assert [(b.ref, b.stage, b.kind) for b in run.bad] == [
        ("t.csv:3", Stage.PROCESS, ErrorKind.TYPE)
    ]
    assert "NULL" in run.bad[0].message


def test_count_distinct_state_is_released_with_its_window() -> None:
    seconds = [0, 1, 70, 71, 140]
    table = pa.table(
        {
            "ts": pa.array([at(s) for s in seconds], pa.timestamp("ms")),
            "u": ["x", "y", "x", "x", "z"],
        }
    )
    run = run_job(
        "SELECT _window_start AS ws, COUNT(DISTINCT u) AS users FROM t WINDOW TUMBLING(ts, 1m)",
        table,
        batch_size=1,
    )
    assert run.rows == [
        {"ws": MINUTE[0], "users": 2},
        {"ws": MINUTE[1], "users": 1},
        {"ws": MINUTE[2], "users": 1},
    ]
    assert run.executor is not None
    remembered = run.executor.con.sql("SELECT COUNT(*) FROM __dstate0").fetchall()
    assert remembered == [(1,)]  # only the open window's value ('z')
