"""Casts as the original system makes them: to an integer type, toward zero (7258.53 is
7258, -7.5 is -7), whatever the argument's type; out of range still the row's error;
and `TIMESTAMP(x)` converting timestamps, ISO strings and epoch milliseconds."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import plan, run_job
from velostream.errors import PlanError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "HUGEINT": (-(2**127), 2**127 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**64 - 1),
}


def one(sql: str, table: pa.Table, **kwargs: Any) -> list[Any]:
    run = run_job(sql, table, **kwargs)
    assert run.bad == [], [b.message for b in run.bad]
    return [next(iter(row.values())) for row in run.rows]


@pytest.mark.parametrize("target", list(RANGES))
def test_every_integer_type_truncates_doubles_decimals_and_strings(target: str) -> None:
    low = RANGES[target][0]
    values = [7.9, 0.5, 1.25, 126.99, None] + ([-7.9, -0.5, -126.99] if low < 0 else [])
    expected = [None if v is None else math.trunc(v) for v in values]
    doubles = pa.table({"x": pa.array(values, pa.float64())})
    assert one(f"SELECT CAST(x AS {target}) AS n FROM t", doubles) == expected
    assert one(f"SELECT TRY_CAST(x AS {target}) AS n FROM t", doubles) == expected
    assert one(f"SELECT x::{target} AS n FROM t", doubles) == expected
    strings = pa.table({"x": [None if v is None else str(v) for v in values]})
    assert one(f"SELECT CAST(x AS {target}) AS n FROM t", strings) == expected
    decimals = pa.table({"x": pa.array([None if v is None else Decimal(str(v)) for v in values])})
    assert one(f"SELECT CAST(x AS {target}) AS n FROM t", decimals) == expected


def test_the_original_example_and_literals() -> None:
    table = pa.table({"x": [1]})
    assert one("SELECT CAST(7258.53 AS INTEGER) AS n FROM t", table) == [7258]
    assert one("SELECT CAST(-7258.53 AS INTEGER) AS n FROM t", table) == [-7258]
    assert one("SELECT CAST('7.5' AS INTEGER) AS n FROM t", table) == [7]
    assert one("SELECT CAST(2.5e0 AS BIGINT) AS n FROM t", table) == [2]
    assert one("SELECT CAST(42 AS SMALLINT) AS n FROM t", table) == [42]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7.5", 7),
        ("-7.5", -7),
        (" 7 ", 7),
        ("+7.9", 7),
        ("1e3", 1000),
        ("1.5e1", 15),
        ("15e-1", 1),
        ("0x1F", 31),
        ("12345678901234567.9", 12345678901234567),
        ("-0.999999999999999999", 0),  # exact to 18 decimal places
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_strings_are_read_as_their_number_then_truncated(value: str, expected: int) -> None:
    assert one("SELECT CAST(x AS BIGINT) AS n FROM t", pa.table({"x": [value]})) == [expected]


def test_integers_and_booleans_are_exact() -> None:
    big = [2**63 - 1, -(2**63), 2**53 + 1, None]
    assert one("SELECT CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": big})) == big
    assert one("SELECT CAST(x AS BIGINT) AS n FROM t", pa.table({"x": big})) == big
    assert one("SELECT CAST(x AS INT) AS n FROM t", pa.table({"x": [True, False, None]})) == [
        1,
        0,
        None,
    ]
    huge = [1e30, -1e30]
    assert one("SELECT CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": huge})) == [
        int(v) for v in huge
    ]


def test_out_of_range_and_no_number_are_the_rows_errors_and_try_cast_gives_null() -> None:
    table = pa.table({"x": ["2147483647.9", "2147483648.1", "abc", "-2147483648.9", "nan", "5"]})
    run = run_job("SELECT CAST(x AS INTEGER) AS n FROM t", table, batch_size=4)
    assert run.column("n") == [2147483647, -2147483648, 5]
    assert [b.ref for b in run.bad] == ["t.csv:3", "t.csv:4", "t.csv:6"]
    assert run.bad[0].message == "cannot CAST x = '2147483648.1' to INT"
    assert run.bad[1].message == "cannot CAST x = 'abc' to INT"
    tried = one("SELECT TRY_CAST(x AS INTEGER) AS n FROM t", table)
    assert tried == [2147483647, None, None, -2147483648, None, 5]
    doubles = pa.table({"x": pa.array([1e300, float("nan"), float("inf"), 3.9])})
    run = run_job("SELECT CAST(x AS BIGINT) AS n FROM t", doubles)
    assert run.column("n") == [3] and len(run.bad) == 3


@SETTINGS
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
        min_size=1,
        max_size=30,
    ),
    target=st.sampled_from(["INTEGER", "BIGINT", "SMALLINT", "UINTEGER"]),
    batch=st.integers(1, 30),
)
def test_double_casts_truncate_or_fail_the_row_like_python(
    values: list[float | None], target: str, batch: int
) -> None:
    low, high = RANGES[target]
    run = run_job(
        f"SELECT CAST(x AS {target}) AS n FROM t",
        pa.table({"x": pa.array(values, pa.float64())}),
        batch_size=batch,
    )
    expected = [
        None if v is None else math.trunc(v)
        for v in values
        if v is None or low <= math.trunc(v) <= high
    ]
    failed = [
        i + 2 for i, v in enumerate(values) if v is not None and not low <= math.trunc(v) <= high
    ]
    assert run.column("n") == expected
    assert [b.ref for b in run.bad] == [f"t.csv:{line}" for line in failed]


@SETTINGS
@given(
    digits=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(0, 10**20), st.integers(10**20, 10**38 - 1)),
            st.integers(0, 10**12 - 1),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_decimal_strings_truncate_exactly(digits: list[tuple[bool, int, int]]) -> None:
    """Within DECIMAL(38, 18)'s range and beyond it (|x| >= 10^20), up to HUGEINT's."""
    texts = [f"{'-' if neg else ''}{whole}.{frac:012d}" for neg, whole, frac in digits]
    run = run_job("SELECT TRY_CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": texts}))
    assert run.column("n") == [int(Decimal(t)) for t in texts]


def test_numbers_beyond_ten_to_the_twenty_truncate_rather_than_round() -> None:
    """Past DECIMAL(38, 18), DuckDB's own cast rounds ('...0.5' gave '...1'): a number
    written out in digits is cut at its point; past HUGEINT it is still the row's error."""
    texts = ["100000000000000000000.5", " -123456789012345678901234.999 ", "+10" + "0" * 20 + "."]
    decimals = pa.array([Decimal("1" + "0" * 24 + ".75")], pa.decimal128(38, 2))
    assert one("SELECT CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": texts})) == [
        10**20,
        -123456789012345678901234,
        10**21,
    ]
    assert one("SELECT CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": decimals})) == [10**24]
    run = run_job("SELECT CAST(x AS HUGEINT) AS n FROM t", pa.table({"x": ["1" + "0" * 39 + ".5"]}))
    assert run.column("n") == [] and len(run.bad) == 1


