"""Session and sliding windows through the executor: the cases worth naming one by one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs, make_job, run_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.engine.aggregate import AggregateExecutor
from velostream.engine.session import SESSION_TABLE
from velostream.engine.tumbling import LATE_MESSAGE
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

T0 = datetime(2024, 1, 1, 9, 30)


def events(*rows: tuple[str, int]) -> pa.Table:
    """(key, event time in ms) per row, with `v` numbering the rows from 1."""
    return pa.table(
        {
            "k": [k for k, _ in rows],
            "v": pa.array(range(1, len(rows) + 1), pa.int64()),
            "et": pa.array([t for _, t in rows], pa.int64()),
        }
    )


SESSION = (
    "SELECT k, _window_start AS ws, _window_end AS we, COUNT(*) AS n, SUM(v) AS s "
    "FROM t GROUP BY k WINDOW SESSION(et, 10ms)"
)


def test_a_gap_of_exactly_the_gap_continues_the_session_and_one_more_ms_ends_it() -> None:
    run = run_job(SESSION, events(("a", 0), ("a", 10), ("a", 20), ("a", 31)), batch_size=1)
    assert [(r["ws"], r["we"], r["n"]) for r in run.rows] == [(0, 30, 3), (31, 41, 1)]


def test_a_row_out_of_order_bridges_two_open_sessions_into_one() -> None:
    table = events(("a", 0), ("a", 15), ("a", 8))  # 8 is within 10ms of both
    props = {"watermark.max_out_of_orderness": "20ms"}
    for sizes in (1, 3):
        run = run_job(SESSION, table, batch_size=sizes, props=props)
        assert [(r["ws"], r["we"], r["n"], r["s"]) for r in run.rows] == [(0, 25, 3, 6)]


@pytest.mark.parametrize("sizes", [1, 3])
def test_emit_changes_gives_each_row_the_session_it_joined_even_when_a_later_row_bridges(
    sizes: int,
) -> None:
    table = events(("a", 0), ("a", 15), ("a", 8))
    props = {"watermark.max_out_of_orderness": "20ms"}
    run = run_job(SESSION, table, batch_size=sizes, emit=EmitMode.CHANGES, props=props)
    assert [(r["ws"], r["we"], r["n"], r["s"]) for r in run.rows] == [
        (0, 10, 1, 1),
        (15, 25, 1, 2),  # not yet bridged: 8 has not come
        (0, 25, 3, 6),
    ]


def test_a_session_closed_by_the_watermark_is_emitted_and_its_rows_forgotten() -> None:
    job = make_job(SESSION)
    executor = build_executor(plan_job(job), job)
    assert isinstance(executor, AggregateExecutor)
    first = executor.process(SourceBatch(events(("a", 0), ("b", 5)), LineRefs(0)))
    assert first.table.num_rows == 0
    # 100ms moves the watermark past both sessions' ends (10 and 15): both are emitted
    out = executor.process(SourceBatch(events(("a", 100)), LineRefs(2)))
    assert [(r["k"], r["ws"], r["we"]) for r in out.table.to_pylist()] == [
        ("a", 0, 10),
        ("b", 5, 15),
    ]
    kept = executor.snapshot()[SESSION_TABLE]
    assert kept.column("__et").to_pylist() == [100]  # only the open session's row
    final = executor.finish()
    assert final is not None and final.to_pylist()[0]["ws"] == 100


def test_a_late_row_goes_to_the_dead_letter_queue_unless_it_meets_an_open_session() -> None:
    props = {"late.data.strategy": "dead_letter"}
    # 100 makes the watermark 100: 5 is late (its session [5, 15] ended before it);
    # 95 is not: it joins the open session of 100 (within 10ms).
    table = events(("a", 0), ("a", 100), ("a", 5), ("a", 95))
    run = run_job(SESSION, table, batch_size=[1, 3], props=props)
    assert [(r.ref, r.message) for r in run.late] == [("t.csv:4", LATE_MESSAGE)]
    assert [(r["ws"], r["n"]) for r in run.rows] == [(0, 1), (95, 2)]
    assert run.executor is not None and run.executor.late_records == 1


def test_a_row_behind_the_watermark_does_not_join_a_session_that_closed_before_it() -> None:
    # 20 closes the session of 0 (ended at 10 < 20 - 5); 12 is not late (its own session
    # ends at 22, after the watermark) but the session it would have joined had closed.
    props = {"watermark.max_out_of_orderness": "5ms"}
    run = run_job(SESSION, events(("a", 0), ("a", 20), ("a", 12)), props=props)
    assert [(r["ws"], r["we"], r["n"]) for r in run.rows] == [(0, 10, 1), (12, 30, 2)]


def test_timestamp_event_times_give_timestamp_bounds() -> None:
    table = pa.table(
        {
            "k": ["a", "a"],
            "ts": pa.array([T0, T0 + timedelta(seconds=30)], pa.timestamp("us")),
        }
    )
    sql = (
        "SELECT k, TUMBLE_START(ts) AS ws, TUMBLE_END(ts) AS we, COUNT(*) AS n FROM t "
        "GROUP BY k WINDOW SESSION(ts, INTERVAL '1' MINUTE)"
    )
    for emit in (None, EmitMode.CHANGES):
        run = run_job(sql, table, emit=emit)
        last = run.rows[-1]
        assert (last["ws"], last["we"]) == (T0, T0 + timedelta(seconds=90))
        assert run.outputs[-1].schema.field("ws").type == pa.timestamp("ms")


def test_order_by_having_and_limit_apply_to_the_emitted_sessions() -> None:
    sql = (
        "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(et, 10ms) "
        "HAVING COUNT(*) > 1 ORDER BY n DESC, k LIMIT 2"
    )
    table = events(("a", 0), ("b", 1), ("b", 2), ("c", 3), ("c", 4), ("c", 5), ("d", 6))
    run = run_job(sql, table, emit=EmitMode.FINAL)
    assert run.rows == [{"k": "c", "n": 3}, {"k": "b", "n": 2}]


def test_a_global_session_without_group_by() -> None:
    sql = "SELECT _window_start AS ws, COUNT(*) AS n FROM t WINDOW SESSION(et, 10ms)"
    run = run_job(sql, events(("a", 0), ("b", 5), ("c", 50)), batch_size=1)
    assert run.rows == [{"ws": 0, "n": 2}, {"ws": 50, "n": 1}]


@pytest.mark.parametrize("sizes", [1, 2, 5])
def test_sliding_windows_hold_each_row_in_every_window_containing_it(sizes: int) -> None:
    sql = (
        "SELECT k, _window_start AS ws, _window_end AS we, COUNT(*) AS n FROM t "
        "GROUP BY k WINDOW SLIDING(et, 30ms, 10ms)"
    )
    run = run_job(
        sql, events(("a", 0), ("a", 15), ("a", 29), ("a", 30), ("a", 95)), batch_size=sizes
    )
    assert [(r["ws"], r["we"], r["n"]) for r in run.rows] == [
        (-20, 10, 1),
        (-10, 20, 2),
        (0, 30, 3),
        (10, 40, 3),
        (20, 50, 2),
        (30, 60, 1),
        (70, 100, 1),
        (80, 110, 1),
        (90, 120, 1),
    ]
