"""Differential tests of stream–stream joins (both sides streamed, `join.timeout`).

Two sides `a` and `b` have NULL and duplicate keys and event times out of order; their
batches (sizes 1 to all) interleave in a drawn order. A row older than the watermark
(the smaller of the sides' largest event times, less the out-of-orderness) when its
batch comes is late; the reference is DuckDB's one-shot join, `ON a.k = b.k AND
abs(a.t - b.t) <= timeout`, of every row that was not late (INNER, LEFT, RIGHT and FULL), and the
late rows are counted. Rows of one batch match in no set order, so rows are compared
as sorted multisets. Snapshots are taken mid-stream and restored into a fresh executor
(a restart) or into the same one after more batches (an aborted transaction).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import LineRefs, make_job, sort_key
from velostream.datasource.traits import SourceBatch
from velostream.engine import StreamJoinExecutor, build_executor
from velostream.errors import PlanError, StateIncompatibleError
from velostream.sql.model import StatementKind
from velostream.sql.planner import PlanKind, plan_job

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = st.sampled_from(["a", "b", "c", None])
TIMEOUT = 5
Row = dict[str, Any]
Batch = tuple[str, int, pa.Table]  # side, offset, rows

WHERES = ["", " WHERE a.v <= COALESCE(b.v, 2)", " WHERE b.v IS NULL OR b.v > 0"]


KINDS = st.sampled_from(["INNER", "LEFT", "RIGHT", "FULL"])


def _sql(kind: str, where: str) -> str:
    join = f"{kind} JOIN"
    return f"SELECT a.id, b.id AS bid, a.k, b.v AS bv FROM a {join} b ON a.k = b.k{where}"


def _props(ooo: int) -> dict[str, str]:
    return {
        "join.timeout": f"{TIMEOUT}ms",
        "event.time.field": "t",
        "watermark.max_out_of_orderness": f"{ooo}ms",
    }


@st.composite
def sides(draw: st.DrawFn, ooo: int, only_in_allowance: bool) -> tuple[list[Row], list[Row]]:
    """Rows of `a` and `b`: times drift up with jitter (kept within `ooo` of the side's
    largest earlier time when `only_in_allowance`, so that no row is late)."""
    out = []
    for first_id in (0, 1000):
        rows, top = [], 0
        for i in range(draw(st.integers(0, 14))):
            t = draw(st.integers(0, 40))
            if only_in_allowance:
                t = max(t, top - ooo)
            top = max(top, t)
            v = draw(st.one_of(st.none(), st.integers(-2, 3)))
            rows.append({"id": first_id + i, "k": draw(KEYS), "t": t, "v": v})
        out.append(rows)
    return out[0], out[1]


@st.composite
def interleaving(draw: st.DrawFn, a: list[Row], b: list[Row]) -> list[Batch]:
    """Both sides cut into batches of 1..all rows, interleaved in a drawn order."""
    tables = {"a": a, "b": b}
    taken = {"a": 0, "b": 0}
    batches: list[Batch] = []
    while any(taken[s] < len(tables[s]) for s in tables):
        open_sides = [s for s in tables if taken[s] < len(tables[s])]
        side = draw(st.sampled_from(open_sides))
        left = len(tables[side]) - taken[side]
        size = draw(st.integers(1, left))
        rows = tables[side][taken[side] : taken[side] + size]
        batches.append((side, taken[side], pa.Table.from_pylist(rows, schema=_schema())))
        taken[side] += size
    return batches


def _schema() -> pa.Schema:
    return pa.schema([("id", pa.int64()), ("k", pa.string()), ("t", pa.int64()), ("v", pa.int64())])


def _as_timestamps(batches: list[Batch]) -> list[Batch]:
    """The same batches with `t` a TIMESTAMP (milliseconds)."""
    out = []
    for side, offset, table in batches:
        t = table.column("t").cast(pa.timestamp("ms"))
        out.append((side, offset, table.set_column(2, "t", t)))
    return out


def not_late(batches: list[Batch], ooo: int) -> tuple[dict[str, list[Row]], int]:
    """Each side's rows that are not late, and how many are, by the watermark rule."""
    top: dict[str, int | None] = {"a": None, "b": None}
    kept: dict[str, list[Row]] = {"a": [], "b": []}
    late = 0
    for side, _, table in batches:
        a, b = top["a"], top["b"]
        watermark = None if a is None or b is None else min(a, b) - ooo
        for row in table.to_pylist():
            t = row["t"]
            ms = (
                int(t.replace(tzinfo=dt.UTC).timestamp() * 1000)
                if isinstance(t, dt.datetime)
                else t
            )
            if watermark is not None and ms < watermark:
                late += 1
                continue
            kept[side].append({**row, "t": ms})
            previous = top[side]
            top[side] = ms if previous is None else max(previous, ms)
    return kept, late


