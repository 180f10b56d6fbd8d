"""Stateless SELECT: projection, every first-priority scalar function, WHERE, LIMIT."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs, make_job, run_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.sql.planner import plan_job

TRADES = pa.table(
    {
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "sym": ["AAPL", "msft", None, "  goog "],
        "price": [150.25, -20.5, None, 0.0],
        "qty": pa.array([10, 3, None, -7], pa.int64()),
        "note": ["hello", "World", "", "naïve ü"],
        "ts": pa.array(
            [
                datetime(2024, 1, 2, 3, 4, 5),
                datetime(2024, 5, 6, 7, 8, 9),
                None,
                datetime(2023, 12, 31, 23, 59, 59),
            ],
            pa.timestamp("us"),
        ),
    }
)

SCALARS: list[tuple[str, list[Any]]] = [
    # projection and arithmetic
    ("id", [1, 2, 3, 4]),
    ("price * qty", [1502.5, -61.5, None, -0.0]),
    ("qty + 1", [11, 4, None, -6]),
    ("qty / 2", [5.0, 1.5, None, -3.5]),
    ("qty % 3", [1, 0, None, -1]),
    ("'x'", ["x", "x", "x", "x"]),
    # CASE
    (
        "CASE WHEN price > 100 THEN 'HIGH' WHEN price < 0 THEN 'NEG' ELSE 'NORMAL' END",
        ["HIGH", "NEG", "NORMAL", "NORMAL"],
    ),
    ("CASE sym WHEN 'AAPL' THEN 1 WHEN 'msft' THEN 2 END", [1, 2, None, None]),
    # CAST
    ("CAST(qty AS VARCHAR)", ["10", "3", None, "-7"]),
    ("CAST(qty AS DOUBLE) / 4", [2.5, 0.75, None, -1.75]),
    ("CAST(ts AS DATE)", [date(2024, 1, 2), date(2024, 5, 6), None, date(2023, 12, 31)]),
    ("CAST('0' || CAST(id AS VARCHAR) AS INTEGER)", [1, 2, 3, 4]),
    # NULL handling
    ("COALESCE(sym, 'n/a')", ["AAPL", "msft", "n/a", "  goog "]),
    ("COALESCE(price, qty, 0)", [150.25, -20.5, 0.0, 0.0]),
    ("NULLIF(qty, 3)", [10, None, None, -7]),
    ("price IS NULL", [False, False, True, False]),
    ("price IS NOT NULL", [True, True, False, True]),
    # predicates
    ("qty IN (3, -7)", [False, True, None, True]),
    ("sym NOT IN ('AAPL')", [False, True, None, True]),
    ("qty BETWEEN 0 AND 10", [True, True, None, False]),
    ("sym LIKE 'A%'", [True, False, None, False]),
    ("note LIKE '%o%'", [True, True, False, False]),
    ("note NOT LIKE '%o%'", [False, False, True, True]),
    # strings
    ("note || '!'", ["hello!", "World!", "!", "naïve ü!"]),
    ("sym || note", ["AAPLhello", "msftWorld", None, "  goog naïve ü"]),
    ("UPPER(note)", ["HELLO", "WORLD", "", "NAÏVE Ü"]),
    ("LOWER(sym)", ["aapl", "msft", None, "  goog "]),
    ("CONCAT(sym, '-', qty)", ["AAPL-10", "msft-3", "-", "  goog --7"]),
    ("SUBSTRING(note, 2, 3)", ["ell", "orl", "", "aïv"]),
    ("SUBSTRING(note, 3)", ["llo", "rld", "", "ïve ü"]),
    ("TRIM(sym)", ["AAPL", "msft", None, "goog"]),
    ("LENGTH(note)", [5, 5, 0, 7]),
    # numbers
    ("ABS(qty)", [10, 3, None, 7]),
    ("ABS(price)", [150.25, 20.5, None, 0.0]),
    ("ROUND(price)", [150.0, -21.0, None, 0.0]),
    ("ROUND(price, 1)", [150.3, -20.5, None, 0.0]),
    ("FLOOR(price)", [150.0, -21.0, None, 0.0]),
    ("CEIL(price)", [151.0, -20.0, None, 0.0]),
    ("LEAST(qty, 5)", [5, 3, 5, -7]),
    ("GREATEST(qty, 5)", [10, 5, 5, 5]),
    ("LEAST(price, qty)", [10.0, -20.5, None, -7.0]),
    # time
    ("EXTRACT(YEAR FROM ts)", [2024, 2024, None, 2023]),
    ("EXTRACT(HOUR FROM ts)", [3, 7, None, 23]),
    (
        "DATE_TRUNC('month', ts)",
        [datetime(2024, 1, 1), datetime(2024, 5, 1), None, datetime(2023, 12, 1)],
    ),
    (
        "DATE_TRUNC('hour', ts)",
        [datetime(2024, 1, 2, 3), datetime(2024, 5, 6, 7), None, datetime(2023, 12, 31, 23)],
    ),
    (
        "ts + INTERVAL '90' MINUTE",
        [
            datetime(2024, 1, 2, 4, 34, 5),
            datetime(2024, 5, 6, 8, 38, 9),
            None,
            datetime(2024, 1, 1, 1, 29, 59),
        ],
    ),
    (
        "ts - INTERVAL 2 DAY",
        [
            datetime(2023, 12, 31, 3, 4, 5),
            datetime(2024, 5, 4, 7, 8, 9),
            None,
            datetime(2023, 12, 29, 23, 59, 59),
        ],
    ),
    (
        "DATE_TRUNC('day', ts) + INTERVAL '1' DAY",
        [datetime(2024, 1, 3), datetime(2024, 5, 7), None, datetime(2024, 1, 1)],
    ),
    ("NOW() IS NOT NULL", [True, True, True, True]),
]


@pytest.mark.parametrize(("expression", "expected"), SCALARS, ids=[s[0] for s in SCALARS])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_scalar_expression(expression: str, expected: list[Any], batch_size: int) -> None:
    run = run_job(f"SELECT {expression} AS v FROM t", TRADES, batch_size=batch_size)
    assert run.bad == []
    assert run.columns == ["v"]
    got = run.column("v")
    assert got == expected
    # -0.0 == 0.0, and 1 == 1.0: the types must match too
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_now_is_a_timestamp_on_every_row() -> None:
    run = run_job("SELECT id, NOW() AS at FROM t", TRADES, batch_size=3)
    assert run.column("id") == [1, 2, 3, 4]
    assert all(isinstance(v, datetime) for v in run.column("at"))


def test_projection_names_and_order_follow_the_select() -> None:
    run = run_job(
        "SELECT qty, sym AS symbol, price * 2, UPPER(note) AS loud FROM t", TRADES, batch_size=2
    )
    assert run.columns == ["qty", "symbol", "col2", "loud"]
    assert run.rows[0] == {"qty": 10, "symbol": "AAPL", "col2": 300.5, "loud": "HELLO"}


def test_select_star_keeps_source_columns_and_no_internal_ones() -> None:
    run = run_job("SELECT * FROM t", TRADES, batch_size=3)
    assert run.columns == TRADES.column_names
    assert run.rows == TRADES.to_pylist()


def test_select_star_leaves_out_system_columns_unless_named() -> None:
    """SQL.md: `_key`, `_partition`, `_offset`, `_timestamp` (and `_headers`) are not
    part of `*`; naming them selects them."""
    kafka_like = TRADES.append_column("_key", pa.array(["k1", "k2", "k3", "k4"]))
    kafka_like = kafka_like.append_column("_partition", pa.array([0, 0, 1, 1], pa.int32()))
    kafka_like = kafka_like.append_column("_offset", pa.array([5, 6, 7, 8], pa.int64()))
    hidden = run_job("SELECT * FROM t", kafka_like, batch_size=3)
    assert hidden.columns == TRADES.column_names
    named = run_job("SELECT *, _key, _offset FROM t WHERE _partition = 1", kafka_like)
    assert named.columns == [*TRADES.column_names, "_key", "_offset"]
    assert named.column("_key") == ["k3", "k4"]


def test_qualified_columns_name_the_source_or_its_alias() -> None:
    plain = run_job("SELECT t.id, t.sym FROM t WHERE t.qty > 0", TRADES)
    aliased = run_job("SELECT x.id, x.sym FROM t AS x WHERE x.qty > 0", TRADES)
    assert plain.rows == aliased.rows == [{"id": 1, "sym": "AAPL"}, {"id": 2, "sym": "msft"}]


def test_struct_fields_with_and_without_the_source_qualifier() -> None:
    table = pa.table({"payload": [{"price": 1.5, "sym": "a"}, {"price": 2.5, "sym": "b"}]})
    run = run_job(
        "SELECT payload.price AS p, t.payload.sym AS s FROM t WHERE t.payload.price > 2", table
    )
    assert run.rows == [{"p": 2.5, "s": "b"}]


@pytest.mark.parametrize(
    ("where", "ids"),
    [
        ("price > 0", [1]),
        ("price >= 0 OR sym IS NULL", [1, 3, 4]),
        ("qty IN (3, 10) AND note <> ''", [1, 2]),
        ("sym LIKE '%o%'", [4]),
        ("price IS NULL", [3]),
        ("NOT (qty BETWEEN 0 AND 5)", [1, 4]),
        ("LENGTH(TRIM(sym)) = 4 AND UPPER(sym) = sym", [1]),
        ("qty > 100", []),
    ],
)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_where_keeps_matching_rows_in_order(where: str, ids: list[int], batch_size: int) -> None:
    run = run_job(f"SELECT id FROM t WHERE {where}", TRADES, batch_size=batch_size)
    assert run.column("id") == ids


def _numbers(n: int) -> pa.Table:
    return pa.table({"n": pa.array(range(n), pa.int64())})


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
def test_limit_across_batches(batch_size: int) -> None:
    run = run_job("SELECT n FROM t LIMIT 4", _numbers(10), batch_size=batch_size)
    assert run.column("n") == [0, 1, 2, 3]
    assert run.executor is not None and run.executor.limit_reached


def test_limit_counts_rows_after_where() -> None:
    run = run_job("SELECT n FROM t WHERE n % 2 = 1 LIMIT 3", _numbers(20), batch_size=3)
    assert run.column("n") == [1, 3, 5]


def test_limit_zero_emits_nothing_and_is_reached_at_once() -> None:
    run = run_job("SELECT n FROM t LIMIT 0", _numbers(5), batch_size=2)
    assert run.rows == []
    assert run.executor is not None and run.executor.limit_reached


def test_limit_not_reached_while_rows_are_missing() -> None:
    run = run_job("SELECT n FROM t LIMIT 50", _numbers(10), batch_size=4)
    assert run.column("n") == list(range(10))
    assert run.executor is not None and not run.executor.limit_reached


def test_empty_batch_gives_an_empty_table_with_the_output_columns() -> None:
    job = make_job("SELECT id, sym AS s FROM t")
    executor = build_executor(plan_job(job), job)
    output = executor.process(SourceBatch(TRADES.slice(0, 0), LineRefs(0)))
    assert output.table.column_names == ["id", "s"]
    assert output.table.num_rows == 0
    assert output.bad == []
