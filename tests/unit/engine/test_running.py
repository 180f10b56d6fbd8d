"""EMIT CHANGES on numpy (`engine.running`) gives what the DuckDB path gives.

The DuckDB path (window functions over each batch merged with carried state) is the
reference: the same query runs both ways over the same rows, cut into batches of
several sizes, including values that overflow int64 sums, NaN, NULL and -0.0 keys.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.engine.harness import (
    LineRefs,
    assert_rows_equal,
    cut,
    make_job,
    run_job,
    values_equal,
)
from velostream.datasource.traits import SourceBatch
from velostream.engine import aggregate, build_executor
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job


def table(n: int = 60, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    keys = np.array(["a", "b", "c", "", "ä"], dtype=object)[rng.integers(0, 5, n)]
    keys[rng.random(n) < 0.1] = None
    ints = rng.integers(-1000, 1000, n).astype(object)
    ints[rng.random(n) < 0.1] = None
    floats = np.round(rng.normal(0, 100, n), 2).astype(object)
    floats[rng.random(n) < 0.05] = float("nan")
    floats[rng.random(n) < 0.1] = None
    fkeys = np.array([0.0, -0.0, 1.5, float("nan")], dtype=object)[rng.integers(0, 4, n)]
    start = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "rn": pa.array(np.arange(n), pa.int64()),
            "k": pa.array(keys.tolist(), pa.string()),
            "g": pa.array(rng.integers(0, 3, n), pa.int32()),
            "fk": pa.array(fkeys.tolist(), pa.float64()),
            "i": pa.array(ints.tolist(), pa.int64()),
            "f": pa.array(floats.tolist(), pa.float64()),
            "f32": pa.array(rng.normal(0, 1, n).astype(np.float32)),
            "u": pa.array(rng.integers(0, 2**64 - 1, n, dtype=np.uint64)),
            "ts": pa.array(
                [start + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 10**6, n)]
            ),
            "s": pa.array(rng.choice(np.array(["x", "y", "z"]), n)),
        }
    )


QUERIES = [
    "SELECT k, COUNT(*) AS c, COUNT(i) AS ci, SUM(i) AS si, AVG(i) AS ai FROM t GROUP BY k",
    "SELECT k, SUM(f) AS sf, AVG(f) AS af, MIN(f) AS mnf, MAX(f) AS mxf FROM t GROUP BY k",
    "SELECT k, g, MIN(i) AS mi, MAX(g) AS mg, MIN(ts) AS first_ts, MAX(ts) AS last_ts "
    "FROM t GROUP BY k, g",
    "SELECT fk, COUNT(*) AS c, SUM(f32) AS s32, MAX(f32) AS m32 FROM t GROUP BY fk",
    "SELECT k, FIRST_VALUE(s) AS fs, LAST_VALUE(i) AS li, FIRST_VALUE(ts) AS ft FROM t GROUP BY k",
    "SELECT COUNT(*) AS c, SUM(u) AS su, SUM(i) AS si FROM t",
    "SELECT UPPER(k) AS uk, COUNT(*) + 1 AS c1, ROUND(AVG(f), 1) AS af FROM t "
    "WHERE i IS NOT NULL GROUP BY UPPER(k) HAVING COUNT(*) > 1",
    "SELECT ts, COUNT(*) AS c FROM t GROUP BY ts",
]


def assert_same(got: list[dict[str, object]], expected: list[dict[str, object]], sql: str) -> None:
    """As `assert_rows_equal`, with NaN equal to NaN."""
    assert len(got) == len(expected), sql
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert list(g) == list(e), sql
        for name in g:
            a, b = g[name], e[name]
            both_nan = isinstance(a, float) and isinstance(b, float) and a != a and b != b
            assert both_nan or values_equal(a, b), f"{sql}: row {index} {name}: {a!r} != {b!r}"


# The fast path of each emit mode, and the executor mode it runs in.
FAST_PATHS = {
    EmitMode.CHANGES: (aggregate.RunningAggregates, "running"),
    EmitMode.FINAL: (aggregate.FinalAggregates, "grouped"),
}


def run_both(
    sql: str,
    data: pa.Table,
    sizes: list[int],
    monkeypatch: pytest.MonkeyPatch,
    emit: EmitMode = EmitMode.CHANGES,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The rows of the fast (Arrow) path and of the DuckDB path, each checked to be taken."""
    fast, mode = FAST_PATHS[emit]
    ours = run_job(sql, data, batch_size=sizes, emit=emit)
    assert ours.executor is not None
    assert ours.executor._mode == mode  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:
        patch.setattr(fast, "build", classmethod(lambda *a: None))
        reference = run_job(sql, data, batch_size=sizes, emit=emit)
    assert reference.executor is not None
    assert reference.executor._mode == "sql"  # type: ignore[attr-defined]
    return ours.rows, reference.rows


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("sizes", [[1], [7, 3], [60]])
def test_running_values_equal_the_duckdb_path(
    sql: str, sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, reference = run_both(sql, table(), sizes, monkeypatch)
    assert_same(ours, reference, sql)


def test_integer_sums_beyond_int64_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    big = 2**62
    data = pa.table(
        {
            "rn": pa.array(range(6), pa.int64()),
            "k": ["a", "a", "b", "a", "b", "a"],
            "i": pa.array([big, big, -big, big, -big, -(2**63)], pa.int64()),
        }
    )
    sql = "SELECT k, SUM(i) AS s, AVG(i) AS a FROM t GROUP BY k"
    for sizes in ([1], [2], [6]):
        ours, reference = run_both(sql, data, sizes, monkeypatch)
        assert_rows_equal(ours, reference, sql)
        assert [r["s"] for r in ours] == [big, 2 * big, -big, 3 * big, -2 * big, 3 * big - 2**63]


def test_float_sums_do_not_depend_on_batch_size() -> None:
    rng = np.random.default_rng(5)
    data = pa.table(
        {
            "k": pa.array(rng.integers(0, 4, 500)),
            "f": pa.array(rng.normal(0, 1e6, 500) * 10.0 ** rng.integers(-8, 8, 500)),
        }
    )
    sql = "SELECT k, SUM(f) AS s FROM t GROUP BY k"
    whole = run_job(sql, data, emit=EmitMode.CHANGES).column("s")
    for sizes in ([1], [3, 17], [250]):
        assert run_job(sql, data, batch_size=sizes, emit=EmitMode.CHANGES).column("s") == whole


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT k, COUNT(DISTINCT s) AS d FROM t GROUP BY k",
        "SELECT k, STDDEV(f) AS sd FROM t GROUP BY k",
        "SELECT k, MIN(s) AS ms FROM t GROUP BY k",
    ],
)
def test_aggregates_numpy_does_not_cover_run_on_duckdb(sql: str) -> None:
    run = run_job(sql, table(), batch_size=[7], emit=EmitMode.CHANGES)
    assert run.executor is not None
    assert run.executor._mode == "sql"  # type: ignore[attr-defined]


def test_snapshot_restore_and_a_restart_from_a_checkpoint() -> None:
    data = table(40)
    sql = (
        "SELECT k, COUNT(*) AS c, SUM(i) AS si, MAX(f) AS mf, FIRST_VALUE(s) AS fs "
        "FROM t GROUP BY k"
    )
    expected = run_job(sql, data, batch_size=[6], emit=EmitMode.CHANGES).rows
    job = make_job(sql, emit=EmitMode.CHANGES)
    executor = build_executor(plan_job(job), job)
    rows: list[dict[str, object]] = []
    batches = cut(data, [6])
    for number, (offset, batch) in enumerate(batches):
        state = executor.snapshot()
        first = executor.process(SourceBatch(batch, LineRefs(offset)))
        executor.restore(state)  # an abort: the batch runs again
        again = executor.process(SourceBatch(batch, LineRefs(offset)))
        assert_same(again.table.to_pylist(), first.table.to_pylist(), sql)
        rows += again.table.to_pylist()
        if number == 2:
            # a restart: a new executor resumes from the checkpointed state
            checkpoint = executor.snapshot()
            executor = build_executor(plan_job(job), job)
            executor.restore(checkpoint)
    assert_same(rows, expected, sql)