def reference(kind: str, where: str, rows: dict[str, list[Row]], timestamps: bool) -> list[Row]:
    """DuckDB's one-shot join of `rows` within TIMEOUT."""
    con = duckdb.connect()
    try:
        for side, kept in rows.items():
            table = pa.Table.from_pylist(kept, schema=_schema())
            if timestamps:
                table = table.set_column(2, "t", table.column("t").cast(pa.timestamp("ms")))
            con.register(side, table)
        # TIMESTAMP_MS has no epoch_ms of its own: widen it first.
        ms = "epoch_ms(CAST({}.t AS TIMESTAMP))"
        diff = f"{ms.format('a')} - {ms.format('b')}" if timestamps else "a.t - b.t"
        join = f"{kind} JOIN"
        sql = (
            f"SELECT a.id, b.id AS bid, a.k, b.v AS bv FROM a {join} b ON a.k = b.k "
            f"AND abs({diff}) <= {TIMEOUT}{where}"
        )
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()


def _executor(kind: str, where: str, ooo: int) -> StreamJoinExecutor:
    job = make_job(_sql(kind, where), props=_props(ooo), sources=("a", "b"))
    plan = plan_job(job)
    assert plan.kind == PlanKind.STREAM_JOIN
    executor = build_executor(plan, job)
    assert isinstance(executor, StreamJoinExecutor)
    return executor


def _feed(executor: StreamJoinExecutor, batches: list[Batch]) -> tuple[list[Row], int]:
    rows: list[Row] = []
    late = 0
    for side, offset, table in batches:
        output = executor.process(SourceBatch(table, LineRefs(offset, f"{side}.csv"), source=side))
        assert output.bad == [] and output.late == []
        late += output.late_dropped
        rows += output.table.to_pylist()
    return rows, late


def _finish(executor: StreamJoinExecutor) -> list[Row]:
    final = executor.finish()
    return [] if final is None else final.to_pylist()


def _sorted(rows: list[Row]) -> list[Row]:
    columns = ["id", "bid", "k", "bv"]
    return sorted(rows, key=lambda r: sort_key(r, columns))


@SETTINGS
@given(data=st.data(), kind=KINDS, where=st.sampled_from(WHERES), ooo=st.sampled_from([0, 3]))
def test_in_allowance_matches_the_one_shot_join(
    data: st.DataObject, kind: str, where: str, ooo: int
) -> None:
    a, b = data.draw(sides(ooo, only_in_allowance=True))
    batches = data.draw(interleaving(a, b))
    executor = _executor(kind, where, ooo)
    got, late = _feed(executor, batches)
    got += _finish(executor)
    assert late == 0
    expected = reference(kind, where, {"a": a, "b": b}, timestamps=False)
    assert _sorted(got) == _sorted(expected)


@SETTINGS
@given(
    data=st.data(),
    kind=KINDS,
    where=st.sampled_from(WHERES),
    ooo=st.sampled_from([0, 4]),
    timestamps=st.booleans(),
)
def test_with_late_rows_matches_the_join_of_the_rows_on_time(
    data: st.DataObject, kind: str, where: str, ooo: int, timestamps: bool
) -> None:
    a, b = data.draw(sides(ooo, only_in_allowance=False))
    batches = data.draw(interleaving(a, b))
    if timestamps:
        batches = _as_timestamps(batches)
    kept, expected_late = not_late(batches, ooo)
    executor = _executor(kind, where, ooo)
    got, late = _feed(executor, batches)
    got += _finish(executor)
    assert late == expected_late == executor.late_records
    assert _sorted(got) == _sorted(reference(kind, where, kept, timestamps))


