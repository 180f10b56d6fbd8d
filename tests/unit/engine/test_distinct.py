"""SELECT DISTINCT on a stream against DuckDB's one-shot SELECT DISTINCT, and with
`distinct.ttl` against a plain sequential model, over any cut into batches and across
restarts from a checkpointed state.

The reference order is first occurrence: DuckDB's `SELECT DISTINCT` gives the rows (its
own notion of equal rows: NULLs equal), `QUALIFY ROW_NUMBER() ... = 1 ORDER BY rn` the
order they must come in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import (
    LineRefs,
    Row,
    assert_rows_equal,
    cut,
    make_job,
    reference,
    run_job,
    sort_key,
)
from velostream.datasource.traits import BadRecord, SourceBatch
from velostream.engine import DistinctExecutor, Executor, build_executor
from velostream.errors import StateIncompatibleError
from velostream.sql.planner import PlanKind, plan_job

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYS = st.sampled_from(["a", "b", "", "日本", None])
SMALL = st.one_of(st.none(), st.integers(-2, 2))
FLOATS = st.one_of(st.none(), st.sampled_from([0.5, -1.25, 3.0, 1e300]))


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 24) -> pa.Table:
    n = draw(st.integers(1, max_rows))
    column = lambda values: draw(st.lists(values, min_size=n, max_size=n))  # noqa: E731
    return pa.table(
        {
            "rn": pa.array(range(n), pa.int64()),
            "k": pa.array(column(KEYS), pa.string()),
            "v": pa.array(column(SMALL), pa.int64()),
            "f": pa.array(column(FLOATS), pa.float64()),
            "et": pa.array(column(st.one_of(st.none(), st.integers(0, 40))), pa.int64()),
        }
    )


QUERIES = [
    ("k, v", None),
    ("k", None),
    ("v, f", None),
    ("k, v * 2 AS w", "v IS NULL OR v > -2"),
    ("UPPER(k) AS u, f", "k <> 'b'"),
    ("k, v, f", None),
]


def _sql(items: str, where: str | None) -> str:
    return f"SELECT DISTINCT {items} FROM t" + (f" WHERE {where}" if where else "")


def expected_distinct(items: str, where: str | None, table: pa.Table) -> list[Row]:
    """DuckDB's one-shot SELECT DISTINCT, in first-occurrence order."""
    filtered = f" WHERE {where}" if where else ""
    first = reference(
        f"SELECT {items} FROM (SELECT *, rn AS __i FROM t{filtered}) "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {_partition(items)} ORDER BY __i) = 1 "
        "ORDER BY __i",
        table,
    )
    distinct = reference(_sql(items, where), table)
    columns = list(first[0]) if first else []
    assert sorted(first, key=lambda r: sort_key(r, columns)) == sorted(
        distinct, key=lambda r: sort_key(r, columns)
    )
    return first


def _partition(items: str) -> str:
    return ", ".join(part.split(" AS ")[0] for part in items.split(", "))


def as_checkpointed(state: dict[str, Any]) -> dict[str, Any]:
    """The state as a checkpoint gives it back: its plain values through JSON."""
    values = {k: v for k, v in state.items() if not isinstance(v, pa.Table)}
    return {**state, **orjson.loads(orjson.dumps(values))}


