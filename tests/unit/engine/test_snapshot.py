"""An executor rewound to a snapshot replays a batch exactly as the first time."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs, cut, make_job, run_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

EVENTS = pa.table(
    {
        "k": ["a", "b", "a", "c", "b", "a", "c", "a", "b", "b"],
        "v": pa.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], pa.int64()),
        "s": ["x", "y", "x", "z", "y", "w", "z", "x", "v", "y"],
        "et": pa.array([0, 5, 61, 62, 30, 125, 126, 190, 191, 250], pa.int64()),
    }
)

QUERIES = [
    ("SELECT k, v FROM t WHERE v > 2 LIMIT 5", None, {}),
    (
        "SELECT k, COUNT(*) AS n, SUM(v) AS s, COUNT(DISTINCT s) AS d FROM t GROUP BY k",
        EmitMode.CHANGES,
        {},
    ),
    (
        "SELECT k, COUNT(*) AS n, AVG(v) AS a, COUNT(DISTINCT s) AS d FROM t GROUP BY k",
        EmitMode.FINAL,
        {},
    ),
    (
        "SELECT k, _window_start AS ws, COUNT(DISTINCT s) AS d, SUM(v) AS s FROM t "
        "GROUP BY k WINDOW TUMBLING(et, 60ms)",
        None,
        {"watermark.max_out_of_orderness": "40ms"},
    ),
    (
        "SELECT k, _window_start AS ws, _window_end AS we, COUNT(DISTINCT s) AS d, SUM(v) AS s, "
        "FIRST_VALUE(s) AS f FROM t GROUP BY k WINDOW SESSION(et, 40ms)",
        None,
        {"watermark.max_out_of_orderness": "40ms"},
    ),
    (
        "SELECT k, _window_start AS ws, COUNT(*) AS n, LAST_VALUE(s) AS l FROM t "
        "GROUP BY k WINDOW SESSION(et, 40ms)",
        EmitMode.CHANGES,
        {"watermark.max_out_of_orderness": "10ms"},
    ),
    (
        "SELECT k, TUMBLE_START(et) AS ws, COUNT(DISTINCT s) AS d, SUM(v) AS s FROM t "
        "GROUP BY k WINDOW SLIDING(et, 60ms, 20ms)",
        None,
        {"watermark.max_out_of_orderness": "40ms"},
    ),
    (
        "SELECT v, LAG(v) OVER (ROWS WINDOW BUFFER 2 ROWS PARTITION BY k) AS p, "
        "LEAD(s) OVER (ROWS WINDOW BUFFER 2 ROWS PARTITION BY k) AS n, "
        "ROW_NUMBER() OVER (ROWS WINDOW BUFFER 1 ROWS) AS r, "
        "RANK() OVER (ROWS WINDOW BUFFER 3 ROWS ORDER BY v DESC) AS rk FROM t",
        None,
        {},
    ),
]


@pytest.mark.parametrize(("sql", "emit", "props"), QUERIES, ids=[q[0][:40] for q in QUERIES])
def test_replaying_a_batch_after_restore_gives_the_same_rows(
    sql: str, emit: EmitMode | None, props: dict[str, str]
) -> None:
    expected = run_job(sql, EVENTS, batch_size=3, emit=emit, props=props)
    job = make_job(sql, emit=emit, props=props)
    executor = build_executor(plan_job(job), job)
    rows = []
    for offset, batch in cut(EVENTS, [3]):
        state = executor.snapshot()
        first = executor.process(SourceBatch(batch, LineRefs(offset)))
        executor.restore(state)  # abort: the batch is replayed
        again = executor.process(SourceBatch(batch, LineRefs(offset)))
        assert again.table.to_pylist() == first.table.to_pylist()
        rows += again.table.to_pylist()
    final = executor.finish()
    rows += final.to_pylist() if final is not None else []
    assert rows == expected.rows
