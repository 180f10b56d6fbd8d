"""`DuckDBAggregates` on its own: merging batches into the state table, taking groups
out, and the state's tables in snapshots."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.unit.engine.harness import plan
from velostream.engine.core import sandboxed_connection
from velostream.engine.duckdb_aggregates import STATE_TABLE, DuckDBAggregates
from velostream.errors import StateIncompatibleError
from velostream.sql.model import EmitMode
from velostream.sql.planner import ROW

SQL = "SELECT k, COUNT(*) AS n, SUM(v) AS s, COUNT(DISTINCT u) AS d FROM t GROUP BY k"
KEYS = ["__k0"]
ROWS = {
    "__k0": ["a", "b", "a", "a", "b", "c"],
    "__a1": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
    "__a2": ["x", "x", "y", "x", "z", None],
}


def pre(start: int, stop: int) -> pa.Table:
    """Rows `start:stop` as the pre-query gives them: key, arguments, row number."""
    columns = {name: values[start:stop] for name, values in ROWS.items()}
    return pa.table({**columns, ROW: pa.array(range(stop - start), pa.int64())})


def aggregates(emit: EmitMode) -> DuckDBAggregates:
    return DuckDBAggregates(plan(SQL, emit=emit), sandboxed_connection(1), KEYS)


FINAL = [
    {"k": "a", "n": 3, "s": 8, "d": 2},
    {"k": "b", "n": 2, "s": 7, "d": 2},
    {"k": "c", "n": 1, "s": 6, "d": 0},
]


@pytest.mark.parametrize("cuts", [[6], [1, 1, 1, 1, 1, 1], [2, 4], [5, 1]])
def test_emit_final_does_not_depend_on_where_batches_are_cut(cuts: list[int]) -> None:
    state = aggregates(EmitMode.FINAL)
    assert state.take_all("__k0") is None  # nothing merged yet
    start = 0
    for size in cuts:
        assert state.merge(pre(start, start + size)) is None  # EMIT FINAL emits later
        start += size
    out = state.take_all("__k0")
    assert out is not None and out.to_pylist() == FINAL
    assert state.con.sql(f"SELECT COUNT(*) FROM {STATE_TABLE}").fetchall() == [(0,)]


def test_emit_changes_gives_each_row_its_groups_running_values() -> None:
    state = aggregates(EmitMode.CHANGES)
    first = state.merge(pre(0, 3))
    second = state.merge(pre(3, 6))
    assert first is not None and second is not None
    assert [
        (r["k"], r["n"], r["s"], r["d"]) for r in [*first.to_pylist(), *second.to_pylist()]
    ] == [
        ("a", 1, 1, 1),
        ("b", 1, 2, 1),
        ("a", 2, 4, 2),
        ("a", 3, 8, 2),
        ("b", 2, 7, 2),
        ("c", 1, 6, 0),
    ]


def test_taken_groups_are_forgotten_with_their_distinct_values() -> None:
    state = aggregates(EmitMode.FINAL)
    assert state.take("__k0 = 'a'", "__k0").num_rows == 0  # no state yet
    state.merge(pre(0, 6))
    taken = state.take("__k0 = 'a'", "__k0")
    assert taken.to_pylist() == [FINAL[0]]
    # 'a' starts again: its values 'x' and 'y' are new to it once more
    state.merge(pre(0, 3))
    out = state.take_all("__k0")
    assert out is not None
    assert out.to_pylist()[0] == {"k": "a", "n": 2, "s": 4, "d": 2}


def test_dropped_groups_are_not_emitted() -> None:
    state = aggregates(EmitMode.FINAL)
    state.merge(pre(0, 6))
    state.drop("__k0 <> 'c'")
    out = state.take_all("__k0")
    assert out is not None and out.to_pylist() == [FINAL[2]]


def test_a_snapshot_restores_into_a_new_connection() -> None:
    state = aggregates(EmitMode.FINAL)
    assert state.snapshot() == {}
    state.merge(pre(0, 3))
    snapshot = {"has_state": state.has_state, **state.snapshot()}
    assert set(snapshot) == {"has_state", STATE_TABLE, "__dstate2"}
    again = aggregates(EmitMode.FINAL)
    again.check_state(snapshot)
    again.restore(snapshot)
    again.merge(pre(3, 6))
    out = again.take_all("__k0")
    assert out is not None and out.to_pylist() == FINAL


def test_restoring_a_snapshot_without_state_drops_the_tables() -> None:
    state = aggregates(EmitMode.FINAL)
    state.merge(pre(0, 3))
    state.restore({"has_state": False})
    assert not state.has_state
    assert state.take_all("__k0") is None
    tables = state.con.sql("SELECT table_name FROM duckdb_tables()").fetchall()
    assert tables == []


def test_a_state_table_with_other_partials_is_refused() -> None:
    state = aggregates(EmitMode.FINAL)
    state.merge(pre(0, 3))
    snapshot = {"has_state": True, **state.snapshot()}
    snapshot[STATE_TABLE] = snapshot[STATE_TABLE].drop_columns(["__p1_s"])
    with pytest.raises(StateIncompatibleError, match="missing __p1_s"):
        aggregates(EmitMode.FINAL).check_state(snapshot)
