"""Differential tests of sliding and session windows against DuckDB's one-shot answer.

Rows with NULLs, duplicates and event times out of order (within and beyond the allowed
lateness) are cut into batches from one row to the whole input. Sliding windows are
computed by DuckDB alone: each row copied into its windows with `generate_series`, the
watermark before each row as a window function over the arrival order, a window left
out of a row when it had closed. Sessions: `session_model` says, row by row, which rows
were late and which rows form each session; DuckDB then aggregates each session's rows
in one GROUP BY. Emitted rows and late counts must agree.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.engine.harness import assert_rows_equal, reference, run_job, sort_key
from tests.unit.engine.session_model import SessionModel, sessions
from tests.unit.engine.test_differential import SETTINGS, batch_sizes, tables
from velostream.sql.model import EmitMode

AGGREGATES = (
    "COUNT(*) AS c, SUM(i) AS si, AVG(f) AS af, MIN(s) AS ms, COUNT(DISTINCT s) AS ds, "
    "STDDEV(f) AS sd, MAX(f) AS mf"
)
# The same in DuckDB, where the engine's FIRST_VALUE/LAST_VALUE are by arrival order.
ORDERED = (
    "FIRST_VALUE(i) AS fi, LAST_VALUE(s) AS ls",
    "FIRST(i ORDER BY rn) AS fi, LAST(s ORDER BY rn) AS ls",
)


@st.composite
def timed_cases(draw: st.DrawFn) -> tuple[pa.Table, list[int], int, int]:
    """A table with `et` (epoch ms: rising, with repeats and rows far out of order), its
    batch sizes, a window size or gap, and the allowed out-of-orderness."""
    table = draw(tables(max_rows=20))
    n = table.num_rows
    size = draw(st.sampled_from([1_000, 4_000, 60_000, 300_000]))
    # Some steps back by less than a window (or gap): rows between on time and late.
    steps = draw(
        st.lists(
            st.one_of(
                st.just(0),
                st.integers(-90_000, 60_000),
                st.integers(0, 3_000),
                st.integers(-size, size // 4),
            ),
            min_size=n,
            max_size=n,
        )
    )
    times, now = [], 1_700_000_000_000
    for step in steps:
        now = max(now + step, 1_600_000_000_000)
        times.append(now)
    table = table.append_column("et", pa.array(times, pa.int64()))
    out_of_order = draw(st.sampled_from([0, 5_000, 60_000]))
    return table, draw(batch_sizes(table)), size, out_of_order


def _props(out_of_order: int) -> dict[str, str]:
    return {"watermark.max_out_of_orderness": f"{out_of_order}ms"}


# --- sliding windows -----------------------------------------------------------------


def _sliding_reference(size: int, advance: int, out_of_order: int, select: str, tail: str) -> str:
    count = size // advance
    marked = (
        f"SELECT *, MAX(et) OVER (ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND 1 "
        f"PRECEDING) - {out_of_order} AS wm FROM t"
    )
    copies = (
        f"SELECT *, et // {advance} * {advance} - UNNEST(generate_series(0, {count - 1})) "
        f"* {advance} AS ws FROM ({marked})"
    )
    return f"SELECT {select} FROM ({copies}) WHERE wm IS NULL OR ws + {size} > wm {tail}"


@SETTINGS
@given(case=timed_cases(), steps=st.sampled_from([1, 2, 3, 4]))
def test_sliding_window_final_matches_duckdb(
    case: tuple[pa.Table, list[int], int, int], steps: int
) -> None:
    table, sizes, size, out_of_order = case
    advance = size // steps if size % steps == 0 else size
    query = (
        f"SELECT k, _window_start AS ws, TUMBLE_END(et) AS we, {AGGREGATES}, {ORDERED[0]} "
        f"FROM t GROUP BY k WINDOW SLIDING(et, {size}ms, {advance}ms)"
    )
    run = run_job(query, table, batch_size=sizes, props=_props(out_of_order))
    expected = reference(
        _sliding_reference(
            size,
            advance,
            out_of_order,
            f"k, ws, ws + {size} AS we, {AGGREGATES}, {ORDERED[1]}",
            "GROUP BY k, ws ORDER BY ws, k",
        ),
        table,
    )
    assert_rows_equal(run.rows, expected, query)
    kept = reference(
        _sliding_reference(size, advance, out_of_order, "COUNT(DISTINCT rn) AS n", ""), table
    )
    assert run.executor is not None
    assert run.executor.late_records == table.num_rows - kept[0]["n"]  # type: ignore[attr-defined]


@SETTINGS
@given(case=timed_cases(), steps=st.sampled_from([1, 2, 4]))
def test_sliding_window_emit_changes_matches_duckdb(
    case: tuple[pa.Table, list[int], int, int], steps: int
) -> None:
    table, sizes, size, out_of_order = case
    advance = size // steps
    query = (
        "SELECT k, _window_start AS ws, COUNT(*) AS c, SUM(f) AS sf, MAX(i) AS mi, "
        f"COUNT(DISTINCT s) AS ds FROM t GROUP BY k WINDOW SLIDING(et, {size}ms, {advance}ms)"
    )
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES, props=_props(out_of_order))
    w = "OVER (PARTITION BY k, ws ORDER BY rn ROWS UNBOUNDED PRECEDING)"
    expected = reference(
        _sliding_reference(
            size,
            advance,
            out_of_order,
            f"k, ws, COUNT(*) {w} AS c, SUM(f) {w} AS sf, MAX(i) {w} AS mi, "
            f"COUNT(DISTINCT s) {w} AS ds",
            "ORDER BY rn, ws",
        ),
        table,
    )
    assert_rows_equal(run.rows, expected, query)


# --- session windows -----------------------------------------------------------------


def _members(table: pa.Table, groups: list[tuple[int, list[int]]]) -> pa.Table:
    """Each group's rows of `table` (by `rn`), with the group as `g`: for one GROUP BY."""
    rows = table.to_pylist()
    picked = [rows[row] for _, members in groups for row in members]
    out = pa.Table.from_pylist(picked, schema=table.schema)
    ids = [group for group, members in groups for _ in members]
    return out.append_column("g", pa.array(ids, pa.int64()))


