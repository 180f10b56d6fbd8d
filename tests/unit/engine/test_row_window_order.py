"""`OVER (ROWS WINDOW BUFFER N ROWS ... ORDER BY x)` sorts the buffer by x.

Issue 13, item 10: LAG, LEAD, ROW_NUMBER and running SUM ignored the ORDER BY and used
arrival order. A value is now the one DuckDB's own window function gives over the
buffer's rows sorted by the ORDER BY, at the moment the value is final (see
`engine/row_window.py`). The differential test builds each row's frame in Python, as
that docstring defines it, and lets DuckDB evaluate the function over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import LineRefs, assert_rows_equal, make_job, run_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import build_executor
from velostream.sql.planner import plan_job

# Event times out of order: arrival 10, 30, 20, 50, 40, 60.
SHUFFLED = pa.table(
    {
        "id": pa.array(range(6), pa.int64()),
        "ts": pa.array([10, 30, 20, 50, 40, 60], pa.int64()),
        "v": pa.array([1, 3, 2, 5, 4, 6], pa.int64()),
    }
)


def over(n: int, order: str = "ts", partition: str = "") -> str:
    part = f" PARTITION BY {partition}" if partition else ""
    return f"OVER (ROWS WINDOW BUFFER {n} ROWS{part} ORDER BY {order})"


@pytest.mark.parametrize("batch_size", [1, 2, 6])
def test_values_come_from_the_buffer_sorted_by_order_by(batch_size: int) -> None:
    run = run_job(
        f"SELECT id, LAG(v) {over(3)} AS lag, ROW_NUMBER() {over(3)} AS rn, "
        f"SUM(v) {over(3)} AS s, MIN(ts) {over(3)} AS low FROM t",
        SHUFFLED,
        batch_size=batch_size,
    )
    assert run.column("id") == list(range(6)), "rows leave in arrival order"
    # ts 20 arrives after 30: its buffer sorted is 10, 20, 30, so its LAG is ts 10's v
    # and it is the 2nd row; ts 40 arrives when 10 and 30 have left: buffer 20, 40, 50.
    assert run.column("lag") == [None, 1, 1, 3, 2, 5]
    assert run.column("rn") == [1, 2, 2, 4, 4, 6]
    assert run.column("s") == [1, 4, 3, 10, 6, 15]
    assert run.column("low") == [10, 10, 10, 20, 20, 40]


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_lead_follows_the_order_by_among_the_rows_seen_when_it_is_final(batch_size: int) -> None:
    run = run_job(f"SELECT id, LEAD(v) {over(3)} AS nxt FROM t", SHUFFLED, batch_size=batch_size)
    assert run.column("id") == list(range(6)), "LEAD does not reorder the rows"
    # ts 10 is final when ts 30 arrives (10, 30: next is 30); ts 30 when ts 20 arrives
    # (10, 20, 30: none after it yet); ts 20 when ts 50 arrives (20, 30, 50: next is 30)
    assert run.column("nxt") == [3, None, 3, None, 5, None]


def test_in_order_input_gives_what_arrival_order_gives() -> None:
    table = SHUFFLED.sort_by("ts")
    calls = ["LAG(v)", "LEAD(v)", "ROW_NUMBER()", "SUM(v)", "COUNT(*)"]
    with_order = run_job(
        "SELECT " + ", ".join(f"{c} {over(2)} AS c{i}" for i, c in enumerate(calls)) + " FROM t",
        table,
        batch_size=2,
    )
    without = run_job(
        "SELECT "
        + ", ".join(f"{c} OVER (ROWS WINDOW BUFFER 2 ROWS) AS c{i}" for i, c in enumerate(calls))
        + " FROM t",
        table,
        batch_size=2,
    )
    assert with_order.rows == without.rows


def test_two_calls_with_the_same_text_keep_their_own_buffer() -> None:
    """The N-th ROWS WINDOW BUFFER clause belongs to the N-th window call of the text."""
    run = run_job(
        "SELECT id, 0 + SUM(v) OVER (ROWS WINDOW BUFFER 5 ROWS) AS s5, "
        "SUM(v) OVER (ROWS WINDOW BUFFER 2 ROWS) AS s2 FROM t",
        SHUFFLED,
    )
    assert run.column("s5") == [1, 4, 6, 11, 15, 20]
    assert run.column("s2") == [1, 4, 5, 7, 9, 10]


# --- differential: DuckDB over each row's frame ---------------------------------------

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ORDERS = ["o", "o DESC", "o NULLS FIRST", "o DESC NULLS FIRST", "o, v DESC", "v DESC, o"]
PARTITIONS = st.sampled_from(["a", "b", None])
FUNCS = ["lag", "lead", "row_number", "rank", "dense_rank", "sum", "avg", "min", "max", "count"]


@dataclass(frozen=True)
class Call:
    func: str
    n: int
    order: str
    partition: bool
    offset: int = 1
    default: bool = False
    arg: str = "v"

    def _args(self) -> str:
        if self.func in ("lag", "lead"):
            return f"{self.arg}, {self.offset}" + (", -1" if self.default else "")
        if self.func in ("row_number", "rank", "dense_rank"):
            return ""
        return self.arg

    def ours(self) -> str:
        part = " PARTITION BY k" if self.partition else ""
        return (
            f"{self.func.upper()}({self._args()}) OVER (ROWS WINDOW BUFFER {self.n} ROWS"
            f"{part} ORDER BY {self.order})"
        )

    def duckdb(self) -> str:
        """The function over one frame (a table `f` of rows with their arrival `rn`)."""
        if self.func in ("rank", "dense_rank"):
            return f"{self.func.upper()}() OVER (ORDER BY {self.order})"
        over = f"ORDER BY {self.order}, rn"
        if self.func in ("sum", "avg", "min", "max", "count"):
            over += " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
        return f"{self.func.upper()}({self._args()}) OVER ({over})"


@st.composite
def calls(draw: st.DrawFn) -> Call:
    func = draw(st.sampled_from(FUNCS))
    n = draw(st.integers(1, 5))
    orders = ORDERS[:4] if func in ("rank", "dense_rank") else ORDERS
    return Call(
        func=func,
        n=n,
        order=draw(st.sampled_from(orders)),
        partition=draw(st.booleans()),
        offset=draw(st.integers(1, n)) if func in ("lag", "lead") else 1,
        default=draw(st.booleans()),
        arg=draw(st.sampled_from(["v", "s"])) if func in ("lag", "lead", "min", "max") else "v",
    )


@st.composite
def shuffled(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    """Rows whose ORDER BY key `o` comes shuffled, in order, or in order but for one swap
    (with ties and NULLs, maybe): frames out of order, and in order (the shortcut)."""
    n = draw(st.integers(1, 14))
    keys: list[int | None] = list(range(n))
    disorder = draw(st.sampled_from(["shuffled", "sorted", "one swap"]))
    if disorder == "shuffled":
        keys = list(draw(st.permutations(range(n))))
    elif disorder == "one swap" and n > 1:
        at = draw(st.integers(0, n - 2))
        keys[at], keys[at + 1] = keys[at + 1], keys[at]
    if draw(st.booleans()):  # ties
        keys = [None if k is None else k // 2 for k in keys]
    if draw(st.booleans()):  # NULLs
        keys = [None if draw(st.booleans()) else k for k in keys]
    table = pa.table(
        {
            "rn": pa.array(range(n), pa.int64()),
            "k": pa.array(draw(st.lists(PARTITIONS, min_size=n, max_size=n)), pa.string()),
            "o": pa.array(keys, pa.int64()),
            "v": pa.array(
                draw(st.lists(st.one_of(st.none(), st.integers(-9, 9)), min_size=n, max_size=n)),
                pa.int64(),
            ),
            "s": pa.array(
                draw(st.lists(st.sampled_from(["x", "y", "", None]), min_size=n, max_size=n)),
                pa.string(),
            ),
        }
    )
    sizes = draw(st.lists(st.integers(1, n), min_size=1, max_size=4))
    return table, sizes


def expected_values(con: duckdb.DuckDBPyConnection, table: pa.Table, call: Call) -> dict[int, Any]:
    """Each row's value by the semantics of `engine/row_window.py`, from DuckDB."""
    rows = table.to_pylist()
    partitions: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        partitions.setdefault(row["k"] if call.partition else 0, []).append(row)
    out: dict[int, Any] = {}
    for members in partitions.values():
        for i, row in enumerate(members):
            if call.func == "lead":  # final when `offset` more rows came, or at the end
                last = min(i + call.offset, len(members) - 1)
                frame = members[max(min(i, last - call.n + 1), 0) : last + 1]
            else:  # final when it arrives: the last n rows, itself included (LAG(x, n):
                # and the n-th row before it, as without ORDER BY)
                back = max(call.n - 1, call.offset if call.func == "lag" else 0)
                frame = members[max(i - back, 0) : i + 1]
            f = pa.Table.from_pylist(frame, schema=table.schema)
            con.register("f", f)
            found = con.execute(
                f"SELECT w FROM (SELECT rn, {call.duckdb()} AS w FROM f) WHERE rn = ?",
                [row["rn"]],
            ).fetchall()
            con.unregister("f")
            result = found[0][0]
            if call.func == "row_number":  # the rows that left the buffer come first
                result += i + 1 - len(frame)
            out[row["rn"]] = result
    return out