class Clock:
    """A processing-time clock the test moves (seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def run_with_restarts(
    sql: str,
    table: pa.Table,
    sizes: Sequence[int],
    restarts: set[int],
    props: dict[str, str] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[list[Row], list[BadRecord], list[int]]:
    """Feed `table` in batches; before each batch number in `restarts`, a new executor
    takes over from the last checkpoint (the JSON round trip of its plain values), and
    the batch before it is replayed once after an abort (restore of the state before it).
    Returns the rows, the bad records and each batch's output row count."""
    job = make_job(sql, props=props)
    plan = plan_job(job)

    def fresh() -> Executor:
        executor = build_executor(plan, job)
        if clock is not None:
            assert isinstance(executor, DistinctExecutor)
            executor._clock = clock
        return executor

    executor = fresh()
    rows: list[Row] = []
    bad: list[BadRecord] = []
    counts: list[int] = []
    for number, (offset, part) in enumerate(cut(table, sizes)):
        batch = SourceBatch(part, LineRefs(offset))
        if number in restarts:
            state = as_checkpointed(executor.snapshot())
            executor = fresh()
            executor.restore(state)
            # An aborted attempt at this batch, rolled back: it must leave no trace.
            executor.process(batch)
            executor.restore(state)
        output = executor.process(batch)
        rows.extend(output.table.to_pylist())
        bad.extend(output.bad)
        counts.append(output.table.num_rows)
    return rows, bad, counts


@st.composite
def cuts(draw: st.DrawFn, table: pa.Table) -> tuple[list[int], set[int]]:
    n = table.num_rows
    sizes = draw(st.lists(st.integers(1, n), min_size=1, max_size=4))
    batches = len(cut(table, sizes))
    restarts = set(draw(st.lists(st.integers(0, max(batches - 1, 0)), max_size=3)))
    return sizes, restarts


@SETTINGS
@given(data=st.data(), table=tables(), query=st.sampled_from(QUERIES))
def test_distinct_equals_duckdb_select_distinct_in_first_occurrence_order(
    data: st.DataObject, table: pa.Table, query: tuple[str, str | None]
) -> None:
    items, where = query
    sizes, restarts = data.draw(cuts(table))
    rows, bad, _ = run_with_restarts(_sql(items, where), table, sizes, restarts)
    assert bad == []
    assert_rows_equal(rows, expected_distinct(items, where, table), f"{sizes} {restarts}")


def ttl_model(table: pa.Table, columns: Sequence[str], ttl: int) -> list[Row]:
    """Sequentially: the clock is the largest event time so far; a row is emitted when
    its last emission is `ttl` or more behind the clock (or it never was)."""
    emitted: dict[tuple[Any, ...], int | None] = {}
    clock: int | None = None
    out = []
    for row in table.to_pylist():
        if row["et"] is not None:
            clock = row["et"] if clock is None else max(clock, row["et"])
        key = tuple(row[c] for c in columns)
        if key in emitted:
            last = emitted[key]
            alive = clock is None if last is None else clock is not None and clock < last + ttl
            if alive:
                continue
        emitted[key] = clock
        out.append({c: row[c] for c in columns})
    return out


@SETTINGS
@given(
    data=st.data(),
    table=tables(),
    ttl=st.integers(1, 30),
    columns=st.sampled_from([("k",), ("k", "v"), ("v",)]),
)
def test_distinct_with_a_ttl_in_event_time_follows_the_sequential_model(
    data: st.DataObject, table: pa.Table, ttl: int, columns: tuple[str, ...]
) -> None:
    sizes, restarts = data.draw(cuts(table))
    props = {"distinct.ttl": f"{ttl}ms", "event.time.field": "et"}
    sql = f"SELECT DISTINCT {', '.join(columns)} FROM t"
    rows, bad, _ = run_with_restarts(sql, table, sizes, restarts, props)
    assert bad == []
    assert_rows_equal(rows, ttl_model(table, columns, ttl), f"{sizes} {restarts}")


def test_the_ttl_in_processing_time_forgets_a_row_after_its_emission() -> None:
    clock = Clock()
    job = make_job("SELECT DISTINCT k FROM t", props={"distinct.ttl": "10s"})
    executor = build_executor(plan_job(job), job)
    assert isinstance(executor, DistinctExecutor)
    executor._clock = clock

    def feed(*keys: str) -> list[str]:
        table = pa.table({"k": list(keys)})
        return executor.process(SourceBatch(table, LineRefs(0))).table.column("k").to_pylist()

    assert feed("a", "b", "a") == ["a", "b"]
    clock.now += 9.999
    assert feed("a", "c") == ["c"]
    clock.now += 0.001  # 10 s after a and b were emitted: they are forgotten
    assert feed("b", "a", "c", "a") == ["b", "a"]
    assert executor.snapshot()["seen"].num_rows == 3
    clock.now += 10
    feed("z")
    assert executor.snapshot()["seen"].column("__c0").to_pylist() == ["z"]