@SETTINGS
@given(data=st.data(), kind=KINDS, ooo=st.sampled_from([0, 4]))
def test_a_restore_mid_stream_gives_the_same_output(
    data: st.DataObject, kind: str, ooo: int
) -> None:
    where = WHERES[1]
    a, b = data.draw(sides(ooo, only_in_allowance=False))
    batches = data.draw(interleaving(a, b))
    split = data.draw(st.integers(0, len(batches)))
    aborted = data.draw(st.integers(split, len(batches)))
    whole = _executor(kind, where, ooo)
    expected, expected_late = _feed(whole, batches)
    expected += _finish(whole)

    first = _executor(kind, where, ooo)
    got, late = _feed(first, batches[:split])
    state = first.snapshot()
    _feed(first, batches[split:aborted])  # an aborted transaction: its output is dropped
    first.restore(state)
    resumed = _executor(kind, where, ooo)  # a restart: a fresh executor and connection
    resumed.restore(first.snapshot())
    for executor in (first, resumed):
        more, more_late = _feed(executor, batches[split:])
        more += _finish(executor)
        assert _sorted(got + more) == _sorted(expected)
        assert late + more_late == expected_late


def test_rows_are_kept_no_longer_than_the_watermark_less_the_timeout() -> None:
    executor = _executor("LEFT", "", 0)
    a = [{"id": 1, "k": "x", "t": 0, "v": 1}, {"id": 2, "k": "y", "t": 1, "v": 1}]
    b = [{"id": 1001, "k": "x", "t": 3, "v": 1}, {"id": 1002, "k": "z", "t": 20, "v": 1}]
    batches = [
        ("a", 0, pa.Table.from_pylist(a, schema=_schema())),
        ("b", 0, pa.Table.from_pylist(b[:1], schema=_schema())),
    ]
    rows, _ = _feed(executor, batches)
    assert [(r["id"], r["bid"]) for r in rows] == [(1, 1001)]
    # b moves to 20, a is at 1: watermark 1, nothing older than 1 - 5 is dropped.
    rows, _ = _feed(executor, [("b", 1, pa.Table.from_pylist(b[1:], schema=_schema()))])
    assert rows == []
    more = [{"id": 3, "k": "q", "t": 30, "v": 1}]
    rows, _ = _feed(executor, [("a", 2, pa.Table.from_pylist(more, schema=_schema()))])
    # Watermark 20: a's rows before 15 leave; 2 never matched and comes out with NULLs.
    assert [(r["id"], r["bid"]) for r in rows] == [(2, None)]
    state = executor.snapshot()
    assert state["join_left"].column("id").to_pylist() == [3]
    assert state["join_right"].column("id").to_pylist() == [1002]
    assert [r["id"] for r in _finish(executor)] == [3]


def test_a_late_row_is_dead_lettered_under_the_dead_letter_strategy() -> None:
    sql = _sql("INNER", "")
    job = make_job(
        sql, props={**_props(0), "late.data.strategy": "dead_letter"}, sources=("a", "b")
    )
    executor = build_executor(plan_job(job), job)
    for side, t in (("a", 10), ("b", 10)):
        row = pa.Table.from_pylist([{"id": 1, "k": "x", "t": t, "v": 1}], schema=_schema())
        executor.process(SourceBatch(row, LineRefs(0, f"{side}.csv"), source=side))
    old = pa.Table.from_pylist([{"id": 2, "k": "x", "t": 9, "v": 1}], schema=_schema())
    output = executor.process(SourceBatch(old, LineRefs(0, "a.csv"), source="a"))
    assert [r.ref for r in output.late] == ["a.csv:2"]
    assert output.late_dropped == 0 and output.table.num_rows == 0


def test_rows_without_an_event_time_are_bad_records() -> None:
    executor = _executor("INNER", "", 0)
    rows = pa.Table.from_pylist(
        [{"id": 1, "k": "x", "t": None, "v": 1}, {"id": 2, "k": "x", "t": 4, "v": 1}],
        schema=_schema(),
    )
    output = executor.process(SourceBatch(rows, LineRefs(0, "a.csv"), source="a"))
    assert [(r.ref, r.message) for r in output.bad] == [("a.csv:2", "event time t is NULL")]


def test_a_row_whose_own_value_fails_is_the_bad_record_not_its_partner() -> None:
    job = make_job(
        "SELECT a.id, CAST(a.s AS INTEGER) AS n, b.id AS bid FROM a JOIN b ON a.k = b.k",
        props=_props(0),
        sources=("a", "b"),
    )
    executor = build_executor(plan_job(job), job)
    right = pa.Table.from_pylist([{"id": 1001, "k": "y", "t": 0}])
    executor.process(SourceBatch(right, LineRefs(0, "b.csv"), source="b"))
    left = pa.Table.from_pylist(
        [{"id": 1, "k": "x", "t": 1, "s": "7"}, {"id": 2, "k": "x", "t": 2, "s": "seven"}]
    )
    # Neither matches yet; the row that cannot be converted is bad all the same.
    output = executor.process(SourceBatch(left, LineRefs(0, "a.csv"), source="a"))
    assert [r.ref for r in output.bad] == ["a.csv:3"]
    assert output.table.num_rows == 0
    # The bad row is not kept: a later right row matches only the good one, and is no
    # bad record itself.
    more = pa.Table.from_pylist([{"id": 1002, "k": "x", "t": 3}])
    output = executor.process(SourceBatch(more, LineRefs(1, "b.csv"), source="b"))
    assert output.bad == []
    assert output.table.to_pylist() == [{"id": 1, "n": 7, "bid": 1002}]