@SETTINGS
@given(case=shuffled(), chosen=st.lists(calls(), min_size=1, max_size=3))
def test_row_windows_with_order_by_match_duckdb_over_the_sorted_buffer(
    case: tuple[pa.Table, list[int]], chosen: list[Call]
) -> None:
    table, sizes = case
    query = "SELECT rn, " + ", ".join(f"{c.ours()} AS w{i}" for i, c in enumerate(chosen))
    query += " FROM t"
    run = run_job(query, table, batch_size=sizes)
    assert run.bad == []
    con = duckdb.connect()
    try:
        values = [expected_values(con, table, c) for c in chosen]
    finally:
        con.close()
    expected = [
        {"rn": rn, **{f"w{i}": v[rn] for i, v in enumerate(values)}} for rn in range(len(table))
    ]
    got = sorted(run.rows, key=lambda r: r["rn"])
    assert_rows_equal(got, expected, query)
    arrival = [r["rn"] for r in run.rows]
    leads = [c for c in chosen if c.func == "lead"]
    if not any(c.partition for c in leads):
        assert arrival == list(range(len(table))), "arrival order"
    # a row waiting for its LEAD holds back only the rows of its partition
    for key in set(table.column("k").to_pylist()):
        mine = [rn for rn in arrival if table.column("k")[rn].as_py() == key]
        assert mine == sorted(mine), "each partition's rows in arrival order"