def test_the_wall_clock_going_back_never_brings_a_row_back_early() -> None:
    clock = Clock()
    job = make_job("SELECT DISTINCT k FROM t", props={"distinct.ttl": "10s"})
    executor = build_executor(plan_job(job), job)
    assert isinstance(executor, DistinctExecutor)
    executor._clock = clock
    batch = SourceBatch(pa.table({"k": ["a"]}), LineRefs(0))
    assert executor.process(batch).table.num_rows == 1
    clock.now -= 3600
    assert executor.process(batch).table.num_rows == 0


def test_without_a_ttl_the_state_holds_one_row_per_distinct_row() -> None:
    table = pa.table({"k": ["a", "b"] * 50, "v": [1, 2, 3, 4] * 25})
    run = run_job("SELECT DISTINCT k, v FROM t", table, batch_size=7)
    assert run.rows == [
        {"k": "a", "v": 1},
        {"k": "b", "v": 2},
        {"k": "a", "v": 3},
        {"k": "b", "v": 4},
    ]
    assert run.executor is not None
    assert run.executor.snapshot()["seen"].num_rows == 4


def test_a_bad_cast_is_that_rows_failure_and_a_duplicate_is_filtered() -> None:
    table = pa.table({"s": ["1", "x", "2", "1", "y", "2", "3"]})
    run = run_job("SELECT DISTINCT CAST(s AS INTEGER) AS n FROM t", table, batch_size=3)
    assert run.column("n") == [1, 2, 3]
    assert [b.ref for b in run.bad] == ["t.csv:3", "t.csv:6"]
    assert "cannot CAST s = 'x' to INT" in run.bad[0].message
    # records in = out + filtered (the duplicates) + failed
    assert table.num_rows == len(run.rows) + 2 + len(run.bad)


def test_limit_counts_distinct_rows() -> None:
    table = pa.table({"k": ["a", "a", "b", "b", "c"]})
    assert run_job("SELECT DISTINCT k FROM t LIMIT 2", table, batch_size=1).column("k") == [
        "a",
        "b",
    ]


def test_star_is_distinct_over_the_sources_own_columns() -> None:
    table = pa.table({"k": ["a", "a", "b"], "v": [1, 1, 1], "_offset": [1, 2, 3]})
    run = run_job("SELECT DISTINCT * FROM t", table, batch_size=2)
    assert run.rows == [{"k": "a", "v": 1}, {"k": "b", "v": 1}]


def test_an_event_time_of_the_wrong_type_fails_each_row_once() -> None:
    table = pa.table({"k": ["a", "b"], "et": ["soon", "later"]})
    run = run_job(
        "SELECT DISTINCT k FROM t",
        table,
        props={"distinct.ttl": "1s", "event.time.field": "et"},
    )
    assert run.rows == []
    assert len(run.bad) == 2 and "expected a timestamp or epoch milliseconds" in run.bad[0].message


def test_timestamps_as_event_time() -> None:
    times = pa.array([0, 500, 1_000, 1_999, 2_000], pa.timestamp("ms"))
    table = pa.table({"k": ["a"] * 5, "ts": times})
    run = run_job(
        "SELECT DISTINCT k FROM t",
        table,
        batch_size=2,
        props={"distinct.ttl": "1s", "event.time.field": "ts"},
    )
    assert len(run.rows) == 3  # at 0, 1000 and 2000


