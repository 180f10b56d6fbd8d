"""Differential tests of stream–table joins and subqueries over tables.

The stream `t` is cut into batches (one row each up to the whole input); the tables
`d` and `e` are loaded as table sides (memory sources, as a job loads them). Keys have
NULLs and duplicates on both sides, so a stream row matches none, one or several table
rows. The reference is DuckDB's one-shot answer over the same three tables (a tumbling
window as a GROUP BY of the window's start). A stream
row's matches come in no set order, so rows are compared as sorted multisets (for
EMIT CHANGES the running values are the same multiset: a stream row's matches carry
the same stream values).
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import LineRefs, assert_rows_equal, cut, sort_key
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.engine.core import stream_order
from velostream.engine.tables import TableSides
from velostream.errors import PlanError
from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import plan_job

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = st.sampled_from(["a", "b", "c", "", None])
SMALL = st.one_of(st.none(), st.integers(-3, 3))
Row = dict[str, Any]


def job_of(sql: str, tables: dict[str, list[Row]], emit: EmitMode | None = None) -> JobSpec:
    sides = tuple(
        ConnectorConfig(name, "memory_source", {"rows": orjson.dumps(rows).decode()})
        for name, rows in tables.items()
    )
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=emit,
        sources=(ConnectorConfig("t", "memory_source", {}), *sides),
        sinks=(ConnectorConfig("out", "memory_sink", {}),),
    )


def run_joined(
    sql: str,
    stream: pa.Table,
    tables: dict[str, list[Row]],
    sizes: list[int],
    emit: EmitMode | None = None,
) -> list[Row]:
    """Our answer: the table sides loaded, the stream fed in batches of `sizes`."""
    job = job_of(sql, tables, emit)
    plan = plan_job(job)
    executor = build_executor(plan, job)
    loads = TableSides(job, plan, executor.con).load()
    assert [load.bad for load in loads] == [[] for _ in loads]
    rows: list[Row] = []
    for offset, batch in cut(stream, sizes):
        output = executor.process(SourceBatch(batch, LineRefs(offset)))
        assert output.bad == []
        rows += output.table.to_pylist()
    final = executor.finish()
    if final is not None:
        rows += final.to_pylist()
    return rows


def reference(sql: str, stream: pa.Table, tables: dict[str, list[Row]]) -> list[Row]:
    con = duckdb.connect()
    try:
        con.register("t", stream)
        for name, rows in tables.items():
            con.register(name, pa.Table.from_pylist(rows))
        return list(con.sql(sql).to_arrow_table().to_pylist())
    finally:
        con.close()


def assert_same_multiset(got: list[Row], expected: list[Row], context: str) -> None:
    columns = list(expected[0]) if expected else list(got[0]) if got else []
    key = lambda row: sort_key(row, columns)  # noqa: E731
    assert_rows_equal(sorted(got, key=key), sorted(expected, key=key), context)


@st.composite
def cases(draw: st.DrawFn) -> tuple[pa.Table, dict[str, list[Row]], list[int]]:
    n = draw(st.integers(1, 14))
    stream = pa.table(
        {
            "rn": pa.array(range(n), pa.int64()),
            "k": pa.array(draw(st.lists(KEYS, min_size=n, max_size=n)), pa.string()),
            "v": pa.array(draw(st.lists(SMALL, min_size=n, max_size=n)), pa.int64()),
            "ts": pa.array([i * 7000 for i in range(n)], pa.int64()),  # in order: none late
        }
    )
    d = draw(
        st.lists(
            st.fixed_dictionaries(
                {"k": KEYS, "g": st.sampled_from(["x", "y", None]), "w": st.integers(-2, 5)}
            ),
            min_size=1,
            max_size=6,
        )
    )
    e = draw(st.lists(st.fixed_dictionaries({"k": KEYS, "x": SMALL}), min_size=1, max_size=4))
    sizes = draw(
        st.one_of(
            st.integers(1, n).map(lambda size: [size]),
            st.lists(st.integers(1, n), min_size=1, max_size=4),
        )
    )
    return stream, {"d": d, "e": e}, sizes


STATELESS = [
    "SELECT t.rn, t.k, d.g, d.w FROM t JOIN d ON t.k = d.k",
    "SELECT t.rn, t.v, d.g FROM t LEFT JOIN d ON t.k = d.k WHERE t.v IS NULL OR t.v > -2",
    "SELECT t.rn, d.w + t.v AS s FROM t LEFT OUTER JOIN d ON t.k = d.k AND d.w > 0",
    "SELECT t.rn, d.g, e.x FROM t LEFT JOIN d ON t.k = d.k INNER JOIN e ON e.k = t.k",
    "SELECT t.rn, d.g, e.x FROM t t LEFT JOIN d ON t.k = d.k LEFT JOIN e ON e.x = t.v",
]
SUBQUERIES = [
    "SELECT rn, k FROM t WHERE k IN (SELECT k FROM d WHERE w > 0)",
    "SELECT rn, v FROM t WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.k = t.k)",
    "SELECT rn, (SELECT MAX(w) FROM d WHERE d.k = t.k) AS mx FROM t",
    "SELECT rn FROM t WHERE v > (SELECT MIN(w) FROM d)",
    "SELECT rn, k NOT IN (SELECT k FROM e) AS outside FROM t",
    "SELECT t.rn, d.g FROM t LEFT JOIN d ON t.k = d.k "
    "WHERE EXISTS (SELECT 1 FROM e WHERE e.k = d.k)",
]


@SETTINGS
@given(case=cases(), query=st.sampled_from(STATELESS + SUBQUERIES))
def test_stateless_joins_and_subqueries_match_duckdb(
    case: tuple[pa.Table, dict[str, list[Row]], list[int]], query: str
) -> None:
    stream, tables, sizes = case
    got = run_joined(query, stream, tables, sizes)
    assert_same_multiset(got, reference(query, stream, tables), query)


@SETTINGS
@given(case=cases(), query=st.sampled_from(STATELESS[:2] + SUBQUERIES[:2]))
def test_stateless_joins_keep_stream_order(
    case: tuple[pa.Table, dict[str, list[Row]], list[int]], query: str
) -> None:
    stream, tables, sizes = case
    got = [row["rn"] for row in run_joined(query, stream, tables, sizes)]
    assert got == sorted(got)


# (our query, emit, the reference's answer as one-shot SQL)
GROUPED = [
    (
        "SELECT d.g, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d ON t.k = d.k GROUP BY d.g",
        EmitMode.FINAL,
        "SELECT d.g, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d ON t.k = d.k GROUP BY d.g",
    ),
    (
        "SELECT d.g, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d ON t.k = d.k GROUP BY d.g",
        EmitMode.CHANGES,
        "SELECT d.g, COUNT(*) OVER w AS n, SUM(t.v) OVER w AS s FROM t JOIN d ON t.k = d.k "
        "WINDOW w AS (PARTITION BY d.g ORDER BY t.rn ROWS UNBOUNDED PRECEDING)",
    ),
    (
        "SELECT t.k, COUNT(d.w) AS n, MAX(d.w) AS m, SUM(e.x) AS x FROM t LEFT JOIN d "
        "ON t.k = d.k LEFT JOIN e ON e.k = t.k GROUP BY t.k",
        EmitMode.FINAL,
        "SELECT t.k, COUNT(d.w) AS n, MAX(d.w) AS m, SUM(e.x) AS x FROM t LEFT JOIN d "
        "ON t.k = d.k LEFT JOIN e ON e.k = t.k GROUP BY t.k",
    ),
    (
        "SELECT t.k, COUNT(*) AS n, SUM(t.v) AS s FROM t LEFT JOIN d ON t.k = d.k GROUP BY t.k",
        EmitMode.CHANGES,
        "SELECT t.k, COUNT(*) OVER w AS n, SUM(t.v) OVER w AS s FROM t LEFT JOIN d "
        "ON t.k = d.k WINDOW w AS (PARTITION BY t.k ORDER BY t.rn ROWS UNBOUNDED PRECEDING)",
    ),
    (
        "SELECT d.g, _window_start AS ws, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d "
        "ON t.k = d.k GROUP BY d.g WINDOW TUMBLING(t.ts, 20s)",
        EmitMode.FINAL,
        "SELECT d.g, (t.ts // 20000) * 20000 AS ws, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d "
        "ON t.k = d.k GROUP BY d.g, ws",
    ),
    (
        "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t WHERE k IN (SELECT k FROM d) GROUP BY k",
        EmitMode.FINAL,
        "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t WHERE k IN (SELECT k FROM d) GROUP BY k",
    ),
    (
        "SELECT k, COUNT(*) AS n FROM t WHERE EXISTS (SELECT 1 FROM e WHERE e.k = t.k) GROUP BY k",
        EmitMode.CHANGES,
        "SELECT k, COUNT(*) OVER w AS n FROM t WHERE EXISTS (SELECT 1 FROM e WHERE e.k = t.k) "
        "WINDOW w AS (PARTITION BY k ORDER BY rn ROWS UNBOUNDED PRECEDING)",
    ),
]


@SETTINGS
@given(case=cases(), grouped=st.sampled_from(GROUPED))
def test_grouped_joins_match_duckdb(
    case: tuple[pa.Table, dict[str, list[Row]], list[int]],
    grouped: tuple[str, EmitMode, str],
) -> None:
    stream, tables, sizes = case
    query, emit, expected_sql = grouped
    got = run_joined(query, stream, tables, sizes, emit)
    assert_same_multiset(got, reference(expected_sql, stream, tables), f"{query} EMIT {emit}")


# (our query, the reference: the same with each row window as a window function over
# the rows in arrival order); `d` has one row per key here, so arrival order is set.
ROW_WINDOWS = [
    (
        "SELECT t.rn, d.g, LAG(t.v) OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY d.g) AS prev "
        "FROM t JOIN d ON t.k = d.k",
        "SELECT t.rn, d.g, LAG(t.v) OVER (PARTITION BY d.g ORDER BY t.rn) AS prev "
        "FROM t JOIN d ON t.k = d.k",
    ),
    (
        "SELECT t.rn, SUM(d.w) OVER (ROWS WINDOW BUFFER 3 ROWS) AS s3, e.x FROM t "
        "LEFT JOIN d ON t.k = d.k LEFT JOIN e ON e.k = t.k WHERE t.v IS NOT NULL",
        "SELECT t.rn, SUM(d.w) OVER (ORDER BY t.rn ROWS 2 PRECEDING) AS s3, e.x FROM t "
        "LEFT JOIN d ON t.k = d.k LEFT JOIN e ON e.k = t.k WHERE t.v IS NOT NULL",
    ),
    (
        "SELECT rn, ROW_NUMBER() OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY k) AS n FROM t "
        "WHERE EXISTS (SELECT 1 FROM d WHERE d.k = t.k)",
        "SELECT rn, ROW_NUMBER() OVER (PARTITION BY k ORDER BY rn) AS n FROM t "
        "WHERE EXISTS (SELECT 1 FROM d WHERE d.k = t.k)",
    ),
]


@SETTINGS
@given(case=cases(), pair=st.sampled_from(ROW_WINDOWS))
def test_row_windows_over_joins_match_duckdb(
    case: tuple[pa.Table, dict[str, list[Row]], list[int]], pair: tuple[str, str]
) -> None:
    stream, tables, sizes = case
    unique = {"d": list({row["k"]: row for row in tables["d"]}.values())}
    unique["e"] = list({row["k"]: row for row in tables["e"]}.values())
    query, expected_sql = pair
    got = run_joined(query, stream, unique, sizes)
    expected = reference(expected_sql + " ORDER BY 1", stream, unique)
    assert_rows_equal(got, expected, query)


def test_a_one_to_many_match_gives_a_row_per_match_in_stream_order() -> None:
    stream = pa.table({"rn": [0, 1, 2], "k": ["a", "b", "a"], "v": [1, 2, 3]})
    d = [{"k": "a", "g": "x", "w": 1}, {"k": "a", "g": "y", "w": 2}]
    rows = run_joined("SELECT t.rn, d.g FROM t JOIN d ON t.k = d.k", stream, {"d": d}, [1])
    assert sorted((r["rn"], r["g"]) for r in rows) == [(0, "x"), (0, "y"), (2, "x"), (2, "y")]
    assert [r["rn"] for r in rows] == [0, 0, 2, 2]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT t.rn FROM t RIGHT JOIN d ON t.k = d.k", "RIGHT OUTER JOIN against a table"),
        ("SELECT t.rn FROM t FULL OUTER JOIN d ON t.k = d.k", "FULL OUTER JOIN against a table"),
        ("SELECT t.rn FROM t CROSS JOIN d", "CROSS JOIN is not supported"),
        ("SELECT t.rn FROM t NATURAL JOIN d", "NATURAL JOIN is not supported"),
        ("SELECT t.rn FROM t, d", "a comma or CROSS join is not supported"),
        ("SELECT rn FROM t WHERE rn IN (SELECT rn FROM t)", "is the statement's stream"),
        ("SELECT * FROM t JOIN d ON t.k = d.k", "SELECT * over a join"),
        (
            "SELECT *, LAG(v) OVER (ROWS WINDOW BUFFER 5 ROWS) AS p FROM t "
            "WHERE k IN (SELECT k FROM d)",
            "SELECT * over a join (or with window functions and a subquery)",
        ),
    ],
)
def test_joins_we_cannot_honour_are_refused(sql: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_job(job_of(sql, {"d": [{"k": "a"}]}))
    assert message in str(caught.value)


def _job_with_table(props: dict[str, str]) -> JobSpec:
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql="SELECT t.rn FROM t JOIN d ON t.k = d.k",
        emit=None,
        sources=(
            ConnectorConfig("t", "memory_source", {}),
            ConnectorConfig("d", props["type"], {k: v for k, v in props.items() if k != "type"}),
        ),
        sinks=(),
    )


def test_a_watched_file_as_a_table_side_is_refused() -> None:
    with pytest.raises(PlanError) as caught:
        plan_job(_job_with_table({"type": "file_source", "watch": "true", "path": "d.csv"}))
    assert "a stream–stream join needs 'join.timeout'" in str(caught.value)


def test_a_kafka_topic_is_a_table_side() -> None:
    plan = plan_job(_job_with_table({"type": "kafka_source", "topic": "d"}))
    assert [side.name for side in plan.tables] == ["d"]


def test_rows_out_of_order_are_put_back_in_stream_order_stably() -> None:
    table = pa.table({"v": ["c1", "a1", "b", "a2", "c2"], "rn": [2, 0, 1, 0, 2]})
    ordered = stream_order(table, 1)
    assert ordered.column("v").to_pylist() == ["a1", "a2", "b", "c1", "c2"]
    in_order = table.take([1, 3, 2, 0, 4])
    assert stream_order(in_order, 1) is in_order  # already in order: not copied


def test_runs_in_order_are_put_in_order_without_a_copy_when_they_do_not_interleave() -> None:
    def batches(*runs: list[int]) -> pa.Table:
        schema = pa.schema({"v": pa.string(), "rn": pa.int64()})
        made = [
            pa.record_batch({"v": [f"{i}.{n}" for n in run], "rn": run}, schema)
            for i, run in enumerate(runs)
        ]
        return pa.Table.from_batches(made, schema)

    def order(table: pa.Table) -> list[str]:
        return stream_order(table, 1).column("v").to_pylist()

    runs = batches([4, 5, 5], [], [0, 1, 3], [6])
    assert order(runs) == ["2.0", "2.1", "2.3", "0.4", "0.5", "0.5", "3.6"]
    assert stream_order(runs, 1).column("v").chunk(0).to_pylist() == ["2.0", "2.1", "2.3"]
    # Runs that interleave, or meet at a number a stable sort orders otherwise: sorted.
    assert order(batches([2, 4], [1, 3])) == ["1.1", "0.2", "1.3", "0.4"]
    assert order(batches([3, 5], [1, 3])) == ["1.1", "0.3", "1.3", "0.5"]
    assert order(batches([1, 3], [3, 5], [0])) == ["2.0", "0.1", "0.3", "1.3", "1.5"]


def test_a_literal_that_looks_like_the_planners_placeholder_is_left_alone() -> None:
    for text in ("__subquery0__", "__subquery_0__", "__sq0"):
        stream = pa.table({"rn": [0, 1], "k": ["a", text], "v": [1, 2], "ts": [0, 0]})
        query = f"SELECT rn, k FROM t WHERE k IN (SELECT k FROM d) OR k = '{text}'"
        rows = run_joined(query, stream, {"d": [{"k": "a"}]}, [2])
        assert rows == [{"rn": 0, "k": "a"}, {"rn": 1, "k": text}]