def test_order_by_timestamps_and_text_descending() -> None:
    table = pa.table(
        {
            "id": pa.array(range(5), pa.int64()),
            "seen": pa.array([3_000, 1_000, 2_000, 5_000, 4_000], pa.timestamp("ms")),
            "name": ["c", "a", None, "e", "d"],
        }
    )
    run = run_job(
        f"SELECT id, LAG(id) {over(4, 'seen DESC')} AS after_me, "
        f"LAG(id) {over(4, 'name DESC NULLS FIRST')} AS by_name FROM t",
        table,
        batch_size=2,
    )
    # id 2 (2 s) sorts after 0 (3 s) and before 1 (1 s) in time descending order
    assert run.column("after_me") == [None, 0, 0, None, 3]
    # by name, descending, NULL first: (2: NULL), e, d, c, a
    assert run.column("by_name") == [None, 0, None, 2, 3]


def _feed(executor: Any, table: pa.Table, start: int, stop: int) -> list[dict[str, Any]]:
    rows = []
    for offset in range(start, stop):
        batch = SourceBatch(table.slice(offset, 1), LineRefs(offset))
        rows += executor.process(batch).table.to_pylist()
    return rows


def test_a_restored_buffer_goes_on_as_if_never_stopped() -> None:
    sql = (
        f"SELECT id, LEAD(v) {over(3)} AS nxt, ROW_NUMBER() {over(2)} AS rn, "
        f"LAG(v, 2) {over(3)} AS lag2, RANK() {over(3, 'v DESC')} AS r FROM t"
    )
    job = make_job(sql)
    straight = run_job(sql, SHUFFLED, batch_size=1).rows
    first = build_executor(plan_job(job), job)
    rows = _feed(first, SHUFFLED, 0, 3)
    state = first.snapshot()
    second = build_executor(plan_job(job), job)
    second.restore(state)
    rows += _feed(second, SHUFFLED, 3, 6)
    rows += (second.finish() or pa.table({})).to_pylist()
    assert rows == straight


def test_a_buffer_kept_before_row_number_kept_its_sorted_value_is_restored() -> None:
    """A checkpoint from before: a ROW_NUMBER with ORDER BY kept only its count."""
    sql = f"SELECT id, ROW_NUMBER() {over(3)} AS rn FROM t"
    job = make_job(sql)
    first = build_executor(plan_job(job), job)
    _feed(first, SHUFFLED, 0, 3)
    state = first.snapshot()
    state["history"] = state["history"].drop_columns(["__v0"])
    second = build_executor(plan_job(job), job)
    second.restore(state)
    assert [r["rn"] for r in _feed(second, SHUFFLED, 3, 6)] == [4, 4, 6]