def _model(table: pa.Table, gap: int, out_of_order: int) -> SessionModel:
    columns = (table.column(name).to_pylist() for name in ("rn", "k", "et"))
    return sessions(list(zip(*columns, strict=True)), gap, out_of_order)


@SETTINGS
@given(case=timed_cases(), having=st.booleans())
def test_session_window_final_matches_the_model_and_duckdb(
    case: tuple[pa.Table, list[int], int, int], having: bool
) -> None:
    table, sizes, gap, out_of_order = case
    having_sql = " HAVING COUNT(*) > 1" if having else ""
    query = (
        f"SELECT k, _window_start AS ws, TUMBLE_END(et) AS we, {AGGREGATES}, {ORDERED[0]} "
        f"FROM t GROUP BY k WINDOW SESSION(et, {gap}ms){having_sql}"
    )
    run = run_job(query, table, batch_size=sizes, props=_props(out_of_order))
    model = _model(table, gap, out_of_order)
    members = _members(table, list(enumerate(model.sessions)))
    expected = reference(
        f"SELECT k, MIN(et) AS ws, MAX(et) + {gap} AS we, {AGGREGATES}, {ORDERED[1]} "
        f"FROM t GROUP BY g, k{having_sql}",
        members,
    )
    order = ["ws", "k", "we"]
    assert_rows_equal(
        sorted(run.rows, key=lambda r: sort_key(r, order)),
        sorted(expected, key=lambda r: sort_key(r, order)),
        query,
    )
    assert run.executor is not None
    assert run.executor.late_records == len(model.late)  # type: ignore[attr-defined]


@SETTINGS
@given(case=timed_cases())
def test_session_window_emit_changes_matches_the_model_and_duckdb(
    case: tuple[pa.Table, list[int], int, int],
) -> None:
    table, sizes, gap, out_of_order = case
    query = (
        "SELECT k, _window_start AS ws, _window_end AS we, COUNT(*) AS c, SUM(f) AS sf, "
        f"MAX(i) AS mi, COUNT(DISTINCT s) AS ds, {ORDERED[0]} "
        f"FROM t GROUP BY k WINDOW SESSION(et, {gap}ms)"
    )
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES, props=_props(out_of_order))
    model = _model(table, gap, out_of_order)
    members = _members(table, model.running)
    expected = reference(
        f"SELECT k, MIN(et) AS ws, MAX(et) + {gap} AS we, COUNT(*) AS c, SUM(f) AS sf, "
        f"MAX(i) AS mi, COUNT(DISTINCT s) AS ds, {ORDERED[1]} FROM t GROUP BY g, k ORDER BY g",
        members,
    )
    assert_rows_equal(run.rows, expected, query)
    assert run.executor is not None
    assert run.executor.late_records == len(model.late)  # type: ignore[attr-defined]