def test_a_state_of_another_join_is_refused() -> None:
    executor = _executor("LEFT", "", 0)
    state = executor.snapshot()
    other = _executor("INNER", "", 0)
    with pytest.raises(StateIncompatibleError, match="LEFT"):
        other.restore(state)
    broken = {**state, "join_left": pa.table({"id": [1]})}
    with pytest.raises(StateIncompatibleError, match="missing __et"):
        executor.restore(broken)


def test_a_state_of_another_timeout_or_kind_is_refused_and_changes_nothing() -> None:
    row = pa.Table.from_pylist([{"id": 1, "k": "x", "t": 0, "v": 1}], schema=_schema())
    batches: list[Batch] = [("a", 0, row)]
    executor = _executor("LEFT", "", 0)
    _feed(executor, batches)
    job = make_job(
        _sql("LEFT", ""), props={**_props(0), "join.timeout": "10ms"}, sources=("a", "b")
    )
    other = build_executor(plan_job(job), job)
    with pytest.raises(StateIncompatibleError, match="5 in the state, 10 in the query"):
        other.restore(executor.snapshot())
    stateless = build_executor(plan_job(make_job("SELECT k FROM t")), make_job("SELECT k FROM t"))
    with pytest.raises(StateIncompatibleError, match="stateless query; this is a stream–stream"):
        executor.restore(stateless.snapshot())
    with pytest.raises(StateIncompatibleError):
        executor.restore({**executor.snapshot(), "join_right": pa.table({"id": [1]})})
    # Nothing changed: the kept row still matches and still expires unmatched otherwise.
    match = pa.Table.from_pylist([{"id": 1001, "k": "x", "t": 2, "v": 1}], schema=_schema())
    rows, _ = _feed(executor, [("b", 0, match)])
    assert [(r["id"], r["bid"]) for r in rows] == [(1, 1001)]


def test_an_in_app_table_cannot_be_a_stream_join() -> None:
    job = dataclasses.replace(
        make_job(_sql("INNER", ""), props=_props(0), sources=("a", "b")),
        kind=StatementKind.TABLE,
        sinks=(),
    )
    with pytest.raises(PlanError, match="in-app table out cannot be a stream–stream join"):
        plan_job(job)


@pytest.mark.parametrize(
    ("sql", "props", "message"),
    [
        (
            "SELECT a.id FROM a SEMI JOIN b ON a.k = b.k",
            _props(0),
            "SEMI JOIN is not supported: use [INNER | LEFT | RIGHT | FULL [OUTER]] JOIN",
        ),
        (
            "SELECT a.k, COUNT(*) AS n FROM a JOIN b ON a.k = b.k GROUP BY a.k",
            _props(0),
            "write the join to a sink",
        ),
        (
            "SELECT a.id, LAG(b.id) OVER (ROWS WINDOW BUFFER 3 ROWS) AS p FROM a JOIN b "
            "ON a.k = b.k",
            _props(0),
            "write the join to a sink",
        ),
        ("SELECT a.id FROM a JOIN b ON a.t < b.t", _props(0), "needs an equality of a key"),
        ("SELECT a.id FROM a JOIN b USING (k)", _props(0), "needs ON with an equality"),
        ("SELECT * FROM a JOIN b ON a.k = b.k", _props(0), "SELECT * over a join"),
        ("SELECT a.id FROM a", _props(0), "'join.timeout' is for a stream–stream join"),
        (
            "SELECT a.id FROM a JOIN b ON a.k = b.k JOIN c ON a.k = c.k",
            _props(0),
            "joins exactly two sources",
        ),
    ],
)
def test_joins_we_cannot_honour_are_refused(sql: str, props: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_job(make_job(sql, props=props, sources=("a", "b", "c")))
    assert message in str(caught.value)
