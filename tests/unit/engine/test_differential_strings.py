"""Differential tests for LISTAGG/STRING_AGG and the variance family over row windows.

Same style as `test_differential`: hypothesis draws rows (NULLs, duplicates, unicode)
and how the input is cut into batches (one row per batch up to the whole input); the
answer must equal DuckDB's one-shot answer. LISTAGG concatenates in arrival order, so
the references order by `rn` explicitly. Its bound (`listagg.max.bytes`) is checked
against a plain Python model of the rule, wherever the batches are cut.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.engine.harness import assert_rows_equal, reference, run_job, sort_key
from tests.unit.engine.test_differential import (
    SETTINGS,
    _window_reference,
    buffer,
    cases,
    event_cases,
    frame,
)
from velostream.errors import StateIncompatibleError
from velostream.sql.model import EmitMode

SEPARATORS = [",", "; ", "", "'|'", "→"]
ARGS = ["s", "k", "i", "f"]
GROUPINGS = ["k", "s", ""]
FILTERS = ["", " WHERE i IS NOT NULL OR f > 0"]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _calls(args: list[str], seps: list[str]) -> tuple[str, str, str]:
    """(ours, DuckDB's running window, DuckDB's grouped) SELECT items."""
    ours, running, grouped = [], [], []
    for n, (arg, sep) in enumerate(zip(args, seps, strict=True)):
        name = "LISTAGG" if n % 2 else "STRING_AGG"
        x = f"CAST({arg} AS VARCHAR)"
        ours.append(f"{name}({arg}, {_quoted(sep)}) AS l{n}")
        running.append(f"STRING_AGG({x}, {_quoted(sep)} ORDER BY rn) OVER w AS l{n}")
        grouped.append(f"STRING_AGG({x}, {_quoted(sep)} ORDER BY rn) AS l{n}")
    return ", ".join(ours), ", ".join(running), ", ".join(grouped)


ARG_LISTS = st.lists(st.sampled_from(ARGS), min_size=1, max_size=3)


@SETTINGS
@given(
    case=cases(),
    grouping=st.sampled_from(GROUPINGS),
    args=ARG_LISTS,
    seps=st.lists(st.sampled_from(SEPARATORS), min_size=3, max_size=3),
    where=st.sampled_from(FILTERS),
)
def test_listagg_emit_changes_matches_running_string_agg(
    case: tuple[pa.Table, list[int]], grouping: str, args: list[str], seps: list[str], where: str
) -> None:
    table, sizes = case
    ours, running, _ = _calls(args, seps[: len(args)])
    keys = f"{grouping}, " if grouping else ""
    group_by = f" GROUP BY {grouping}" if grouping else ""
    query = f"SELECT {keys}{ours}, COUNT(*) AS c FROM t{where}{group_by}"
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES)
    assert run.bad == []
    partition = f"PARTITION BY {grouping} " if grouping else ""
    expected = reference(
        f"SELECT {keys}{running}, COUNT(*) OVER w AS c FROM t{where} "
        f"WINDOW w AS ({partition}ORDER BY rn ROWS UNBOUNDED PRECEDING) ORDER BY rn",
        table,
    )
    assert_rows_equal(run.rows, expected, query)


@SETTINGS
@given(
    case=cases(),
    grouping=st.sampled_from(GROUPINGS),
    args=ARG_LISTS,
    seps=st.lists(st.sampled_from(SEPARATORS), min_size=3, max_size=3),
    where=st.sampled_from(FILTERS),
)
def test_listagg_emit_final_matches_grouped_string_agg(
    case: tuple[pa.Table, list[int]], grouping: str, args: list[str], seps: list[str], where: str
) -> None:
    table, sizes = case
    ours, _, grouped = _calls(args, seps[: len(args)])
    keys = f"{grouping}, " if grouping else ""
    group_by = f" GROUP BY {grouping}" if grouping else ""
    query = f"SELECT {keys}{ours} FROM t{where}{group_by}"
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.FINAL)
    expected = reference(f"SELECT {keys}{grouped} FROM t{where}{group_by}", table)
    order = [grouping] if grouping else []
    assert_rows_equal(
        sorted(run.rows, key=lambda r: sort_key(r, order)),
        sorted(expected, key=lambda r: sort_key(r, order)),
        query,
    )


@SETTINGS
@given(case=event_cases(), sep=st.sampled_from(SEPARATORS))
def test_listagg_in_tumbling_windows_matches_duckdb(
    case: tuple[pa.Table, list[int], int, int], sep: str
) -> None:
    table, sizes, size, out_of_order = case
    aggregates = f"LISTAGG(s, {_quoted(sep)}) AS l, COUNT(*) AS c"
    query = (
        f"SELECT k, _window_start AS ws, {aggregates} FROM t GROUP BY k "
        f"WINDOW TUMBLING(et, {size}ms)"
    )
    props = {"watermark.max_out_of_orderness": f"{out_of_order}ms"}
    run = run_job(query, table, batch_size=sizes, props=props)
    theirs = f"STRING_AGG(s, {_quoted(sep)} ORDER BY rn) AS l, COUNT(*) AS c"
    expected = reference(
        _window_reference(size, out_of_order, f"k, ws, {theirs}", "GROUP BY k, ws ORDER BY ws, k"),
        table,
    )
    assert_rows_equal(run.rows, expected, query)


# --- the bound -------------------------------------------------------------------------


def _model(table: pa.Table, limit: int, sep: str) -> tuple[list[dict[str, Any]], list[int]]:
    """LISTAGG(s, sep) ... GROUP BY k, EMIT CHANGES, under `limit`: (rows, refused rn).

    A group's attempted length counts every non-NULL value with a separator; a row is
    refused once that length (less one separator) is over the limit.
    """
    attempted: dict[Any, int] = {}
    taken: dict[Any, list[str]] = {}
    rows, refused = [], []
    width = len(sep.encode())
    for row in table.to_pylist():
        key, value = row["k"], row["s"]
        if value is not None:
            attempted[key] = attempted.get(key, 0) + len(value.encode()) + width
            if attempted[key] - width > limit:
                refused.append(row["rn"])
                continue
            taken.setdefault(key, []).append(value)
        values = taken.get(key)
        rows.append({"k": key, "l": None if values is None else sep.join(values)})
    return rows, refused


@SETTINGS
@given(case=cases(), limit=st.integers(1, 12), sep=st.sampled_from([",", "; ", ""]))
def test_listagg_bound_refuses_rows_wherever_batches_are_cut(
    case: tuple[pa.Table, list[int]], limit: int, sep: str
) -> None:
    table, sizes = case
    query = f"SELECT k, LISTAGG(s, {_quoted(sep)}) AS l FROM t GROUP BY k"
    props = {"listagg.max.bytes": str(limit)}
    run = run_job(query, table, batch_size=sizes, emit=EmitMode.CHANGES, props=props)
    rows, refused = _model(table, limit, sep)
    assert_rows_equal(run.rows, rows, query)
    # LineRefs: input row rn is line rn + 2 of the pretend file.
    assert [b.ref for b in run.bad] == [f"t.csv:{rn + 2}" for rn in refused]
    assert all("would exceed" in b.message and b.kind == "ResourceError" for b in run.bad)
    final = run_job(query, table, batch_size=sizes, emit=EmitMode.FINAL, props=props)
    last = {r["k"]: r["l"] for r in rows}
    assert {r["k"]: r["l"] for r in final.rows} == last
    assert [b.ref for b in final.bad] == [b.ref for b in run.bad]


def test_listagg_bound_survives_a_snapshot() -> None:
    table = pa.table(
        {"rn": [0, 1, 2, 3], "k": ["a", "a", "a", "a"], "s": ["abc", "defgh", "i", None]}
    )
    query = "SELECT k, LISTAGG(s, ',') AS l FROM t GROUP BY k"
    props = {"listagg.max.bytes": "6"}
    first = run_job(query, table.slice(0, 2), emit=EmitMode.CHANGES, props=props)
    assert first.executor is not None
    state = first.executor.snapshot()
    second = run_job(query, table.slice(0, 0), emit=EmitMode.CHANGES, props=props)
    assert second.executor is not None
    executor = second.executor
    executor.check_state(state)
    executor.restore(state)
    from tests.unit.engine.harness import LineRefs
    from velostream.datasource.traits import SourceBatch

    out = executor.process(SourceBatch(table.slice(2), LineRefs(2)))
    # "defgh" went over 6 bytes: "i" is refused too (the group is full), NULL is not.
    assert [b.ref for b in first.bad] == ["t.csv:3"]
    assert [b.ref for b in out.bad] == ["t.csv:4"]
    assert out.table.to_pylist() == [{"k": "a", "l": "abc"}]


def test_a_state_of_another_separator_is_refused() -> None:
    table = pa.table({"k": ["a", "a"], "s": ["x", "y"]})
    first = run_job("SELECT k, GROUP_CONCAT(s) AS g FROM t GROUP BY k", table, emit=EmitMode.FINAL)
    assert first.rows == [{"k": "a", "g": "x,y"}] and first.executor is not None
    state = first.executor.snapshot()
    other = run_job(
        "SELECT k, LISTAGG(s, ';') AS g FROM t GROUP BY k", table.slice(0, 0), emit=EmitMode.FINAL
    )
    assert other.executor is not None
    with pytest.raises(StateIncompatibleError, match=r"\[LISTAGG\(s, ';'\)\] in the query"):
        other.executor.check_state(state)


# --- STDDEV / VARIANCE over row windows -------------------------------------------------

VARIANCE_CALLS: list[tuple[str, str]] = [
    (f"STDDEV(f) {buffer(3, 'k')}", f"STDDEV_SAMP(f) {frame(3, 'k')}"),
    (f"STDDEV_SAMP(i) {buffer(4)}", f"STDDEV_SAMP(i) {frame(4)}"),
    (f"STDDEV_POP(f) {buffer(2, 'k')}", f"STDDEV_POP(f) {frame(2, 'k')}"),
    (f"VARIANCE(f) {buffer(5)}", f"VAR_SAMP(f) {frame(5)}"),
    (f"VAR_SAMP(i) {buffer(3, 's')}", f"VAR_SAMP(i) {frame(3, 's')}"),
    (f"VAR_POP(f) {buffer(1, 'k')}", f"VAR_POP(f) {frame(1, 'k')}"),
    (f"VAR_POP(i) {buffer(4, 'k')}", f"VAR_POP(i) {frame(4, 'k')}"),
]


@SETTINGS
@given(
    case=cases(),
    calls=st.lists(st.sampled_from(VARIANCE_CALLS), min_size=1, max_size=3, unique=True),
    where=st.sampled_from(["", " WHERE i IS NOT NULL", " WHERE k <> 'a' OR f > 0"]),
)
def test_variance_over_row_windows_matches_duckdb_frames(
    case: tuple[pa.Table, list[int]], calls: list[tuple[str, str]], where: str
) -> None:
    table, sizes = case
    ours = ", ".join(f"{c[0]} AS w{n}" for n, c in enumerate(calls))
    theirs = ", ".join(f"{c[1]} AS w{n}" for n, c in enumerate(calls))
    query = f"SELECT rn, k, {ours} FROM t{where}"
    run = run_job(query, table, batch_size=sizes)
    expected = reference(f"SELECT rn, k, {theirs} FROM t{where} ORDER BY rn", table)
    assert_rows_equal(run.rows, expected, query)


VARIANCE_AGGREGATES = ["STDDEV(f)", "STDDEV_SAMP(i)", "STDDEV_POP(f)", "VARIANCE(f)"]
VARIANCE_AGGREGATES += ["VAR_SAMP(i)", "VAR_POP(f)", "VAR_POP(i)"]


@SETTINGS
@given(case=cases(), emit=st.sampled_from([EmitMode.CHANGES, EmitMode.FINAL]))
def test_variance_family_in_group_by_matches_duckdb(
    case: tuple[pa.Table, list[int]], emit: EmitMode
) -> None:
    table, sizes = case
    items = ", ".join(f"{a} AS v{n}" for n, a in enumerate(VARIANCE_AGGREGATES))
    query = f"SELECT k, {items} FROM t GROUP BY k"
    run = run_job(query, table, batch_size=sizes, emit=emit)
    if emit == EmitMode.CHANGES:
        window = "OVER (PARTITION BY k ORDER BY rn ROWS UNBOUNDED PRECEDING)"
        over = ", ".join(f"{a} {window} AS v{n}" for n, a in enumerate(VARIANCE_AGGREGATES))
        expected = reference(f"SELECT k, {over} FROM t ORDER BY rn", table)
        assert_rows_equal(run.rows, expected, query)
    else:
        expected = reference(query, table)
        assert_rows_equal(
            sorted(run.rows, key=lambda r: sort_key(r, ["k"])),
            sorted(expected, key=lambda r: sort_key(r, ["k"])),
            query,
        )
