"""Differential tests: our micro-batch answer equals DuckDB's one-shot answer.

Hypothesis draws rows with NULLs and extreme values, and how the input is cut into
batches (from one row per batch to the whole input in one). The reference runs once,
with standard SQL, over the whole table: running aggregates as window functions over
`rn` (the arrival order), row windows as ROWS frames.

Floats are drawn as `m * 2**e` with a small integer `m` and one exponent per example
(from about 1e-150 to 1e135): sums are then exact in any order, so only the usual
rounding of AVG/STDDEV separates us from DuckDB, and `values_equal` allows 1e-9.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import assert_rows_equal, reference, run_job, sort_key
from velostream.sql.model import EmitMode

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

I64 = 2**63
KEYS = st.sampled_from(["a", "b", "", "ä", "日本", None])
INTS = st.one_of(
    st.none(),
    st.integers(-(I64), I64 - 1),
    st.integers(-3, 3),
    st.sampled_from([0, I64 - 1, -I64, 2**62, -(2**62)]),
)
TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "A", "zz", "é", "🙂", " pad "]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4),
)


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 16) -> pa.Table:
    n = draw(st.integers(1, max_rows))
    exponent = draw(st.sampled_from([-500, -60, -1, 0, 40, 450]))
    mantissas = draw(
        st.lists(st.one_of(st.none(), st.integers(-4095, 4095)), min_size=n, max_size=n)
    )
    floats = [None if m is None else float(m) * 2.0**exponent for m in mantissas]
    return pa.table(
        {
            "rn": pa.array(range(n), pa.int64()),
            "k": pa.array(draw(st.lists(KEYS, min_size=n, max_size=n)), pa.string()),
            "i": pa.array(draw(st.lists(INTS, min_size=n, max_size=n)), pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "s": pa.array(draw(st.lists(TEXT, min_size=n, max_size=n)), pa.string()),
        }
    )


@st.composite
def batch_sizes(draw: st.DrawFn, table: pa.Table) -> list[int]:
    """From one row per batch to the whole input, regular or ragged."""
    n = table.num_rows
    return draw(
        st.one_of(
            st.integers(1, n).map(lambda size: [size]),
            st.lists(st.integers(1, n), min_size=1, max_size=5),
        )
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    table = draw(tables())
    return table, draw(batch_sizes(table))


# --- stateless -----------------------------------------------------------------------

STATELESS = [
    "SELECT rn, k, i, f, s FROM t",
    "SELECT rn, COALESCE(k, '?') AS k, i // 3 AS third, i % 7 AS m7, NULLIF(i, 0) AS nz, "
    "i IS NULL AS no_i, i BETWEEN -10 AND 10 AS small, i IN (0, 1, -1) AS unit, "
    "GREATEST(i, 0) AS pos, LEAST(i, 0) AS neg, CAST(i AS DOUBLE) * 2 AS dbl, "
    "CAST(i AS VARCHAR) AS txt FROM t",
    "SELECT rn, f * 2 AS f2, f / 3 AS f3, ABS(f) AS af, ROUND(f, 2) AS r2, FLOOR(f) AS fl, "
    "CEIL(f) AS ce, CASE WHEN f > 0 THEN 'pos' WHEN f < 0 THEN 'neg' ELSE 'zero/null' END AS sign "
    "FROM t",
    "SELECT rn, UPPER(s) AS u, LOWER(s) AS l, LENGTH(s) AS n, s || k AS sk, "
    "CONCAT(s, '-', k) AS c, SUBSTRING(s, 2, 2) AS sub, TRIM(s) AS tr, s LIKE '%a%' AS has_a, "
    "k IN ('a', 'b') AS ab FROM t",
    "SELECT rn, i, s FROM t WHERE (i > 0 OR f IS NULL) AND COALESCE(s, '') <> 'zz'",
]


@SETTINGS
@given(case=cases(), query=st.sampled_from(STATELESS))
def test_stateless_matches_duckdb(case: tuple[pa.Table, list[int]], query: str) -> None:
    table, sizes = case
    run = run_job(query, table, batch_size=sizes)
    assert run.bad == []
    assert_rows_equal(run.rows, reference(query + " ORDER BY rn", table), query)


@SETTINGS
@given(case=cases(), limit=st.integers(0, 35))
def test_limit_matches_duckdb(case: tuple[pa.Table, list[int]], limit: int) -> None:
    table, sizes = case
    query = f"SELECT rn, s FROM t WHERE i IS NOT NULL LIMIT {limit}"
    run = run_job(query, table, batch_size=sizes)
    expected = reference(
        f"SELECT rn, s FROM t WHERE i IS NOT NULL ORDER BY rn LIMIT {limit}", table
    )
    assert_rows_equal(run.rows, expected, query)


# --- GROUP BY ---------------------------------------------------------------------------

# (our aggregate, the same over the group's rows so far as a window function, the same
# as a grouped aggregate)
AGGREGATES: list[tuple[str, str, str]] = [
    ("COUNT(*)", "COUNT(*) OVER w", "COUNT(*)"),
    ("COUNT(i)", "COUNT(i) OVER w", "COUNT(i)"),
    ("COUNT(DISTINCT s)", "COUNT(DISTINCT s) OVER w", "COUNT(DISTINCT s)"),
    ("SUM(i)", "SUM(i) OVER w", "SUM(i)"),
    ("SUM(f)", "SUM(f) OVER w", "SUM(f)"),
    ("AVG(i)", "AVG(i) OVER w", "AVG(i)"),
    ("AVG(f)", "AVG(f) OVER w", "AVG(f)"),
    ("MIN(i)", "MIN(i) OVER w", "MIN(i)"),
    ("MAX(f)", "MAX(f) OVER w", "MAX(f)"),
    ("MIN(s)", "MIN(s) OVER w", "MIN(s)"),
    ("MAX(s)", "MAX(s) OVER w", "MAX(s)"),
    ("STDDEV(f)", "STDDEV(f) OVER w", "STDDEV(f)"),
    ("STDDEV_POP(f)", "STDDEV_POP(f) OVER w", "STDDEV_POP(f)"),
    ("FIRST_VALUE(i)", "FIRST_VALUE(i) OVER w", "FIRST(i ORDER BY rn)"),
    ("LAST_VALUE(s)", "LAST_VALUE(s) OVER w", "LAST(s ORDER BY rn)"),
]
# (GROUP BY, the key columns of the SELECT)
GROUPINGS = [("k", "k"), ("k, i % 2", "k, i % 2 AS parity"), ("s", "s"), ("", "")]
# The HAVING of a query, and of its references (where the same aggregates are the
# hidden columns h0 and h1).
HAVING = ("COUNT(*) > 1 AND SUM(i) IS NOT NULL", "h0 > 1 AND h1 IS NOT NULL")
HIDDEN = ("COUNT(*)", "SUM(i)")
AGGREGATE_SETS = st.lists(
    st.sampled_from(range(len(AGGREGATES))), min_size=1, max_size=5, unique=True
)


def _select(grouping: tuple[str, str], aggregates: list[int], column: int) -> str:
    keys = [grouping[1]] if grouping[1] else []
    return ", ".join(keys + [f"{AGGREGATES[n][column]} AS a{n}" for n in aggregates])


def _ours(grouping: tuple[str, str], aggregates: list[int], having: bool) -> str:
    group_by = f" GROUP BY {grouping[0]}" if grouping[0] else ""
    having_sql = f" HAVING {HAVING[0]}" if having else ""
    return f"SELECT {_select(grouping, aggregates, 0)} FROM t{group_by}{having_sql}"


def _running(grouping: tuple[str, str], aggregates: list[int], having: bool) -> str:
    partition = f"PARTITION BY {grouping[0]} " if grouping[0] else ""
    window = f"WINDOW w AS ({partition}ORDER BY rn ROWS UNBOUNDED PRECEDING)"
    hidden = ", ".join(f"{h} OVER w AS h{n}" for n, h in enumerate(HIDDEN))
    inner = f"SELECT {_select(grouping, aggregates, 1)}, {hidden}, rn FROM t {window}"
    where = f" WHERE {HAVING[1]}" if having else ""
    return f"SELECT * EXCLUDE (h0, h1, rn) FROM ({inner}){where} ORDER BY rn"


def _grouped(grouping: tuple[str, str], aggregates: list[int], having: bool) -> str:
    group_by = f" GROUP BY {grouping[0]}" if grouping[0] else ""
    having_sql = f" HAVING {HAVING[0]}" if having else ""
    return f"SELECT {_select(grouping, aggregates, 2)} FROM t{group_by}{having_sql}"


@SETTINGS
@given(
    case=cases(),
    grouping=st.sampled_from(GROUPINGS),
    aggregates=AGGREGATE_SETS,
    having=st.booleans(),
)
def test_group_by_emit_changes_matches_running_window_functions(
    case: tuple[pa.Table, list[int]],
    grouping: tuple[str, str],
    aggregates: list[int],
    having: bool,
) -> None:
    table, sizes = case
    query = _ours(grouping, aggregates, having)
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES)
    assert run.bad == []
    expected = reference(_running(grouping, aggregates, having), table)
    assert_rows_equal(run.rows, expected, query)


@SETTINGS
@given(
    case=cases(),
    grouping=st.sampled_from(GROUPINGS),
    aggregates=AGGREGATE_SETS,
    having=st.booleans(),
)
def test_group_by_emit_final_matches_group_by(
    case: tuple[pa.Table, list[int]],
    grouping: tuple[str, str],
    aggregates: list[int],
    having: bool,
) -> None:
    table, sizes = case
    query = _ours(grouping, aggregates, having)
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.FINAL)
    expected = reference(_grouped(grouping, aggregates, having), table)
    keys = [c for c in (run.columns or list(expected[0]) if expected else []) if c[0] != "a"]
    assert_rows_equal(
        sorted(run.rows, key=lambda r: sort_key(r, keys)),
        sorted(expected, key=lambda r: sort_key(r, keys)),
        query,
    )


# --- tumbling windows --------------------------------------------------------------------


@st.composite
def event_cases(draw: st.DrawFn) -> tuple[pa.Table, list[int], int, int]:
    table = draw(tables())
    n = table.num_rows
    # epoch milliseconds, mostly rising with some disorder
    steps = draw(st.lists(st.integers(-90_000, 60_000), min_size=n, max_size=n))
    times, now = [], 1_700_000_000_000
    for step in steps:
        now = max(now + step, 1_600_000_000_000)
        times.append(now)
    table = table.append_column("et", pa.array(times, pa.int64()))
    size = draw(st.sampled_from([1_000, 60_000, 300_000]))
    out_of_order = draw(st.sampled_from([0, 5_000, 60_000]))
    return table, draw(batch_sizes(table)), size, out_of_order


def _window_reference(size: int, out_of_order: int, select: str, tail: str) -> str:
    marked = (
        f"SELECT *, et // {size} * {size} AS ws, MAX(et) OVER (ORDER BY rn ROWS BETWEEN "
        f"UNBOUNDED PRECEDING AND 1 PRECEDING) - {out_of_order} AS wm FROM t"
    )
    return f"SELECT {select} FROM ({marked}) WHERE wm IS NULL OR ws + {size} > wm {tail}"


@SETTINGS
@given(case=event_cases())
def test_tumbling_window_final_matches_duckdb(case: tuple[pa.Table, list[int], int, int]) -> None:
    table, sizes, size, out_of_order = case
    aggregates = "COUNT(*) AS c, SUM(i) AS si, AVG(f) AS af, MIN(s) AS ms, COUNT(DISTINCT s) AS ds"
    query = (
        f"SELECT k, _window_start AS ws, _window_end AS we, {aggregates} "
        f"FROM t GROUP BY k WINDOW TUMBLING(et, {size}ms)"
    )
    props = {"watermark.max_out_of_orderness": f"{out_of_order}ms"}
    run = run_job(query, table, batch_size=sizes, props=props)
    expected = reference(
        _window_reference(
            size,
            out_of_order,
            f"k, ws, ws + {size} AS we, {aggregates}",
            "GROUP BY k, ws ORDER BY ws, k",
        ),
        table,
    )
    assert_rows_equal(run.rows, expected, query)
    late = reference(_window_reference(size, out_of_order, "COUNT(*) AS n", ""), table)
    assert run.executor is not None
    assert run.executor.late_records == table.num_rows - late[0]["n"]  # type: ignore[attr-defined]


@SETTINGS
@given(case=event_cases())
def test_tumbling_window_emit_changes_matches_duckdb(
    case: tuple[pa.Table, list[int], int, int],
) -> None:
    table, sizes, size, out_of_order = case
    query = (
        "SELECT k, _window_start AS ws, COUNT(*) AS c, SUM(f) AS sf, MAX(i) AS mi "
        f"FROM t GROUP BY k WINDOW TUMBLING(et, {size}ms)"
    )
    props = {"watermark.max_out_of_orderness": f"{out_of_order}ms"}
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES, props=props)
    window = "OVER (PARTITION BY k, ws ORDER BY rn ROWS UNBOUNDED PRECEDING)"
    expected = reference(
        _window_reference(
            size,
            out_of_order,
            f"k, ws, COUNT(*) {window} AS c, SUM(f) {window} AS sf, MAX(i) {window} AS mi",
            "ORDER BY rn",
        ),
        table,
    )
    assert_rows_equal(run.rows, expected, query)


# --- row windows ----------------------------------------------------------------------


def buffer(n: int, partition: str = "") -> str:
    return f"OVER (ROWS WINDOW BUFFER {n} ROWS{' PARTITION BY ' + partition if partition else ''})"


def frame(n: int, partition: str = "") -> str:
    part = f"PARTITION BY {partition} " if partition else ""
    return f"OVER ({part}ORDER BY rn ROWS BETWEEN {n - 1} PRECEDING AND CURRENT ROW)"


def ordered(partition: str = "") -> str:
    return f"OVER ({'PARTITION BY ' + partition + ' ' if partition else ''}ORDER BY rn)"


# (our call, DuckDB's)
ROW_CALLS: list[tuple[str, str]] = [
    (f"LAG(i) {buffer(3, 'k')}", f"LAG(i) {ordered('k')}"),
    (f"LAG(s, 2, 'none') {buffer(2, 'k')}", f"LAG(s, 2, 'none') {ordered('k')}"),
    (f"LAG(f, 3) {buffer(3)}", f"LAG(f, 3) {ordered()}"),
    (f"ROW_NUMBER() {buffer(2, 'k')}", f"ROW_NUMBER() {ordered('k')}"),
    (f"ROW_NUMBER() {buffer(1)}", f"ROW_NUMBER() {ordered()}"),
    (f"SUM(i) {buffer(3, 'k')}", f"SUM(i) {frame(3, 'k')}"),
    (f"SUM(f) {buffer(2)}", f"SUM(f) {frame(2)}"),
    (f"AVG(f) {buffer(4, 'k')}", f"AVG(f) {frame(4, 'k')}"),
    (f"AVG(i) {buffer(2)}", f"AVG(i) {frame(2)}"),
    (f"MIN(s) {buffer(3)}", f"MIN(s) {frame(3)}"),
    (f"MAX(i) {buffer(2, 's')}", f"MAX(i) {frame(2, 's')}"),
    (f"COUNT(*) {buffer(3, 'k')}", f"COUNT(*) {frame(3, 'k')}"),
    (f"COUNT(f) {buffer(5)}", f"COUNT(f) {frame(5)}"),
]
LEAD_CALLS: list[tuple[str, str]] = [
    (f"LEAD(i) {buffer(3, 'k')}", f"LEAD(i) {ordered('k')}"),
    (f"LEAD(s, 2, '-') {buffer(2)}", f"LEAD(s, 2, '-') {ordered()}"),
]
FILTERS = ["", " WHERE i IS NOT NULL", " WHERE k <> 'a' OR f > 0"]


@SETTINGS
@given(
    case=cases(),
    calls=st.lists(st.sampled_from(ROW_CALLS), min_size=1, max_size=4, unique=True),
    where=st.sampled_from(FILTERS),
)
def test_row_windows_match_duckdb_window_frames(
    case: tuple[pa.Table, list[int]], calls: list[tuple[str, str]], where: str
) -> None:
    table, sizes = case
    ours = ", ".join(f"{c[0]} AS w{n}" for n, c in enumerate(calls))
    theirs = ", ".join(f"{c[1]} AS w{n}" for n, c in enumerate(calls))
    query = f"SELECT rn, k, {ours} FROM t{where}"
    run = run_job(query, table, batch_size=sizes)
    expected = reference(f"SELECT rn, k, {theirs} FROM t{where} ORDER BY rn", table)
    assert_rows_equal(run.rows, expected, query)


@SETTINGS
@given(
    case=cases(),
    calls=st.lists(
        st.sampled_from(LEAD_CALLS + ROW_CALLS[:3]), min_size=1, max_size=3, unique=True
    ),
)
def test_lead_matches_duckdb_and_keeps_partition_order(
    case: tuple[pa.Table, list[int]], calls: list[tuple[str, str]]
) -> None:
    table, sizes = case
    ours = ", ".join(f"{c[0]} AS w{n}" for n, c in enumerate(calls))
    theirs = ", ".join(f"{c[1]} AS w{n}" for n, c in enumerate(calls))
    query = f"SELECT rn, k, {ours} FROM t"
    run = run_job(query, table, batch_size=sizes)
    expected = reference(f"SELECT rn, k, {theirs} FROM t ORDER BY rn", table)
    assert_rows_equal(sorted(run.rows, key=lambda r: r["rn"]), expected, query)
    for key in {r["k"] for r in run.rows}:
        arrival = [r["rn"] for r in run.rows if r["k"] == key]
        assert arrival == sorted(arrival)


def _rank_reference(n: int, order: str) -> str:
    """RANK/DENSE_RANK of each row among its partition's last n rows, by DuckDB itself."""
    frames = f"SELECT rn, list(f) {frame(n, 'k')} AS fr FROM t"
    exploded = (
        f"SELECT rn, UNNEST(fr) AS f, UNNEST(range(len(fr))) AS pos, len(fr) AS size "
        f"FROM ({frames})"
    )
    ranked = (
        f"SELECT rn, pos, size, RANK() OVER (PARTITION BY rn ORDER BY {order}) AS r, "
        f"DENSE_RANK() OVER (PARTITION BY rn ORDER BY {order}) AS d FROM ({exploded})"
    )
    return f"SELECT rn, r, d FROM ({ranked}) WHERE pos = size - 1 ORDER BY rn"


@SETTINGS
@given(
    case=cases(),
    n=st.integers(1, 4),
    order=st.sampled_from(["f", "f DESC", "f NULLS FIRST", "f DESC NULLS FIRST"]),
)
def test_rank_matches_duckdb_over_each_rows_frame(
    case: tuple[pa.Table, list[int]], n: int, order: str
) -> None:
    table, sizes = case
    over = f"OVER (ROWS WINDOW BUFFER {n} ROWS PARTITION BY k ORDER BY {order})"
    query = f"SELECT rn, RANK() {over} AS r, DENSE_RANK() {over} AS d FROM t"
    run = run_job(query, table, batch_size=sizes)
    assert_rows_equal(run.rows, reference(_rank_reference(n, order), table), query)
