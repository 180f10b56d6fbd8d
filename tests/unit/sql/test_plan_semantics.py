"""What a query means is what runs, or it is refused at validation (issue 13, items 8-10).

Stars keep their EXCLUDE / REPLACE / RENAME; COLUMNS(...) and other whole-row forms are
refused; ORDER BY of a GROUP BY needs EMIT FINAL; each row window keeps its own
buffer and ORDER BY; a window frame inside OVER is refused, not ignored.
"""

from __future__ import annotations

import pytest

from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import PlanError, QueryPlan, Star, plan_job


def plan(sql: str, emit: EmitMode | None = None) -> QueryPlan:
    return plan_job(
        JobSpec(
            name="job",
            statement_name="out",
            kind=StatementKind.STREAM,
            select_sql=sql,
            emit=emit,
            sources=(ConnectorConfig("trades", "memory_source", {}),),
            sinks=(ConnectorConfig("out", "memory_sink", {}),),
        )
    )


def rejected(sql: str, emit: EmitMode | None = None) -> PlanError:
    with pytest.raises(PlanError) as caught:
        plan(sql, emit)
    return caught.value


def test_a_star_keeps_exclude_replace_and_rename() -> None:
    p = plan(
        "SELECT t.* EXCLUDE (t.ts) REPLACE (price * 2 AS price) RENAME (id AS trade_id) "
        "FROM trades t"
    )
    assert p.select_sql == ["*"]
    assert p.stars == [
        Star(exclude=("ts",), replace=(("price * 2", "price"),), rename=(("id", "trade_id"),))
    ]


def test_a_star_is_made_for_the_batch_it_runs_on() -> None:
    star = Star(exclude=("ts", "_key", "_offset"), replace=(("price * 2", "price"),))
    # the system and engine columns the batch has, then EXCLUDE's (a system column
    # the batch lacks is no error: * never had it)
    assert star.sql(["id", "price", "ts", "_key", "__rn"], ["__rn"]) == (
        '* EXCLUDE ("_key", "__rn", "ts") REPLACE (price * 2 AS "price")'
    )
    assert Star().sql(["id"], []) == "*"


@pytest.mark.parametrize(
    ("sql", "message", "at"),
    [
        ("SELECT COLUMNS('.*') FROM trades", "COLUMNS('.*') is not supported", 7),
        ("SELECT id, * LIKE 'p%' FROM trades", "* with a name pattern", 11),
        ("SELECT hash(*) AS h FROM trades", "* is only allowed as an item of the SELECT", 12),
        ("SELECT * REPLACE (0 AS _offset) FROM trades", "_offset is not one of the columns", None),
        ("SELECT *, SUM(qty) AS n FROM trades", "SELECT * cannot be combined", None),
        (
            "SELECT * FROM trades WINDOW TUMBLING(ts, 1m)",
            "SELECT * cannot be combined with GROUP BY, aggregates or a time window",
            None,
        ),
    ],
)
def test_whole_row_forms_the_engine_cannot_honour_are_refused(
    sql: str, message: str, at: int | None
) -> None:
    error = rejected(sql)
    assert message in str(error)
    if at is not None:
        assert error.offset == at


@pytest.mark.parametrize("emit", [None, EmitMode.CHANGES])
def test_group_by_order_by_needs_emit_final(emit: EmitMode | None) -> None:
    sql = "SELECT sym, SUM(qty) AS total FROM trades GROUP BY sym ORDER BY total DESC"
    error = rejected(sql, emit)
    assert "ORDER BY is not supported with EMIT CHANGES" in str(error)
    assert ("the default of a GROUP BY without a window" in str(error)) == (emit is None)
    assert error.offset == sql.index("total DESC")
    assert plan(sql, EmitMode.FINAL).order_sql == ["total DESC"]


def test_each_window_call_gets_the_buffer_written_in_its_over() -> None:
    p = plan(
        "SELECT 1 + LAG(price) OVER (ROWS WINDOW BUFFER 5 ROWS ORDER BY ts) AS a, "
        "LAG(price) OVER (ROWS WINDOW BUFFER 2 ROWS ORDER BY ts) AS b, "
        "CASE WHEN TRUE THEN SUM(qty) OVER (ROWS WINDOW BUFFER 3 ROWS) END AS c FROM trades"
    )
    assert [(c.func, c.buffer_rows, c.order_sql) for c in p.row_calls] == [
        ("lag", 5, ("ts",)),
        ("lag", 2, ("ts",)),
        ("sum", 3, ()),
    ]
    assert p.select_sql == ['1 + __w0 AS "a"', '__w1 AS "b"', 'CASE WHEN TRUE THEN __w2 END AS "c"']


def test_a_window_frame_inside_over_is_refused() -> None:
    error = rejected(
        "SELECT SUM(qty) OVER (ROWS WINDOW BUFFER 5 ROWS ORDER BY ts "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM trades"
    )
    assert "window frame (ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) is not supported" in str(error)


def test_an_aggregate_of_star_over_a_row_window_is_refused() -> None:
    assert "SUM(*) is not valid" in str(
        rejected("SELECT SUM(*) OVER (ROWS WINDOW BUFFER 2 ROWS) AS s FROM trades")
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT __rn AS r FROM trades",
        "SELECT __batch AS everything FROM trades",
        "SELECT id FROM trades WHERE __rn > 1",
        "SELECT LAG(__seq) OVER (ROWS WINDOW BUFFER 2 ROWS) AS s FROM trades",
    ],
)
def test_the_engines_own_names_are_never_read(sql: str) -> None:
    error = rejected(sql)
    assert "names starting with __ are the engine's own" in str(error)
    assert error.offset == sql.index("__")