def test_group_by_keys_where_and_aggregates_truncate() -> None:
    table = pa.table({"p": [1.2, 1.9, -0.5, 0.5, 2.0, 7.99], "q": [1, 1, 1, 1, 1, 1]})
    run = run_job(
        "SELECT CAST(p AS INT) AS k, COUNT(*) AS n FROM t GROUP BY CAST(p AS INT)",
        table,
        batch_size=2,
        emit=None,
    )
    final = {row["k"]: row["n"] for row in run.rows}  # the last change of each key
    assert final == {1: 2, 0: 2, 2: 1, 7: 1}
    assert one("SELECT p FROM t WHERE CAST(p AS INT) = 7", table) == [7.99]
    assert one("SELECT p FROM t WHERE CAST(p AS INT) = 0", table) == [-0.5, 0.5]
    assert (
        one(
            "SELECT CAST(AVG(p) AS INT) AS a FROM t GROUP BY q",
            pa.table({"p": [7.0, 8.0], "q": [1, 1]}),
        )[-1]
        == 7
    )


def test_bad_casts_in_where_and_group_by_are_the_rows_errors() -> None:
    table = pa.table({"s": ["1.5", "x", "2.7", "1.1"]})
    run = run_job("SELECT s FROM t WHERE CAST(s AS INT) = 1", table)
    assert run.column("s") == ["1.5", "1.1"]
    assert [b.ref for b in run.bad] == ["t.csv:3"]
    run = run_job("SELECT CAST(s AS INT) AS k, COUNT(*) AS n FROM t GROUP BY CAST(s AS INT)", table)
    assert [(r["k"], r["n"]) for r in run.rows] == [(1, 1), (2, 1), (1, 2)]
    assert [b.ref for b in run.bad] == ["t.csv:3"]


