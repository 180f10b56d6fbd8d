"""`restore` refuses a state kept by another query (an upgrade's checkpoint) with a clear
error naming what differs, and changes nothing; a state that fits is restored."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from tests.unit.engine.harness import LineRefs, make_job
from velostream.datasource.traits import SourceBatch
from velostream.engine import Executor, build_executor
from velostream.errors import ConfigurationError, ErrorKind, StateIncompatibleError
from velostream.sql.model import EmitMode
from velostream.sql.planner import plan_job

EVENTS = pa.table(
    {
        "k": ["a", "b", "a", "c", "b", "a"],
        "j": ["x", "y", "x", "x", "y", "y"],
        "v": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "et": pa.array([0, 5, 61, 62, 130, 190], pa.int64()),
    }
)
CHANGES, FINAL = EmitMode.CHANGES, EmitMode.FINAL
Query = tuple[str, EmitMode | None]

COUNTS: Query = ("SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k", CHANGES)
GROUPED: Query = ("SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k", FINAL)
ON_DUCKDB: Query = ("SELECT k, STDDEV(v) AS d FROM t GROUP BY k", CHANGES)  # not on numpy
WINDOWED: Query = ("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(et, 60ms)", None)
SESSIONS: Query = (
    "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k WINDOW SESSION(et, 60ms)",
    None,
)
SLIDING: Query = ("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SLIDING(et, 60ms, 30ms)", None)
ROWS: Query = ("SELECT v, LAG(v) OVER (ROWS WINDOW BUFFER 2 ROWS PARTITION BY k) AS p FROM t", None)
PLAIN: Query = ("SELECT k, v FROM t WHERE v > 1", None)

# (the state's query, the restoring query, what the message names)
REFUSED: list[Any] = [
    pytest.param(COUNTS, ("SELECT k, COUNT(*) AS n FROM t GROUP BY k", CHANGES),
                 ["aggregates", "[COUNT(*), SUM(v)] in the state", "[COUNT(*)] in the query"],
                 id="running-fewer-aggregates"),
    pytest.param(COUNTS, ("SELECT k, COUNT(*) AS n, SUM(v) AS s, MAX(v) AS m FROM t GROUP BY k",
                          CHANGES), ["aggregates", "MAX(v)"], id="running-added-aggregate"),
    pytest.param(COUNTS, ("SELECT k, j, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k, j", CHANGES),
                 ["GROUP BY", "[k] in the state", "[k, j] in the query"], id="running-more-keys"),
    pytest.param(COUNTS, ("SELECT j, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY j", CHANGES),
                 ["GROUP BY", "[k] in the state", "[j] in the query"], id="running-other-key"),
    pytest.param(COUNTS, GROUPED, ["EMIT", "CHANGES in the state", "FINAL in the query"],
                 id="changes-to-final"),
    pytest.param(GROUPED, ("SELECT k, COUNT(*) AS n, AVG(v) AS s FROM t GROUP BY k", FINAL),
                 ["aggregates", "AVG(v)"], id="grouped-other-aggregate"),
    pytest.param(ON_DUCKDB, ("SELECT k, STDDEV(v) AS d FROM t GROUP BY k, j", CHANGES),
                 ["GROUP BY", "[k, j]"], id="duckdb-other-keys"),
    pytest.param(WINDOWED, (WINDOWED[0].replace("60ms", "30ms"), None),
                 ["window", "TUMBLING(et, 60ms) in the state", "TUMBLING(et, 30ms) in the query"],
                 id="window-size"),
    pytest.param(WINDOWED, (WINDOWED[0].replace("COUNT(*) AS n", "MIN(v) AS n"), None),
                 ["aggregates", "MIN(v)"], id="window-other-aggregate"),
    pytest.param(SESSIONS, (SESSIONS[0].replace("60ms", "30ms"), None),
                 ["window", "SESSION(et, 60ms) in the state", "SESSION(et, 30ms) in the query"],
                 id="session-gap"),
    pytest.param(WINDOWED, (WINDOWED[0].replace("TUMBLING", "SESSION"), None),
                 ["window", "TUMBLING(et, 60ms) in the state", "SESSION(et, 60ms) in the query"],
                 id="tumbling-to-session"),
    pytest.param(SLIDING, (SLIDING[0].replace("30ms", "20ms"), None),
                 ["window", "SLIDING(et, 60ms, 30ms) in the state", "SLIDING(et, 60ms, 20ms)"],
                 id="sliding-advance"),
    pytest.param(SESSIONS, (SESSIONS[0].replace("SUM(v)", "MAX(v)"), None),
                 ["aggregates", "MAX(v)"], id="session-other-aggregate"),
    pytest.param(ROWS, (ROWS[0].replace("LAG", "LEAD"), None),
                 ["window functions", "LAG(v, 1)", "LEAD(v, 1)"], id="rows-other-call"),
    pytest.param(ROWS, (ROWS[0].replace("BUFFER 2", "BUFFER 5"), None),
                 ["window functions", "BUFFER 2 ROWS", "BUFFER 5 ROWS"], id="rows-buffer"),
    pytest.param(COUNTS, PLAIN, ["kept by a GROUP BY query; this is a stateless query"],
                 id="aggregate-to-stateless"),
    pytest.param(ROWS, COUNTS, ["kept by a row-window query; this is a GROUP BY query"],
                 id="rows-to-aggregate"),
    pytest.param(PLAIN, ROWS, ["kept by a stateless query; this is a row-window query"],
                 id="stateless-to-rows"),
]  # fmt: skip

# The same, from a checkpoint written before states kept their shape: what the tables
# show is still checked (other keys of the same count, or a window's size, cannot be).
REFUSED_WITHOUT_SHAPE: list[Any] = [
    pytest.param(COUNTS, ("SELECT k, COUNT(*) AS n FROM t GROUP BY k", CHANGES),
                 ["running aggregates", "not in the query: n1, s1"], id="running-fewer-aggregates"),
    pytest.param(COUNTS, ("SELECT k, j, COUNT(*) AS n, SUM(v) AS s FROM t GROUP BY k, j", CHANGES),
                 ["GROUP BY keys", "missing __k1"], id="running-other-keys"),
    pytest.param(COUNTS, GROUPED, ["EMIT CHANGES"], id="changes-to-final"),
    pytest.param(GROUPED, ("SELECT k, COUNT(*) AS n, AVG(v) AS s FROM t GROUP BY k", FINAL),
                 ["grouped aggregates", "missing __p1_n"], id="grouped-other-aggregate"),
    pytest.param(ON_DUCKDB, ("SELECT k, STDDEV(v) AS d FROM t GROUP BY k, j", CHANGES),
                 ["GROUP BY table", "missing __k1"], id="duckdb-other-keys"),
    pytest.param(WINDOWED, (WINDOWED[0].replace("COUNT(*) AS n", "MIN(v) AS n"), None),
                 ["GROUP BY table", "missing __p0_m", "not in the query: __p0_c"],
                 id="window-other-aggregate"),
    pytest.param(ROWS, (ROWS[0].replace("LAG", "LEAD"), None),
                 ["buffered rows", "missing __fz0"], id="rows-other-call"),
    pytest.param(COUNTS, PLAIN, ["kept by a GROUP BY query"], id="aggregate-to-stateless"),
    pytest.param(SESSIONS, (SESSIONS[0].replace("GROUP BY k", "GROUP BY k, j"), None),
                 ["session rows", "missing __k1"], id="session-other-keys"),
]  # fmt: skip


def executor(query: Query) -> Executor:
    sql, emit = query
    job = make_job(sql, emit=emit)
    return build_executor(plan_job(job), job)


def batch(start: int, stop: int) -> SourceBatch:
    return SourceBatch(EVENTS.slice(start, stop - start), LineRefs(start))


def state_after_rows(query: Query) -> dict[str, Any]:
    ex = executor(query)
    ex.process(batch(0, 3))
    return ex.snapshot()


def as_checkpointed(state: dict[str, Any]) -> dict[str, Any]:
    """The state as a checkpoint gives it back: its plain values through JSON."""
    values = {k: v for k, v in state.items() if not isinstance(v, pa.Table)}
    return {**state, **orjson.loads(orjson.dumps(values))}


@pytest.mark.parametrize(("kept", "restoring", "named"), REFUSED)
def test_restore_refuses_the_state_of_another_query_naming_what_differs(
    kept: Query, restoring: Query, named: list[str]
) -> None:
    state = as_checkpointed(state_after_rows(kept))
    ex = executor(restoring)
    with pytest.raises(StateIncompatibleError) as caught:
        ex.restore(state)
    message = str(caught.value)
    for part in named:
        assert part in message, message
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.kind == ErrorKind.CONFIGURATION


@pytest.mark.parametrize(("kept", "restoring", "named"), REFUSED_WITHOUT_SHAPE)
def test_a_state_from_before_shapes_were_kept_is_checked_by_its_tables(
    kept: Query, restoring: Query, named: list[str]
) -> None:
    state = as_checkpointed(state_after_rows(kept))
    del state["shape"]
    with pytest.raises(StateIncompatibleError) as caught:
        executor(restoring).restore(state)
    for part in named:
        assert part in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "query",
    [COUNTS, GROUPED, ON_DUCKDB, WINDOWED, SESSIONS, SLIDING, ROWS],
    ids=lambda q: q[0][:30] + q[0][-20:],
)
def test_a_refused_restore_changes_nothing(query: Query) -> None:
    expected = executor(query)
    expected.process(batch(0, 3))
    ex = executor(query)
    ex.process(batch(0, 3))
    with pytest.raises(StateIncompatibleError):
        ex.restore(state_after_rows(PLAIN))
    with pytest.raises(StateIncompatibleError):
        ex.restore(as_checkpointed(state_after_rows(COUNTS if query != COUNTS else GROUPED)))
    assert (
        ex.process(batch(3, 6)).table.to_pylist() == expected.process(batch(3, 6)).table.to_pylist()
    )
    assert ex.finish() == expected.finish()


COMPATIBLE = [
    pytest.param(COUNTS, (COUNTS[0].replace("FROM t", "FROM t WHERE v < 100"), CHANGES),
                 id="running-where"),
    pytest.param(GROUPED, (GROUPED[0] + " HAVING SUM(v) > 0", FINAL), id="grouped-having"),
    pytest.param(ON_DUCKDB, ("SELECT k AS key, STDDEV(v) AS sd FROM t GROUP BY k", CHANGES),
                 id="duckdb-aliases"),
    pytest.param(WINDOWED, (WINDOWED[0].replace("FROM t", "FROM t WHERE v > 0"), None),
                 id="window-where"),
    pytest.param(SESSIONS, (SESSIONS[0].replace("FROM t", "FROM t WHERE v > 0"), None),
                 id="session-where"),
    pytest.param(SESSIONS, (SESSIONS[0].replace("AS n", "AS trades"), None),
                 id="session-aliases"),
    pytest.param(SLIDING, (SLIDING[0].replace("FROM t", "FROM t WHERE v > 0"), None),
                 id="sliding-where"),
    pytest.param(ROWS, (ROWS[0].replace(" AS p", " AS previous"), None), id="rows-alias"),
    pytest.param(PLAIN, ("SELECT v FROM t", None), id="stateless-projection"),
]  # fmt: skip


@pytest.mark.parametrize(("kept", "restoring"), COMPATIBLE)
def test_a_state_that_fits_is_restored_and_carried_on(kept: Query, restoring: Query) -> None:
    reference = executor(restoring)
    reference.process(batch(0, 3))
    ex = executor(restoring)
    ex.restore(as_checkpointed(state_after_rows(kept)))
    got = ex.process(batch(3, 6)).table.to_pylist()
    assert got == reference.process(batch(3, 6)).table.to_pylist()
    finished, expected = ex.finish(), reference.finish()
    assert (finished.to_pylist() if finished else None) == (
        expected.to_pylist() if expected else None
    )
