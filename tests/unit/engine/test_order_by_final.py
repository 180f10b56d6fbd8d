"""ORDER BY with EMIT FINAL sorts what is emitted, on every path that emits groups.

Issue 13, item 9: a GROUP BY's ORDER BY was dropped without a word when the query had no
EMIT (EMIT CHANGES is then the default, and it emits in arrival order); and a
grouped EMIT FINAL restored from a checkpoint emitted nothing at the end.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs, make_job, plan, run_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import AggregateExecutor, build_executor
from velostream.errors import PlanError
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

TRADES = pa.table(
    {
        "sym": ["b", "a", "c", "a", "b", "c", "d", "e"],
        "qty": pa.array([3, 5, 1, 2, 9, 4, None, 6], pa.int64()),
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.5],
    }
)
# By SUM(qty) DESC: b 12, a 7, e 6, c 5, d NULL (NULLS LAST, as DuckDB sorts)
BY_TOTAL = ["b", "a", "e", "c", "d"]


def _mode(run_executor: object) -> str | None:
    assert isinstance(run_executor, AggregateExecutor)
    return run_executor._mode


@pytest.mark.parametrize(
    ("aggregate", "mode"),
    [
        ("SUM(qty)", "grouped"),  # Arrow's grouping (`final`)
        ("SUM(qty) + 0 * COUNT(DISTINCT price)", "sql"),  # COUNT(DISTINCT) runs on DuckDB
        ("SUM(qty) + 0 * LENGTH(MIN(sym))", "sql"),  # MIN of a string runs on DuckDB
    ],
)
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_order_by_sorts_the_groups_emit_final_emits(
    aggregate: str, mode: str, batch_size: int
) -> None:
    run = run_job(
        f"SELECT sym, {aggregate} AS total FROM t GROUP BY sym ORDER BY total DESC",
        TRADES,
        batch_size=batch_size,
        emit=EmitMode.FINAL,
    )
    assert _mode(run.executor) == mode
    assert run.column("sym") == BY_TOTAL


@pytest.mark.parametrize("emit", [None, EmitMode.CHANGES])
def test_order_by_without_emit_final_is_refused_not_ignored(emit: EmitMode | None) -> None:
    with pytest.raises(PlanError, match="ORDER BY is not supported with EMIT CHANGES") as info:
        plan("SELECT sym, SUM(qty) AS total FROM t GROUP BY sym ORDER BY total DESC", emit=emit)
    assert "EMIT FINAL" in str(info.value)
    assert info.value.offset == len("SELECT sym, SUM(qty) AS total FROM t GROUP BY sym ORDER BY ")


def test_order_by_with_a_window_and_emit_changes_is_refused() -> None:
    with pytest.raises(PlanError, match="EMIT CHANGES"):
        plan(
            "SELECT sym, COUNT(*) AS n FROM t GROUP BY sym WINDOW TUMBLING(ts, 1m) ORDER BY n",
            emit=EmitMode.CHANGES,
        )


TICKS = pa.table(
    {
        "sym": ["a", "b", "c", "a", "c", "b", "c", "z"],
        "v": pa.array([1, 5, 3, 4, 1, 1, 10, 0], pa.int64()),
        # windows of 1 minute: [0, 60s) a1 b5 c3 a4; [60s, 120s) c1 b1 c10; z at 10 minutes
        "ts": pa.array([1_000, 2_000, 3_000, 4_000, 61_000, 62_000, 63_000, 600_000], pa.int64()),
    }
)


@pytest.mark.parametrize("emit", [None, EmitMode.FINAL])
@pytest.mark.parametrize("batch_size", [1, 4, 7, 8])
def test_each_closed_window_is_emitted_sorted_by_order_by(
    emit: EmitMode | None, batch_size: int
) -> None:
    run = run_job(
        "SELECT sym, SUM(v) AS total, _window_start AS ws FROM t GROUP BY sym "
        "WINDOW TUMBLING(ts, 1m) ORDER BY total DESC, sym",
        TICKS,
        batch_size=batch_size,
        emit=emit,
        props={"watermark.max_out_of_orderness": "1m"},
    )
    assert [(r["ws"], r["sym"], r["total"]) for r in run.rows] == [
        (0, "a", 5),
        (0, "b", 5),
        (0, "c", 3),
        (60_000, "c", 11),
        (60_000, "b", 1),
        (600_000, "z", 0),
    ]
    # The two first windows close together when z arrives (the watermark trails by a
    # minute): one output, windows in time order, each sorted by the ORDER BY.
    if batch_size == 1:
        emitted = [t.num_rows for t in run.outputs]
        assert emitted[7] == 5 and sum(emitted[:7]) == 0


def test_a_restored_grouped_state_is_emitted_sorted_at_the_end() -> None:
    job = make_job(
        "SELECT sym, SUM(qty) AS total FROM t GROUP BY sym ORDER BY total DESC",
        emit=EmitMode.FINAL,
    )
    first = build_executor(plan_job(job), job)
    first.process(SourceBatch(TRADES, LineRefs(0)))
    assert isinstance(first, AggregateExecutor) and first._mode == "grouped"
    state = first.snapshot()
    restarted = build_executor(plan_job(job), job)
    restarted.restore(state)
    out = restarted.finish()  # no batch came after the restart
    assert out is not None
    assert out.column("sym").to_pylist() == BY_TOTAL
    assert restarted.finish() is None  # emitted once
