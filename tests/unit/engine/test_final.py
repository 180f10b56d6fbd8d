"""EMIT FINAL on Arrow's grouping (`engine.final`) gives what the DuckDB path gives."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.engine import test_running as running
from tests.unit.engine.harness import LineRefs, cut, make_job, run_job
from tests.unit.engine.test_running import assert_same, table
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

QUERIES = [
    "SELECT k, COUNT(*) AS c, COUNT(i) AS ci, SUM(i) AS si, AVG(i) AS ai FROM t GROUP BY k",
    "SELECT k, SUM(f) AS sf, AVG(f) AS af, MIN(f) AS mnf, MAX(f) AS mxf FROM t GROUP BY k",
    "SELECT k, g, MIN(i) AS mi, MAX(g) AS mg, MIN(ts) AS first_ts, MAX(ts) AS last_ts "
    "FROM t GROUP BY k, g",
    "SELECT fk, COUNT(*) AS c, SUM(f32) AS s32, MAX(f32) AS m32, MIN(f) AS mf FROM t GROUP BY fk",
    "SELECT COUNT(*) AS c, SUM(u) AS su, SUM(i) AS si, MAX(f) AS mf FROM t",
    "SELECT UPPER(k) AS uk, COUNT(*) + 1 AS c1, ROUND(AVG(f), 1) AS af FROM t "
    "WHERE i IS NOT NULL GROUP BY UPPER(k) HAVING COUNT(*) > 1 ORDER BY uk DESC LIMIT 3",
    "SELECT ts, COUNT(*) AS c FROM t GROUP BY ts",
]


def run_both(
    sql: str, data: pa.Table, sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    return running.run_both(sql, data, sizes, monkeypatch, emit=EmitMode.FINAL)


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("sizes", [[1], [7, 3], [60]])
def test_grouped_partials_equal_the_duckdb_path(
    sql: str, sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, reference = run_both(sql, table(), sizes, monkeypatch)
    assert_same(ours, reference, sql)


@pytest.mark.parametrize(
    "keys",
    [
        pa.array([decimal.Decimal("1.5"), decimal.Decimal("2.0"), None, decimal.Decimal("1.5")]),
        pa.array([datetime.time(1), datetime.time(2), None, datetime.time(1)]),
        pa.array([b"a", b"b", None, b"a"], pa.large_binary()),
    ],
    ids=["decimal", "time", "large_binary"],
)
def test_keys_of_every_groupable_type_take_the_grouped_path(
    keys: pa.Array, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pa.table({"k": keys, "i": [1, 2, 3, 4]})
    sql = "SELECT k, COUNT(*) AS c, SUM(i) AS s FROM t GROUP BY k"
    ours, reference = run_both(sql, data, [3, 1], monkeypatch)
    assert_same(ours, reference, sql)
    assert sorted((r["c"], r["s"]) for r in ours) == [(1, 2), (1, 3), (2, 5)]


def test_integer_sums_beyond_int64_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    big = 2**62
    data = pa.table(
        {
            "k": ["a", "a", "b", "a", "b", "a"],
            "i": pa.array([big, big, -big, big, -big, -(2**63)], pa.int64()),
        }
    )
    sql = "SELECT k, SUM(i) AS s, AVG(i) AS a FROM t GROUP BY k"
    for sizes in ([1], [2], [6]):
        ours, reference = run_both(sql, data, sizes, monkeypatch)
        assert_same(ours, reference, sql)
        assert [r["s"] for r in ours] == [3 * big - 2**63, -2 * big]


def test_max_is_nan_once_a_nan_is_seen_and_min_skips_it(monkeypatch: pytest.MonkeyPatch) -> None:
    nan = float("nan")
    data = pa.table(
        {"k": ["a", "a", "a", "b", "b"], "f": pa.array([1.0, nan, 3.0, nan, None], pa.float64())}
    )
    sql = "SELECT k, MIN(f) AS lo, MAX(f) AS hi FROM t GROUP BY k"
    for sizes in ([1], [2], [5]):
        ours, reference = run_both(sql, data, sizes, monkeypatch)
        assert_same(ours, reference, sql)
        assert ours[0]["lo"] == 1.0 and ours[0]["hi"] != ours[0]["hi"]  # NaN


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT k, COUNT(DISTINCT s) AS d FROM t GROUP BY k",
        "SELECT k, STDDEV(f) AS sd FROM t GROUP BY k",
        "SELECT k, FIRST_VALUE(s) AS fs FROM t GROUP BY k",
        "SELECT k, MAX(s) AS ms FROM t GROUP BY k",
    ],
)
def test_aggregates_arrow_does_not_group_run_on_duckdb(sql: str) -> None:
    run = run_job(sql, table(), batch_size=[7], emit=EmitMode.FINAL)
    assert run.executor is not None
    assert run.executor._mode == "sql"  # type: ignore[attr-defined]


def test_snapshot_restore_and_a_restart_from_a_checkpoint() -> None:
    data = table(40)
    sql = (
        "SELECT k, COUNT(*) AS c, SUM(i) AS si, MAX(f) AS mf, AVG(f32) AS a, MIN(g) AS mg, "
        "MAX(ts) AS mt FROM t GROUP BY k"
    )
    expected = run_job(sql, data, batch_size=[6], emit=EmitMode.FINAL).rows
    job = make_job(sql, emit=EmitMode.FINAL)
    executor = build_executor(plan_job(job), job)
    for number, (offset, batch) in enumerate(cut(data, [6])):
        state = executor.snapshot()
        executor.process(SourceBatch(batch, LineRefs(offset)))
        executor.restore(state)  # an abort: the batch runs again
        executor.process(SourceBatch(batch, LineRefs(offset)))
        if number == 2:  # a restart: a new executor resumes from the checkpoint
            checkpoint = executor.snapshot()
            executor = build_executor(plan_job(job), job)
            executor.restore(checkpoint)
    final = executor.finish()
    assert final is not None
    assert_same(final.to_pylist(), expected, sql)


def test_float_group_keys_join_zero_and_negative_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pa.table({"x": pa.array(np.array([0.0, -0.0, 1.5, np.nan, np.nan, 0.0]))})
    sql = "SELECT x, COUNT(*) AS c FROM t GROUP BY x"
    ours, reference = run_both(sql, data, [2], monkeypatch)
    assert_same(ours, reference, sql)
    assert sorted(r["c"] for r in ours) == [1, 2, 3]


def test_limit_counts_each_closed_window_row_once() -> None:
    # windows close batch by batch; LIMIT must count every emitted row exactly once
    data = pa.table(
        {
            "k": ["a", "b", "a", "b", "a", "b", "a", "b"],
            "et": pa.array([0, 10, 1000, 1010, 2000, 2010, 3000, 3010], pa.int64()),
        }
    )
    query = "SELECT k, _window_start AS ws, COUNT(*) AS c FROM t GROUP BY k WINDOW TUMBLING(et, 1s)"
    whole = run_job(query, data, batch_size=[2]).rows
    limited = run_job(query + " LIMIT 5", data, batch_size=[2]).rows
    assert len(whole) == 8
    assert limited == whole[:5]


@pytest.mark.parametrize("sizes", [[1], [2], [3]])
def test_a_global_aggregate_of_no_rows_is_sqls_one_row(sizes: list[int]) -> None:
    """Every row filtered out: a global aggregate still gives SQL's one row (COUNT 0, the
    rest NULL), through each state path (Arrow's grouping, DuckDB's), then its HAVING;
    a grouped one gives no row."""
    t = pa.table(
        {"i": pa.array([None, None, 4], pa.int64()), "s": ["a", "b", "c"], "f": [1.0, None, 2.0]}
    )
    where = " WHERE i IS NULL AND f > 5"
    expected: list[tuple[str, str, list[dict[str, object]]]] = [
        (
            "SELECT COUNT(*) AS c, SUM(i) AS s, AVG(f) AS a, MIN(s) AS m FROM t",
            "",
            [{"c": 0, "s": None, "a": None, "m": None}],
        ),
        (
            "SELECT LISTAGG(s, ',') AS l, COUNT(DISTINCT s) AS d, STDDEV(f) AS sd FROM t",
            "",
            [{"l": None, "d": 0, "sd": None}],
        ),
        ("SELECT COUNT(*) + 1 AS c FROM t", "", [{"c": 1}]),
        ("SELECT COUNT(*) AS c FROM t", " HAVING COUNT(*) > 0", []),
        ("SELECT s, COUNT(*) AS c FROM t", " GROUP BY s", []),  # no group
    ]
    for head, tail, rows in expected:
        sql = head + where + tail
        assert run_job(sql, t, batch_size=sizes, emit=EmitMode.FINAL).rows == rows, sql
    # Rows that pass, then a HAVING that refuses their group: still no row.
    sql = "SELECT COUNT(*) AS c FROM t HAVING COUNT(*) < 1"
    assert run_job(sql, t, batch_size=sizes, emit=EmitMode.FINAL).rows == []


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        (
            "SELECT COUNT(*) AS c, SUM(i) AS s, AVG(f) AS a, MIN(s) AS m FROM t",
            [{"c": 0, "s": None, "a": None, "m": None}],
        ),
        (
            "SELECT COUNT(DISTINCT s) AS d, LISTAGG(s, ',') AS l FROM t WHERE i > 1",
            [{"d": 0, "l": None}],
        ),
        ("SELECT COUNT(*) AS c FROM t HAVING COUNT(*) > 0", []),
        ("SELECT s, COUNT(*) AS c FROM t GROUP BY s", []),  # no group
    ],
)
def test_a_global_aggregate_no_row_reached_learns_its_columns_from_the_source(
    sql: str, rows: list[dict[str, object]]
) -> None:
    """No batch came (a header-only file, or only bad lines): `prime` gives the source's
    column names, untyped, and the global aggregate still answers SQL's one row."""
    job = make_job(sql, emit=EmitMode.FINAL)
    executor = build_executor(plan_job(job), job)
    executor.prime(pa.schema([("i", pa.string()), ("s", pa.string()), ("f", pa.string())]))
    final = executor.finish()
    assert (final.to_pylist() if final is not None else []) == rows


def test_priming_a_restored_global_aggregate_keeps_its_state() -> None:
    """A job restored from a checkpoint whose source has nothing new: its state, not an
    empty input, gives the final row."""
    sql = "SELECT COUNT(*) AS c, SUM(i) AS s FROM t"
    t = pa.table({"i": pa.array([1, 2, 3], pa.int64())})
    job = make_job(sql, emit=EmitMode.FINAL)
    first = build_executor(plan_job(job), job)
    first.process(SourceBatch(t, LineRefs(0)))
    again = build_executor(plan_job(job), job)
    again.restore(first.snapshot())
    again.prime(pa.schema([("i", pa.string())]))
    final = again.finish()
    assert final is not None and final.to_pylist() == [{"c": 3, "s": 6}]
