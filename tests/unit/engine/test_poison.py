"""Rows whose expressions fail in the process stage cost only themselves, never the batch."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tests.unit.engine.harness import run_job
from velostream.engine import core
from velostream.errors import ErrorKind, QueryExecutionError, Stage
from velostream.sql.model import EmitMode

ROWS = 3000
BATCH = 250


def poisoned(fraction: float = 0.01, seed: int = 7) -> tuple[pa.Table, list[int]]:
    """Orders whose `qty` is text; `fraction` of them cannot be read as an integer."""
    rng = random.Random(seed)
    bad = sorted(rng.sample(range(ROWS), int(ROWS * fraction)))
    bad_set = set(bad)
    qty = [
        f"{i % 97}" if i not in bad_set else rng.choice(["x1", "", "1.5e", "n/a"])
        for i in range(ROWS)
    ]
    table = pa.table(
        {
            "id": pa.array(range(ROWS), pa.int64()),
            "sym": [f"S{i % 5}" for i in range(ROWS)],
            "qty": qty,
            "day": [
                f"2024-01-{i % 28 + 1:02d}" if i not in bad_set else "2024-13-45"
                for i in range(ROWS)
            ],
        }
    )
    return table, bad


def line(row: int) -> str:
    return f"t.csv:{row + 2}"


@pytest.mark.parametrize("batch_size", [BATCH, 1000, ROWS])
def test_one_percent_failing_a_cast(batch_size: int) -> None:
    table, bad = poisoned()
    run = run_job("SELECT id, CAST(qty AS INTEGER) AS q, sym FROM t", table, batch_size=batch_size)
    good = [i for i in range(ROWS) if i not in set(bad)]
    assert run.column("id") == good, "every good row, in order"
    assert run.column("q") == [i % 97 for i in good]
    assert [r.ref for r in run.bad] == [line(i) for i in bad], "every bad row once"
    assert {(r.stage, r.kind) for r in run.bad} == {(Stage.PROCESS, ErrorKind.TYPE)}
    assert all(r.raw == f"line {i + 2}".encode() for r, i in zip(run.bad, bad, strict=True))
    assert all("CAST" in r.message and "qty" in r.message for r in run.bad)


def test_a_failing_cast_in_where() -> None:
    table, bad = poisoned()
    run = run_job("SELECT id FROM t WHERE CAST(qty AS INTEGER) > 90", table, batch_size=BATCH)
    bad_set = set(bad)
    assert run.column("id") == [i for i in range(ROWS) if i not in bad_set and i % 97 > 90]
    assert [r.ref for r in run.bad] == [line(i) for i in bad]


def test_a_cast_guarded_by_case_is_not_a_failure() -> None:
    table = pa.table({"s": ["1", "n/a", "x", "4"], "t": ["1", "2", "3", "oops"]})
    run = run_job(
        "SELECT CASE WHEN s = 'n/a' THEN -1 ELSE CAST(s AS INTEGER) END AS v, "
        "CAST(t AS INTEGER) AS w FROM t",
        table,
    )
    # 'x' and 'oops' fail; 'n/a' never reaches its CAST, so row 1 is good
    assert run.rows == [{"v": 1, "w": 1}, {"v": -1, "w": 2}]
    assert [r.ref for r in run.bad] == [line(2), line(3)]


def test_a_cast_in_where_skips_rows_filtered_out_first() -> None:
    table = pa.table({"kind": ["n", "s", "n"], "v": ["1", "abc", "zz"]})
    run = run_job("SELECT CAST(v AS INTEGER) AS n FROM t WHERE kind = 'n'", table)
    # row 1 is filtered out by WHERE before its CAST would fail; row 2 passes and fails
    assert run.rows == [{"n": 1}]
    assert [r.ref for r in run.bad] == [line(2)]


def test_function_errors_are_isolated_by_bisection(monkeypatch: pytest.MonkeyPatch) -> None:
    table, bad = poisoned()
    calls = []
    bisect = core._bisect

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return bisect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(core, "_bisect", spy)
    run = run_job("SELECT id, strptime(day, '%Y-%m-%d') AS d FROM t", table, batch_size=BATCH)
    bad_set = set(bad)
    assert run.column("id") == [i for i in range(ROWS) if i not in bad_set]
    assert [r.ref for r in run.bad] == [line(i) for i in bad]
    assert {(r.stage, r.kind) for r in run.bad} == {(Stage.PROCESS, ErrorKind.EXECUTION)}
    assert all("2024-13-45" in r.message for r in run.bad)
    assert calls, "no CAST to blame: the batch was bisected"


def test_error_function_rows_are_isolated() -> None:
    table = pa.table({"v": ["ok", "boom", "ok", "ok", "boom"]})
    run = run_job(
        "SELECT v, CASE WHEN v = 'boom' THEN error('bad value ' || v) ELSE v END AS w FROM t",
        table,
        batch_size=5,
    )
    assert run.column("w") == ["ok", "ok", "ok"]
    assert [r.ref for r in run.bad] == [line(1), line(4)]
    assert all("bad value boom" in r.message for r in run.bad)


def test_cast_and_function_failures_in_one_batch() -> None:
    table = pa.table(
        {"a": ["1", "x", "3", "4"], "d": ["2024-01-01", "2024-01-02", "nope", "2024-01-04"]}
    )
    run = run_job("SELECT CAST(a AS INTEGER) AS a, strptime(d, '%Y-%m-%d') AS d FROM t", table)
    assert run.column("a") == [1, 4]
    assert [(r.ref, r.kind) for r in run.bad] == [
        (line(1), ErrorKind.TYPE),
        (line(2), ErrorKind.EXECUTION),
    ]


@pytest.mark.parametrize("emit", [EmitMode.CHANGES, EmitMode.FINAL])
def test_poison_rows_in_an_aggregate_argument(emit: EmitMode) -> None:
    table, bad = poisoned()
    run = run_job(
        "SELECT sym, COUNT(*) AS n, SUM(CAST(qty AS INTEGER)) AS total FROM t GROUP BY sym",
        table,
        batch_size=BATCH,
        emit=emit,
    )
    bad_set = set(bad)
    good = [i for i in range(ROWS) if i not in bad_set]
    assert [r.ref for r in run.bad] == [line(i) for i in bad]
    if emit == EmitMode.CHANGES:
        assert len(run.rows) == len(good)
    totals = {f"S{s}": sum(i % 97 for i in good if i % 5 == s) for s in range(5)}
    last = {row["sym"]: row["total"] for row in run.rows}
    assert last == totals


def test_poison_rows_in_a_row_window_projection() -> None:
    table, bad = poisoned()
    run = run_job(
        "SELECT id, CAST(qty AS INTEGER) AS q, "
        "LAG(id) OVER (ROWS WINDOW BUFFER 1 ROWS) AS prev FROM t",
        table,
        batch_size=BATCH,
    )
    bad_set = set(bad)
    good = [i for i in range(ROWS) if i not in bad_set]
    assert run.column("id") == good
    assert run.column("prev") == [None, *good[:-1]], "bad rows never enter the buffer"
    assert [r.ref for r in run.bad] == [line(i) for i in bad]
    assert {r.kind for r in run.bad} == {ErrorKind.TYPE}


def test_a_query_error_that_is_not_a_row_error_is_raised() -> None:
    table = pa.table({"a": [1, 2]})
    with pytest.raises(QueryExecutionError, match="no_such_column"):
        run_job("SELECT no_such_column FROM t", table)