def test_the_plan_kind_and_state_shape() -> None:
    job = make_job("SELECT DISTINCT k FROM t")
    plan = plan_job(job)
    assert plan.kind == PlanKind.DISTINCT
    executor = build_executor(plan, job)
    assert executor.snapshot()["shape"] == {"kind": "distinct", "distinct": ['k AS "k"']}


def _state_of(sql: str) -> dict[str, Any]:
    job = make_job(sql)
    executor = build_executor(plan_job(job), job)
    executor.process(SourceBatch(pa.table({"k": ["a"], "v": [1]}), LineRefs(0)))
    return as_checkpointed(executor.snapshot())


@pytest.mark.parametrize(
    ("kept", "restoring", "named"),
    [
        ("SELECT DISTINCT k FROM t", "SELECT DISTINCT k, v FROM t", ["distinct", 'v AS "v"']),
        ("SELECT DISTINCT k FROM t", "SELECT k FROM t", ["SELECT DISTINCT query"]),
        ("SELECT k FROM t", "SELECT DISTINCT k FROM t", ["kept by a stateless query"]),
    ],
)
def test_restore_refuses_the_state_of_another_query(
    kept: str, restoring: str, named: list[str]
) -> None:
    job = make_job(restoring)
    executor = build_executor(plan_job(job), job)
    with pytest.raises(StateIncompatibleError) as caught:
        executor.restore(_state_of(kept))
    for part in named:
        assert part in str(caught.value), str(caught.value)


def test_restore_refuses_remembered_rows_of_another_width() -> None:
    state = _state_of("SELECT DISTINCT k FROM t")
    state["seen"] = state["seen"].append_column("__c1", pa.array([1]))
    state["seen"] = state["seen"].select(["__c0", "__c1", "__seen"])
    job = make_job("SELECT DISTINCT k FROM t")
    executor = build_executor(plan_job(job), job)
    with pytest.raises(StateIncompatibleError, match="2 columns"):
        executor.restore(state)


def test_a_restored_state_does_not_emit_a_row_twice() -> None:
    state = _state_of("SELECT DISTINCT k FROM t")
    job = make_job("SELECT DISTINCT k FROM t")
    executor = build_executor(plan_job(job), job)
    executor.restore(state)
    batch = SourceBatch(pa.table({"k": ["a", "b", "a"]}), LineRefs(0))
    assert executor.process(batch).table.column("k").to_pylist() == ["b"]


def test_many_batches_keep_order_across_sizes() -> None:
    table = pa.table({"k": [f"k{i % 13}" for i in range(200)]})
    expected = [f"k{i}" for i in range(13)]
    for size in itertools.chain(range(1, 15), [199, 200]):
        assert run_job("SELECT DISTINCT k FROM t", table, batch_size=size).column("k") == expected


def test_types_that_change_between_batches_still_match() -> None:
    job = make_job("SELECT DISTINCT v FROM t")
    executor = build_executor(plan_job(job), job)
    batches = [
        pa.array([None, None]),
        pa.array([1, 2]),
        pa.array([2.0, 2.5]),  # widens to DOUBLE: 2.0 is the 2 seen
        pa.array(["2.5", "x"]),  # no common type: compared as text
        pa.array([3, 2]),
    ]
    emitted = [
        executor.process(SourceBatch(pa.table({"v": values}), LineRefs(0))).table.to_pylist()
        for values in batches
    ]
    assert emitted == [[{"v": None}], [{"v": 1}, {"v": 2}], [{"v": 2.5}], [{"v": "x"}], [{"v": 3}]]


def test_a_star_whose_columns_change_under_a_restored_state_fails_clearly() -> None:
    job = make_job("SELECT DISTINCT * FROM t")
    executor = build_executor(plan_job(job), job)
    executor.process(SourceBatch(pa.table({"k": ["a"]}), LineRefs(0)))
    with pytest.raises(StateIncompatibleError, match="the remembered rows have 1 columns"):
        executor.process(SourceBatch(pa.table({"k": ["a"], "v": [1]}), LineRefs(1)))