def test_row_windows_truncate_their_arguments_and_their_values() -> None:
    table = pa.table({"p": [1.9, 2.9, -3.9, 4.5], "g": ["a", "a", "a", "a"]})
    buffer = "OVER (ROWS WINDOW BUFFER 2 ROWS PARTITION BY g)"
    run = run_job(
        f"SELECT CAST(p AS INT) AS i, LAG(CAST(p AS INT)) {buffer} AS prev, "
        f"CAST(AVG(p) {buffer} AS INT) AS avg2 FROM t",
        table,
        batch_size=1,
    )
    assert run.column("i") == [1, 2, -3, 4]
    assert run.column("prev") == [None, 1, 2, -3]
    assert run.column("avg2") == [1, 2, 0, 0]  # 2.4 → 2, -0.5 → 0, 0.3 → 0


def test_the_user_cast_is_what_row_isolation_re_runs() -> None:
    p = plan("SELECT CAST(s AS INT) AS n, CAST(9 AS INT) AS nine FROM t")
    assert ("CAST(s AS INT)", "s", "INT", False) in [c[:4] for c in p.casts]
    assert not any("DECIMAL" in c[2] or "DOUBLE" in c[2] for c in p.casts), p.casts
    assert "TRUNC(" in p.select_sql[0] and p.select_sql[1] == 'CAST(9 AS INT) AS "nine"'


# --- TIMESTAMP(x) -----------------------------------------------------------------

T0 = dt.datetime(2023, 10, 8)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pa.array([1696723200000, 1696723200001, None], pa.int64()),
         [T0, T0 + dt.timedelta(milliseconds=1), None]),
        (pa.array([1696723200000.5], pa.float64()), [T0 + dt.timedelta(microseconds=500)]),
        (pa.array(["2023-10-08 00:00:00", "2023-10-08T00:00:00.250", "2023-10-08",
                   "2023/10/08 00:00:00", "2023-10-08T01:00:00+01:00", "2023-10-07T23:00:00Z",
                   "1696723200000", None]),
         [T0, T0 + dt.timedelta(milliseconds=250), T0, T0, T0,
          T0 - dt.timedelta(hours=1), T0, None]),
        (pa.array([T0], pa.timestamp("us")), [T0]),
        (pa.array([T0], pa.timestamp("ms")), [T0]),
        (pa.array([T0.date()], pa.date32()), [T0]),
    ],
)  # fmt: skip
def test_timestamp_converts_timestamps_iso_strings_and_epoch_millis(
    values: pa.Array, expected: list[dt.datetime | None]
) -> None:
    assert one("SELECT TIMESTAMP(x) AS ts FROM t", pa.table({"x": values})) == expected


def test_timestamp_of_what_is_no_time_is_the_rows_error() -> None:
    table = pa.table({"x": ["2023-10-08", "soon", None, "2023-13-45"]})
    run = run_job("SELECT TIMESTAMP(x) AS ts FROM t", table)
    assert run.column("ts") == [T0, None]
    assert [b.ref for b in run.bad] == ["t.csv:3", "t.csv:5"]
    assert (
        "TIMESTAMP(x): 'soon' is neither a timestamp nor epoch milliseconds" in run.bad[0].message
    )


def test_timestamp_works_in_where_and_group_by_and_leaves_types_alone() -> None:
    table = pa.table({"ms": pa.array([0, 1500, 999], pa.int64()), "timestamp": [1, 2, 3]})
    assert one(
        "SELECT ms FROM t WHERE TIMESTAMP(ms) >= TIMESTAMP '1970-01-01 00:00:01'", table
    ) == [1500]
    run = run_job(
        "SELECT date_trunc('second', TIMESTAMP(ms)) AS s, COUNT(*) AS n FROM t "
        "GROUP BY date_trunc('second', TIMESTAMP(ms))",
        table,
        emit=None,
    )
    assert [r["n"] for r in run.rows] == [1, 1, 2]
    assert one('SELECT "timestamp" FROM t', table) == [1, 2, 3]
    assert one("SELECT timestamp FROM t", table) == [1, 2, 3]
    assert one(
        "SELECT CAST(ms AS TIMESTAMP) IS NULL AS z FROM t", pa.table({"ms": ["2023-10-08"]})
    ) == [False]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT TIMESTAMP() AS t FROM t", "use _timestamp (a Kafka message's time) or NOW()"),
        ("SELECT TIMESTAMP( ) AS t FROM t", "TIMESTAMP() (the original system's record time)"),
    ],
)
def test_timestamp_without_an_argument_is_refused_with_the_nearest_forms(
    sql: str, message: str
) -> None:
    with pytest.raises(PlanError) as caught:
        plan(sql)
    assert message in str(caught.value)
    assert caught.value.offset == sql.index("TIMESTAMP")
