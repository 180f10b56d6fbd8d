"""GROUP BY over a stream: every aggregate under EMIT CHANGES and EMIT FINAL, HAVING, ORDER BY."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from tests.unit.engine.harness import run_job
from velostream.sql.model import EmitMode

CHANGES, FINAL = EmitMode.CHANGES, EmitMode.FINAL

# 8 input rows; groups a (rows 0, 2, 3, 6), b (1, 4, 7), c (5). Row 3 has a NULL price.
TRADES = pa.table(
    {
        "sym": ["a", "b", "a", "a", "b", "c", "a", "b"],
        "price": [1.0, 2.0, 3.0, None, 5.0, 6.0, 7.0, 8.0],
        "qty": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
    }
)
SYMS = TRADES.column("sym").to_pylist()

R2, R45 = math.sqrt(2), math.sqrt(4.5)

# aggregate -> (running value after each input row, final value per group)
AGGREGATES: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("COUNT(*)", [1, 1, 2, 3, 2, 1, 4, 3], {"a": 4, "b": 3, "c": 1}),
    ("COUNT(price)", [1, 1, 2, 2, 2, 1, 3, 3], {"a": 3, "b": 3, "c": 1}),
    ("COUNT(DISTINCT qty % 2)", [1, 1, 1, 2, 2, 1, 2, 2], {"a": 2, "b": 2, "c": 1}),
    ("SUM(qty)", [1, 2, 4, 8, 7, 6, 15, 15], {"a": 15, "b": 15, "c": 6}),
    ("SUM(price)", [1.0, 2.0, 4.0, 4.0, 7.0, 6.0, 11.0, 15.0], {"a": 11.0, "b": 15.0, "c": 6.0}),
    ("AVG(price)", [1.0, 2.0, 2.0, 2.0, 3.5, 6.0, 11 / 3, 5.0], {"a": 11 / 3, "b": 5.0, "c": 6.0}),
    ("AVG(qty)", [1.0, 2.0, 2.0, 8 / 3, 3.5, 6.0, 3.75, 5.0], {"a": 3.75, "b": 5.0, "c": 6.0}),
    ("MIN(price)", [1.0, 2.0, 1.0, 1.0, 2.0, 6.0, 1.0, 2.0], {"a": 1.0, "b": 2.0, "c": 6.0}),
    ("MAX(qty)", [1, 2, 3, 4, 5, 6, 7, 8], {"a": 7, "b": 8, "c": 6}),
    ("MIN(sym)", SYMS, {"a": "a", "b": "b", "c": "c"}),
    (
        "STDDEV(price)",
        [None, None, R2, R2, R45, None, math.sqrt(28 / 3), 3.0],
        {"a": math.sqrt(28 / 3), "b": 3.0, "c": None},
    ),
    (
        "STDDEV_POP(price)",
        [0.0, 0.0, 1.0, 1.0, 1.5, 0.0, math.sqrt(56 / 9), math.sqrt(6)],
        {"a": math.sqrt(56 / 9), "b": math.sqrt(6), "c": 0.0},
    ),
    ("FIRST_VALUE(qty)", [1, 2, 1, 1, 2, 6, 1, 2], {"a": 1, "b": 2, "c": 6}),
    ("LAST_VALUE(qty)", [1, 2, 3, 4, 5, 6, 7, 8], {"a": 7, "b": 8, "c": 6}),
    # NULLs count as values for FIRST_VALUE / LAST_VALUE (RESPECT NULLS)
    (
        "LAST_VALUE(price)",
        [1.0, 2.0, 3.0, None, 5.0, 6.0, 7.0, 8.0],
        {"a": 7.0, "b": 8.0, "c": 6.0},
    ),
]
IDS = [a[0] for a in AGGREGATES]


def _approx(values: list[Any]) -> list[Any]:
    return [pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in values]


@pytest.mark.parametrize(("aggregate", "running", "final"), AGGREGATES, ids=IDS)
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_emit_changes_one_row_per_input_row_with_the_running_value(
    aggregate: str, running: list[Any], final: dict[str, Any], batch_size: int
) -> None:
    run = run_job(
        f"SELECT sym, {aggregate} AS v FROM t GROUP BY sym",
        TRADES,
        batch_size=batch_size,
        emit=CHANGES,
    )
    assert run.columns == ["sym", "v"]
    assert run.column("sym") == SYMS
    assert run.column("v") == _approx(running)
    assert run.bad == []


@pytest.mark.parametrize(("aggregate", "running", "final"), AGGREGATES, ids=IDS)
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_emit_final_one_row_per_group_when_the_source_ends(
    aggregate: str, running: list[Any], final: dict[str, Any], batch_size: int
) -> None:
    run = run_job(
        f"SELECT sym, {aggregate} AS v FROM t GROUP BY sym",
        TRADES,
        batch_size=batch_size,
        emit=FINAL,
    )
    # nothing before the end; then the groups, ordered by key
    assert all(t.num_rows == 0 for t in run.outputs[:-1])
    assert run.column("sym") == ["a", "b", "c"]
    assert run.column("v") == _approx([final[s] for s in ["a", "b", "c"]])


def test_emit_changes_is_the_default_without_a_window() -> None:
    run = run_job("SELECT sym, COUNT(*) AS c FROM t GROUP BY sym", TRADES, batch_size=3)
    assert run.column("c") == [1, 1, 2, 3, 2, 1, 4, 3]


def test_all_aggregates_together_in_one_query() -> None:
    select = ", ".join(f"{a} AS v{i}" for i, a in enumerate(IDS))
    run = run_job(f"SELECT sym, {select} FROM t GROUP BY sym", TRADES, batch_size=3, emit=CHANGES)
    for i, (_, running, _) in enumerate(AGGREGATES):
        assert run.column(f"v{i}") == _approx(running), IDS[i]


def test_expressions_over_aggregates_and_keys() -> None:
    run = run_job(
        "SELECT UPPER(sym) AS s, COUNT(*) + 1 AS c1, SUM(qty) * 10 / COUNT(*) AS r, "
        "MAX(qty) - MIN(qty) AS spread FROM t GROUP BY sym",
        TRADES,
        batch_size=2,
        emit=FINAL,
    )
    assert run.rows == [
        {"s": "A", "c1": 5, "r": 37.5, "spread": 6},
        {"s": "B", "c1": 4, "r": 50.0, "spread": 6},
        {"s": "C", "c1": 2, "r": 60.0, "spread": 0},
    ]


def test_group_by_an_expression_or_its_alias() -> None:
    by_expr = run_job(
        "SELECT qty % 2 AS odd, SUM(qty) AS s FROM t GROUP BY qty % 2", TRADES, emit=FINAL
    )
    by_alias = run_job(
        "SELECT qty % 2 AS odd, SUM(qty) AS s FROM t GROUP BY odd", TRADES, emit=FINAL
    )
    assert by_expr.rows == by_alias.rows == [{"odd": 0, "s": 20}, {"odd": 1, "s": 16}]


def test_group_by_several_keys_and_a_null_key() -> None:
    table = pa.table({"a": ["x", "x", None, "x", None], "b": [1, 2, 1, 1, 1], "v": [1, 2, 3, 4, 5]})
    run = run_job(
        "SELECT a, b, SUM(v) AS s FROM t GROUP BY a, b", table, batch_size=2, emit=CHANGES
    )
    assert run.rows == [
        {"a": "x", "b": 1, "s": 1},
        {"a": "x", "b": 2, "s": 2},
        {"a": None, "b": 1, "s": 3},
        {"a": "x", "b": 1, "s": 5},
        {"a": None, "b": 1, "s": 8},
    ]


def test_where_filters_rows_before_they_are_aggregated() -> None:
    run = run_job(
        "SELECT sym, COUNT(*) AS c, SUM(price) AS s FROM t WHERE price > 2 GROUP BY sym",
        TRADES,
        batch_size=3,
        emit=CHANGES,
    )
    assert run.rows == [
        {"sym": "a", "c": 1, "s": 3.0},
        {"sym": "b", "c": 1, "s": 5.0},
        {"sym": "c", "c": 1, "s": 6.0},
        {"sym": "a", "c": 2, "s": 10.0},
        {"sym": "b", "c": 2, "s": 13.0},
    ]


@pytest.mark.parametrize(
    "having",
    ["COUNT(*) > 2", "c > 2", "SUM(qty) >= 15 AND c > 2"],
    ids=["aggregate", "alias", "mixed"],
)
def test_having_final(having: str) -> None:
    run = run_job(
        f"SELECT sym, COUNT(*) AS c FROM t GROUP BY sym HAVING {having}",
        TRADES,
        batch_size=3,
        emit=FINAL,
    )
    assert run.rows == [{"sym": "a", "c": 4}, {"sym": "b", "c": 3}]


def test_having_on_a_group_key() -> None:
    run = run_job(
        "SELECT sym, COUNT(*) AS c FROM t GROUP BY sym HAVING sym <> 'a'", TRADES, emit=FINAL
    )
    assert run.rows == [{"sym": "b", "c": 3}, {"sym": "c", "c": 1}]


def test_having_with_emit_changes_filters_the_running_rows() -> None:
    run = run_job(
        "SELECT sym, COUNT(*) AS c, SUM(qty) AS total FROM t GROUP BY sym HAVING total >= 7",
        TRADES,
        batch_size=3,
        emit=CHANGES,
    )
    assert run.rows == [
        {"sym": "a", "c": 3, "total": 8},
        {"sym": "b", "c": 2, "total": 7},
        {"sym": "a", "c": 4, "total": 15},
        {"sym": "b", "c": 3, "total": 15},
    ]


@pytest.mark.parametrize(
    ("order", "syms"),
    [
        ("total DESC, sym", ["a", "b", "c"]),
        ("sym DESC", ["c", "b", "a"]),
        ("COUNT(*)", ["c", "b", "a"]),
        ("MAX(price) DESC", ["b", "a", "c"]),
        ("SUM(price) / COUNT(price)", ["a", "b", "c"]),
    ],
)
def test_order_by_with_emit_final(order: str, syms: list[str]) -> None:
    run = run_job(
        f"SELECT sym, SUM(qty) AS total FROM t GROUP BY sym ORDER BY {order}",
        TRADES,
        batch_size=3,
        emit=FINAL,
    )
    assert run.column("sym") == syms


def test_order_by_and_limit_with_emit_final() -> None:
    run = run_job(
        "SELECT sym, SUM(price) AS s FROM t GROUP BY sym ORDER BY s DESC LIMIT 2",
        TRADES,
        batch_size=2,
        emit=FINAL,
    )
    assert run.rows == [{"sym": "b", "s": 15.0}, {"sym": "a", "s": 11.0}]


def test_limit_with_emit_changes_counts_output_rows() -> None:
    run = run_job(
        "SELECT sym, COUNT(*) AS c FROM t GROUP BY sym LIMIT 3", TRADES, batch_size=2, emit=CHANGES
    )
    assert run.rows == [{"sym": "a", "c": 1}, {"sym": "b", "c": 1}, {"sym": "a", "c": 2}]
    assert run.executor is not None and run.executor.limit_reached


def test_global_aggregate_emit_changes() -> None:
    run = run_job(
        "SELECT COUNT(*) AS n, SUM(qty) AS s, MAX(price) AS m FROM t",
        TRADES,
        batch_size=3,
        emit=CHANGES,
    )
    assert run.column("n") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert run.column("s") == [1, 3, 6, 10, 15, 21, 28, 36]
    assert run.column("m") == [1.0, 2.0, 3.0, 3.0, 5.0, 6.0, 7.0, 8.0]


def test_global_aggregate_emit_final() -> None:
    run = run_job(
        "SELECT COUNT(*) AS n, AVG(price) AS a, COUNT(DISTINCT sym) AS syms FROM t",
        TRADES,
        batch_size=3,
        emit=FINAL,
    )
    assert run.rows == [{"n": 8, "a": pytest.approx(32 / 7), "syms": 3}]


def test_integer_sums_are_int64_and_exact_beyond_it() -> None:
    big = 2**62
    table = pa.table({"k": ["a", "a", "a"], "x": pa.array([big, big, -5], pa.int64())})
    run = run_job(
        "SELECT k, SUM(x) AS s, AVG(x) AS m FROM t GROUP BY k", table, batch_size=1, emit=CHANGES
    )
    # the running sum passes 2**63 - 1 and comes back; no overflow on the way
    assert [int(v) for v in run.column("s")] == [big, 2 * big, 2 * big - 5]
    assert run.column("m")[2] == pytest.approx((2 * big - 5) / 3)
    final = run_job("SELECT k, SUM(x) AS s FROM t GROUP BY k", table, batch_size=1, emit=FINAL)
    assert final.rows == [{"k": "a", "s": 2 * big - 5}]
    assert final.outputs[-1].schema.field("s").type == pa.int64()


def test_count_distinct_remembers_values_across_batches() -> None:
    table = pa.table({"k": ["a"] * 6, "v": ["x", "y", "x", None, "y", "z"]})
    run = run_job(
        "SELECT k, COUNT(DISTINCT v) AS d FROM t GROUP BY k", table, batch_size=1, emit=CHANGES
    )
    assert run.column("d") == [1, 2, 2, 2, 2, 3]
