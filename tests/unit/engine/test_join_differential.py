"""Differential tests of stream–table joins and subqueries over tables.

The stream `t` is cut into batches (one row each up to the whole input); the tables
`d` and `e` are loaded as table sides (memory sources, as a job loads them). Keys have
NULLs and duplicates on both sides, so a stream row matches none, one or several table
rows. Stream rows come with event times `ts` out of order (jitter, steps back by up to
more than a window) and some are fully duplicated, anywhere later in the stream. The
reference is DuckDB's one-shot answer over the same three tables, whatever the order.
A tumbling window over a join is judged by a model: the joined rows in stream order,
each late when its window ended at or before the watermark before it (the largest
earlier joined event time less the out-of-orderness), the others grouped by DuckDB;
a late stream row is one late record however many table rows it matched. A stream
row's matches come in no set order, so rows are compared as sorted multisets (for
EMIT CHANGES the running values are the same multiset: a stream row's matches carry
the same stream values). In references `t` has its stream position `pos` as well.
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
WINDOW_MS = 20_000
Row = dict[str, Any]


def job_of(
    sql: str,
    tables: dict[str, list[Row]],
    emit: EmitMode | None = None,
    props: dict[str, str] | None = None,
) -> JobSpec:
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
        properties=dict(props or {}),
    )


def run_late(
    sql: str,
    stream: pa.Table,
    tables: dict[str, list[Row]],
    sizes: list[int],
    emit: EmitMode | None = None,
    props: dict[str, str] | None = None,
) -> tuple[list[Row], int]:
    """Our answer and the late records it dropped: the table sides loaded, the stream
    fed in batches of `sizes`."""
    job = job_of(sql, tables, emit, props)
    plan = plan_job(job)
    executor = build_executor(plan, job)
    loads = TableSides(job, plan, executor.con).load()
    assert [load.bad for load in loads] == [[] for _ in loads]
    rows: list[Row] = []
    late = 0
    for offset, batch in cut(stream, sizes):
        output = executor.process(SourceBatch(batch, LineRefs(offset)))
        assert output.bad == [] and output.late == []
        late += output.late_dropped
        rows += output.table.to_pylist()
    final = executor.finish()
    if final is not None:
        rows += final.to_pylist()
    assert getattr(executor, "late_records", 0) == late
    return rows, late


def run_joined(
    sql: str,
    stream: pa.Table,
    tables: dict[str, list[Row]],
    sizes: list[int],
    emit: EmitMode | None = None,
) -> list[Row]:
    """Our answer to a query that finds no row late."""
    rows, late = run_late(sql, stream, tables, sizes, emit)
    assert late == 0
    return rows


def reference(sql: str, stream: pa.Table, tables: dict[str, list[Row] | pa.Table]) -> list[Row]:
    return list(reference_table(sql, stream, tables).to_pylist())


def reference_table(
    sql: str, stream: pa.Table, tables: dict[str, list[Row] | pa.Table]
) -> pa.Table:
    con = duckdb.connect()
    try:
        con.register("t", stream.append_column("pos", pa.array(range(stream.num_rows))))
        for name, rows in tables.items():
            con.register(name, rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows))
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def assert_same_multiset(got: list[Row], expected: list[Row], context: str) -> None:
    columns = list(expected[0]) if expected else list(got[0]) if got else []
    key = lambda row: sort_key(row, columns)  # noqa: E731
    assert_rows_equal(sorted(got, key=key), sorted(expected, key=key), context)


def event_times(draw: st.DrawFn, n: int) -> list[int]:
    """`n` event times drifting up with jitter, repeats and steps back (some by less
    than a window, some by more), never below 0."""
    steps = draw(
        st.lists(
            st.one_of(
                st.just(0),
                st.integers(0, 3_000),
                st.integers(-WINDOW_MS, WINDOW_MS // 4),
                st.integers(-3 * WINDOW_MS, 2 * WINDOW_MS),
                st.integers(-5 * WINDOW_MS, -WINDOW_MS),
            ),
            min_size=n,
            max_size=n,
        )
    )
    times, now = [], 100_000
    for step in steps:
        now = max(now + step, 0)
        times.append(now)
    return times


@st.composite
def cases(draw: st.DrawFn) -> tuple[pa.Table, dict[str, list[Row]], list[int]]:
    n = draw(st.integers(1, 12))
    keys = draw(st.lists(KEYS, min_size=n, max_size=n))
    values = draw(st.lists(SMALL, min_size=n, max_size=n))
    rows = [
        {"rn": i, "k": k, "v": v, "ts": ts}
        for i, (k, v, ts) in enumerate(zip(keys, values, event_times(draw, n), strict=True))
    ]
    # Fully duplicate rows (a redelivery), anywhere after their original.
    for _ in range(draw(st.integers(0, 3))):
        original = draw(st.integers(0, len(rows) - 1))
        rows.insert(draw(st.integers(original + 1, len(rows))), dict(rows[original]))
    n = len(rows)
    schema = pa.schema(
        [("rn", pa.int64()), ("k", pa.string()), ("v", pa.int64()), ("ts", pa.int64())]
    )
    stream = pa.Table.from_pylist(rows, schema=schema)
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
    assert_in_stream_order(got, stream)


def assert_in_stream_order(got: list[int], stream: pa.Table) -> None:
    """`got` (output `rn`s, a stream row's matches together) follows the stream's order."""
    order = iter(stream.column("rn").to_pylist())
    for index, rn in enumerate(got):
        if index and got[index - 1] == rn:
            continue  # another match of the same stream row, or of its twin
        assert any(rn == seen for seen in order), f"{got} out of stream order"


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
        "WINDOW w AS (PARTITION BY d.g ORDER BY t.pos ROWS UNBOUNDED PRECEDING)",
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
        "ON t.k = d.k WINDOW w AS (PARTITION BY t.k ORDER BY t.pos ROWS UNBOUNDED PRECEDING)",
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
        "WINDOW w AS (PARTITION BY k ORDER BY pos ROWS UNBOUNDED PRECEDING)",
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


# (our query, emit, the joined rows in the model (with `pos` and `ts`), the reference's
# answer over the joined rows that were not late, `j`, with their window start `ws`)
TUMBLING = [
    (
        "SELECT d.g, _window_start AS ws, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d "
        "ON t.k = d.k GROUP BY d.g WINDOW TUMBLING(t.ts, 20s)",
        EmitMode.FINAL,
        "SELECT t.pos, t.ts, d.g, t.v FROM t JOIN d ON t.k = d.k",
        "SELECT g, ws, COUNT(*) AS n, SUM(v) AS s FROM j GROUP BY g, ws",
    ),
    (
        "SELECT t.k, _window_start AS ws, COUNT(d.w) AS n, MAX(e.x) AS x FROM t LEFT JOIN d "
        "ON t.k = d.k LEFT JOIN e ON e.k = t.k WHERE t.v IS NULL OR t.v > -2 "
        "GROUP BY t.k WINDOW TUMBLING(t.ts, 20s)",
        EmitMode.FINAL,
        "SELECT t.pos, t.ts, t.k, d.w, e.x FROM t LEFT JOIN d ON t.k = d.k "
        "LEFT JOIN e ON e.k = t.k WHERE t.v IS NULL OR t.v > -2",
        "SELECT k, ws, COUNT(w) AS n, MAX(x) AS x FROM j GROUP BY k, ws",
    ),
    (
        "SELECT d.g, _window_start AS ws, COUNT(*) AS n, SUM(t.v) AS s FROM t JOIN d "
        "ON t.k = d.k GROUP BY d.g WINDOW TUMBLING(t.ts, 20s)",
        EmitMode.CHANGES,
        "SELECT t.pos, t.ts, d.g, t.v FROM t JOIN d ON t.k = d.k",
        "SELECT g, ws, COUNT(*) OVER w AS n, SUM(v) OVER w AS s FROM j "
        "WINDOW w AS (PARTITION BY g, ws ORDER BY pos ROWS UNBOUNDED PRECEDING)",
    ),
    (
        "SELECT k, _window_start AS ws, COUNT(*) AS n FROM t WHERE k IN (SELECT k FROM d) "
        "GROUP BY k WINDOW TUMBLING(ts, 20s)",
        EmitMode.FINAL,
        "SELECT pos, ts, k FROM t WHERE k IN (SELECT k FROM d)",
        "SELECT k, ws, COUNT(*) AS n FROM j GROUP BY k, ws",
    ),
]


def not_late(joined: pa.Table, out_of_order: int) -> tuple[pa.Table, int]:
    """The model: the joined rows not late, with their window start `ws`, and how many
    stream rows were late. `joined` is in stream order (`pos`; a row's matches share it)."""
    joined = joined.sort_by("pos")
    starts = [ts // WINDOW_MS * WINDOW_MS for ts in joined.column("ts").to_pylist()]
    keep, late, top = [], set(), None
    rows = zip(joined.column("pos").to_pylist(), joined.column("ts").to_pylist(), strict=True)
    for index, (pos, ts) in enumerate(rows):
        if top is not None and starts[index] + WINDOW_MS <= top - out_of_order:
            late.add(pos)
            continue
        keep.append(index)
        top = ts if top is None else max(top, ts)
    kept = joined.append_column("ws", pa.array(starts, pa.int64())).take(pa.array(keep, pa.int64()))
    return kept, len(late)


@SETTINGS
@given(
    case=cases(),
    windowed=st.sampled_from(TUMBLING),
    out_of_order=st.sampled_from([0, 5_000, 30_000]),
)
def test_tumbling_windows_over_joins_match_the_model(
    case: tuple[pa.Table, dict[str, list[Row]], list[int]],
    windowed: tuple[str, EmitMode, str, str],
    out_of_order: int,
) -> None:
    stream, tables, sizes = case
    query, emit, joined_sql, expected_sql = windowed
    props = {"watermark.max_out_of_orderness": f"{out_of_order}ms"}
    got, late = run_late(query, stream, tables, sizes, emit, props)
    kept, expected_late = not_late(reference_table(joined_sql, stream, tables), out_of_order)
    assert late == expected_late, f"{query}: {late} late, expected {expected_late}"
    expected = reference(expected_sql, stream, {"j": kept})
    assert_same_multiset(got, expected, f"{query} EMIT {emit} ooo {out_of_order}")


# (our query, the reference: the same with each row window as a window function over
# the rows in arrival order); `d` has one row per key here, so arrival order is set.
ROW_WINDOWS = [
    (
        "SELECT t.rn, d.g, LAG(t.v) OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY d.g) AS prev "
        "FROM t JOIN d ON t.k = d.k",
        "SELECT t.rn, d.g, LAG(t.v) OVER (PARTITION BY d.g ORDER BY t.pos) AS prev "
        "FROM t JOIN d ON t.k = d.k",
    ),
    (
        "SELECT t.rn, SUM(d.w) OVER (ROWS WINDOW BUFFER 3 ROWS) AS s3, e.x FROM t "
        "LEFT JOIN d ON t.k = d.k LEFT JOIN e ON e.k = t.k WHERE t.v IS NOT NULL",
        "SELECT t.rn, SUM(d.w) OVER (ORDER BY t.pos ROWS 2 PRECEDING) AS s3, e.x FROM t "
        "LEFT JOIN d ON t.k = d.k LEFT JOIN e ON e.k = t.k WHERE t.v IS NOT NULL",
    ),
    (
        "SELECT rn, ROW_NUMBER() OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY k) AS n FROM t "
        "WHERE EXISTS (SELECT 1 FROM d WHERE d.k = t.k)",
        "SELECT rn, ROW_NUMBER() OVER (PARTITION BY k ORDER BY pos) AS n FROM t "
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
    # Twins share an `rn` (in no set order in the reference): compared as multisets.
    assert_same_multiset(got, reference(expected_sql, stream, unique), query)
    assert_in_stream_order([row["rn"] for row in got], stream)


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


@pytest.mark.parametrize("strategy", ["drop", "dead_letter"])
def test_a_late_stream_row_with_several_matches_is_one_late_record(strategy: str) -> None:
    """Regression: a late row that matched two table rows was counted (and dead-lettered)
    twice, so records in < out or filtered + failed + late. So was a NULL event time."""
    sql = (
        "SELECT d.g, COUNT(*) AS n FROM t JOIN d ON t.k = d.k GROUP BY d.g "
        "WINDOW TUMBLING(t.ts, 20s)"
    )
    d = [{"k": "a", "g": "x", "w": 1}, {"k": "a", "g": "y", "w": 2}]
    job = job_of(sql, {"d": d}, props={"late.data.strategy": strategy})
    plan = plan_job(job)
    executor = build_executor(plan, job)
    TableSides(job, plan, executor.con).load()
    stream = pa.table(
        {"rn": [0, 1, 2], "k": ["a", "a", "a"], "v": [1, 2, 3], "ts": [100_000, 0, None]}
    )
    output = executor.process(SourceBatch(stream, LineRefs(0)))
    assert [bad.ref for bad in output.bad] == ["t.csv:4"]
    assert executor.late_records == 1  # type: ignore[attr-defined]
    if strategy == "drop":
        assert (output.late, output.late_dropped) == ([], 1)
    else:
        assert ([late.ref for late in output.late], output.late_dropped) == (["t.csv:3"], 0)
