"""Planning a job's SELECT: the plan's kind and pieces, and every validation error."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot.errors import ParseError

from velostream.errors import SqlValidationError, VelostreamError
from velostream.sql.duckdb_check import sqlglot_offset
from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import (
    PlanError,
    PlanKind,
    QueryPlan,
    plan_job,
)


def job(sql: str, *, emit: EmitMode | None = None, **fields: object) -> JobSpec:
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=emit,
        sources=(ConnectorConfig("trades", "memory_source", {}),),
        sinks=(ConnectorConfig("out", "memory_sink", {}),),
        **fields,  # type: ignore[arg-type]
    )


def plan(sql: str, **kwargs: object) -> QueryPlan:
    return plan_job(job(sql, **kwargs))  # type: ignore[arg-type]


def rejected(sql: str, **kwargs: object) -> str:
    with pytest.raises(PlanError) as caught:
        plan(sql, **kwargs)
    return str(caught.value)


# --- plans -----------------------------------------------------------------------


def test_stateless_plan() -> None:
    p = plan("SELECT id, price * qty AS notional, UPPER(sym) FROM trades WHERE price > 100")
    assert p.kind == PlanKind.STATELESS
    assert p.source == "trades"
    assert p.output_columns == ["id", "notional", "col2"]
    assert p.select_sql == ['id AS "id"', 'price * qty AS "notional"', 'UPPER(sym) AS "col2"']
    assert p.where_sql == "price > 100"
    assert p.limit is None


def test_select_star_and_limit() -> None:
    p = plan("SELECT * FROM trades LIMIT 10")
    assert p.select_sql == ["*"]
    assert p.limit == 10


def test_source_and_alias_qualifiers_are_dropped() -> None:
    p = plan("SELECT t.id, t.*, trades.sym FROM trades AS t WHERE t.price > 1")
    assert p.select_sql == ['id AS "id"', "*", 'sym AS "sym"']
    assert p.where_sql == "price > 1"


def test_other_dotted_names_are_struct_fields() -> None:
    p = plan("SELECT payload.price, trades.payload.sym AS s FROM trades")
    assert p.select_sql == ['payload.price AS "price"', 'payload.sym AS "s"']


def test_aggregate_plan() -> None:
    p = plan(
        "SELECT sym, COUNT(*) AS n, SUM(qty) AS volume, AVG(price) AS avg_price, "
        "COUNT(DISTINCT venue) AS venues FROM trades GROUP BY sym HAVING COUNT(*) > 1",
        emit=EmitMode.FINAL,
    )
    assert p.kind == PlanKind.AGGREGATE
    assert p.emit == EmitMode.FINAL
    assert p.keys == ["sym"]
    assert [(a.func, a.arg) for a in p.aggregates] == [
        ("count_star", None),
        ("sum", "qty"),
        ("avg", "price"),
        ("count_distinct", "venue"),
    ]
    assert p.having_sql == "__agg0 > 1", "the same aggregate is computed once"
    assert p.output_columns == ["sym", "n", "volume", "avg_price", "venues"]


def test_aggregate_defaults_to_emit_changes_and_window_to_emit_final() -> None:
    assert plan("SELECT sym, COUNT(*) FROM trades GROUP BY sym").emit == EmitMode.CHANGES
    windowed = plan("SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, 1m)")
    assert windowed.emit == EmitMode.FINAL
    assert windowed.window is not None and windowed.window.size_ms == 60_000


def test_an_aggregate_without_group_by_is_a_global_aggregate() -> None:
    p = plan("SELECT COUNT(*) AS n, MAX(price) AS top FROM trades")
    assert p.kind == PlanKind.AGGREGATE
    assert p.keys == []


@pytest.mark.parametrize(
    ("window", "size_ms"),
    [
        ("TUMBLING(ts, 1m)", 60_000),
        ("TUMBLING(ts, 500ms)", 500),
        ("TUMBLING(ts, 30s)", 30_000),
        ("TUMBLING(ts, 2h)", 7_200_000),
        ("TUMBLING(ts, 1d)", 86_400_000),
        ("TUMBLING(ts, 1.5s)", 1500),
        ("TUMBLING(ts,  10 S )", 10_000),
        ("TUMBLING(INTERVAL '1' MINUTE)", 60_000),
        ("TUMBLING(INTERVAL '90' SECONDS)", 90_000),
        ("TUMBLING(ts, INTERVAL '5' MINUTES)", 300_000),
    ],
)
def test_tumbling_window_sizes(window: str, size_ms: int) -> None:
    p = plan(f"SELECT COUNT(*) FROM trades WINDOW {window}")
    assert p.window is not None
    assert p.window.size_ms == size_ms


@pytest.mark.parametrize(
    ("window", "kind", "size_ms", "advance_ms", "time_sql"),
    [
        ("SLIDING(5m, 1m)", "SLIDING", 300_000, 60_000, "_timestamp"),
        ("SLIDING(ts, 1h, 15m)", "SLIDING", 3_600_000, 900_000, "ts"),
        ("SLIDING(ts, 10s, 10s)", "SLIDING", 10_000, 10_000, "ts"),
        (
            "SLIDING(INTERVAL '2' MINUTE, INTERVAL '30' SECOND)",
            "SLIDING",
            120_000,
            30_000,
            "_timestamp",
        ),
        ("SLIDING(trades.ts, INTERVAL '1' HOUR, 30m)", "SLIDING", 3_600_000, 1_800_000, "ts"),
        ("SESSION(30s)", "SESSION", 30_000, 0, "_timestamp"),
        ("SESSION(ts, INTERVAL '5' MINUTES)", "SESSION", 300_000, 0, "ts"),
        ("SESSION(trades.ts, 4h)", "SESSION", 14_400_000, 0, "ts"),
    ],
)
def test_sliding_and_session_windows(
    window: str, kind: str, size_ms: int, advance_ms: int, time_sql: str
) -> None:
    p = plan(f"SELECT sym, COUNT(*) FROM trades GROUP BY sym WINDOW {window}")
    assert p.window is not None
    assert (p.window.kind, p.window.size_ms, p.window.advance_ms) == (kind, size_ms, advance_ms)
    assert p.window.time_sql == time_sql


@pytest.mark.parametrize("window", ["TUMBLING(ts, 1m)", "SLIDING(ts, 2m, 1m)", "SESSION(ts, 1m)"])
def test_window_bounds_have_every_name_under_every_window(window: str) -> None:
    p = plan(
        "SELECT sym, _window_start AS a, _window_end AS b, TUMBLE_START(ts) AS c, "
        f"TUMBLE_END(ts, INTERVAL '1' MINUTE) AS d FROM trades GROUP BY sym WINDOW {window}"
    )
    assert p.select_sql[1:] == ['__ws AS "a"', '__we AS "b"', '__ws AS "c"', '__we AS "d"']


def test_event_time_comes_from_the_window_then_the_job_then_kafka_timestamp() -> None:
    sql = "SELECT COUNT(*) FROM trades WINDOW TUMBLING(1m)"
    window = plan(sql.replace("1m", "trades.event_ts, 1m")).window
    assert window is not None and window.time_sql == "event_ts"
    by_property = plan(sql, properties={"event.time.field": "event_at"})
    assert by_property.window is not None and by_property.window.time_sql == "event_at"
    by_field = plan(sql, event_time_field="ts")
    assert by_field.window is not None and by_field.window.time_sql == "ts"
    default = plan(sql)
    assert default.window is not None and default.window.time_sql == "_timestamp"


def test_row_window_plan() -> None:
    p = plan(
        "SELECT id, LAG(price, 2, 0) OVER (ROWS WINDOW BUFFER 5 ROWS PARTITION BY sym "
        "ORDER BY ts) AS prev, ROW_NUMBER() OVER (ROWS WINDOW BUFFER 3 ROWS) AS n, "
        "RANK() OVER (ROWS WINDOW BUFFER 4 ROWS ORDER BY price DESC) AS r FROM trades"
    )
    assert p.kind == PlanKind.ROW_WINDOW
    lag, number, rank = p.row_calls
    assert (lag.func, lag.arg, lag.offset, lag.default_sql, lag.buffer_rows) == (
        "lag",
        "price",
        2,
        "0",
        5,
    )
    assert (lag.partition_sql, lag.order_sql) == (("sym",), ("ts",))
    assert (number.func, number.buffer_rows, number.partition_sql) == ("row_number", 3, ())
    assert (rank.func, rank.order_sql) == ("rank", ("price DESC",))
    assert p.select_sql == ['id AS "id"', '__w0 AS "prev"', '__w1 AS "n"', '__w2 AS "r"']


def test_casts_are_collected_with_the_row_expression_around_them() -> None:
    p = plan(
        "SELECT CASE WHEN s = 'n/a' THEN 0 ELSE CAST(s AS DOUBLE) END AS v, "
        "SUM(CAST(q AS DOUBLE)) AS total FROM trades WHERE CAST(p AS DOUBLE) > 1 GROUP BY v"
    )
    casts = {c[0]: c for c in p.casts}
    guarded = casts["CAST(s AS DOUBLE)"]
    assert guarded[3] is False
    assert guarded[4] == "CASE WHEN s = 'n/a' THEN 0 ELSE CAST(s AS DOUBLE) END"
    assert casts["CAST(q AS DOUBLE)"][4] == "CAST(q AS DOUBLE)", "stops at the aggregate"
    assert casts["CAST(p AS DOUBLE)"][3:] == (True, "CAST(p AS DOUBLE) > 1")


def test_a_cast_of_an_aggregate_is_not_a_row_cast() -> None:
    p = plan("SELECT CAST(SUM(q) AS VARCHAR) AS s FROM trades")
    assert p.casts == []


@pytest.mark.parametrize("size", ["5", "s", "5 minutes", "-1s", "1w"])
def test_a_window_size_needs_a_number_and_a_unit(size: str) -> None:
    message = rejected(f"SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, {size})")
    assert message == (
        f"invalid duration {size.strip()!r}; expected a number and one of ms, s, m, h, d"
    )


def test_plan_errors_are_validation_errors() -> None:
    error = PlanError("nope")
    assert isinstance(error, SqlValidationError) and isinstance(error, VelostreamError)
    assert error.problems == ["nope"]


# --- validation errors ----------------------------------------------------------------

ROWS = "ROWS WINDOW BUFFER 3 ROWS"

INVALID: list[tuple[str, EmitMode | None, str]] = [
    # syntax
    ("SELECT FROM WHERE", None, "SQL syntax error"),
    ("SELECT id,, FROM trades", None, 'SQL syntax error at or near ","'),
    ("SELECT id, FROM trades", None, "',' before FROM leaves an empty item"),
    ("SELECT FROM trades", None, "the SELECT list is empty"),
    ("SELECT id FROM trades GROUP", None, 'SQL syntax error at or near "GROUP"'),
    ("SELECT COUNT(*) FROM trades GROUP BY", None, 'SQL syntax error at or near "BY"'),
    # functions
    ("SELECT UPPPER(sym) FROM trades", None, "unknown function UPPPER() (did you mean upper?)"),
    ("SELECT id FROM trades WHERE no_such_fn(id)", None, "unknown function no_such_fn()"),
    ("SELECT sym, MYAGG(qty) FROM trades GROUP BY sym", None, "unknown function MYAGG()"),
    ("SELECT DATEADD('day', 1, ts) FROM trades", None, "unknown function DATEADD()"),
    # aggregates
    (
        "SELECT sym, MEDIAN(price) FROM trades GROUP BY sym",
        None,
        "aggregate MEDIAN(price) is not supported (supported: COUNT(*), COUNT",
    ),
    ("SELECT MEDIAN(price) FROM trades", None, "aggregate MEDIAN(price) is not supported"),
    ("SELECT sym, ARRAY_AGG(sym) FROM trades GROUP BY sym", None, "is not supported"),
    (
        "SELECT sym, STRING_AGG(sym, ',' ORDER BY id) FROM trades GROUP BY sym",
        None,
        "concatenate in arrival order; ORDER BY (or WITHIN GROUP) is not supported",
    ),
    (
        "SELECT sym, LISTAGG(sym, ',') WITHIN GROUP (ORDER BY id) FROM trades GROUP BY sym",
        None,
        "Unknown ordered aggregate",  # DuckDB's parser
    ),
    (
        "SELECT sym, LISTAGG(id, sym) FROM trades GROUP BY sym",
        None,
        "must be a string literal, as in LISTAGG(x, ', ')",
    ),
    (
        "SELECT sym, STRING_AGG(DISTINCT sym, ',') FROM trades GROUP BY sym",
        None,
        "DISTINCT is only supported in COUNT(DISTINCT x)",
    ),
    (
        "SELECT SUM(DISTINCT qty) FROM trades",
        None,
        "DISTINCT is only supported in COUNT(DISTINCT x), not SUM(DISTINCT qty)",
    ),
    ("SELECT MAX(*) FROM trades", None, "MAX(*) is not valid"),
    ("SELECT SUM(COUNT(*)) FROM trades", None, "nested aggregate"),
    ("SELECT COUNT(DISTINCT a, b) FROM trades", None, "takes exactly one expression"),
    # grouping
    (
        "SELECT sym, qty, COUNT(*) FROM trades GROUP BY sym",
        None,
        "column qty in SELECT item qty must appear in GROUP BY or inside an aggregate",
    ),
    (
        "SELECT sym, COUNT(*) FROM trades GROUP BY sym HAVING qty > 1",
        None,
        "column qty in HAVING must appear in GROUP BY or inside an aggregate",
    ),
    (
        "SELECT *, COUNT(*) FROM trades GROUP BY sym",
        None,
        "SELECT * cannot be combined with GROUP BY",
    ),
    ("SELECT sym, COUNT(*) FROM trades GROUP BY ALL", None, "GROUP BY ALL is not supported"),
    (
        "SELECT id FROM trades WHERE COUNT(*) > 1",
        None,
        "aggregate COUNT(*) is not allowed in WHERE (filter groups with HAVING)",
    ),
    # ORDER BY
    (
        "SELECT id FROM trades ORDER BY id",
        None,
        "ORDER BY on a stream is not supported: a stream emits in arrival order",
    ),
    (
        "SELECT sym, COUNT(*) AS n FROM trades GROUP BY sym ORDER BY n",
        EmitMode.CHANGES,
        "ORDER BY is not supported with EMIT CHANGES",
    ),
    (
        f"SELECT id, LAG(id) OVER ({ROWS}) FROM trades ORDER BY id",
        None,
        "ORDER BY on a stream is not supported: use ORDER BY inside OVER (...)",
    ),
    # DISTINCT
    ("SELECT DISTINCT ON (sym) sym FROM trades", None, "DISTINCT ON (...) is not supported"),
    ("SELECT DISTINCT sym, COUNT(*) FROM trades GROUP BY sym", None, "drop DISTINCT"),
    # windows
    (
        "SELECT COUNT(*) FROM trades WINDOW SLIDING(5m, 2m)",
        None,
        "SLIDING size 5m is not a multiple of its advance 2m: choose an advance that divides",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW SLIDING(1m)",
        None,
        "SLIDING takes (size, advance) or (time_column, size, advance)",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW SLIDING(ts, 1m, 0s)",
        None,
        "window size must be positive",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW SLIDING(ts, 1d, 1ms)",
        None,
        "puts each row in 86400000 windows; at most 10000 are supported",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW SESSION(ts, 5m, sym)",
        None,
        "a partition key argument is not supported; sessions are kept per GROUP BY key",
    ),
    ("SELECT COUNT(*) FROM trades WINDOW SESSION(ts, 0s)", None, "session gap must be positive"),
    (
        "SELECT sym, LISTAGG(sym, ',') FROM trades GROUP BY sym WINDOW SESSION(ts, 1m)",
        None,
        "LISTAGG/STRING_AGG in a SESSION window is not supported yet",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW SESSION(a, b, c, 1m)",
        None,
        "SESSION takes (gap) or (time_column, gap)",
    ),
    ("SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, 0s)", None, "window size must be positive"),
    ("SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, 5 minutes)", None, "invalid duration"),
    (
        "SELECT COUNT(*) FROM trades WINDOW TUMBLING(INTERVAL '1' WEEK)",
        None,
        "unsupported window interval",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW TUMBLING(a, b, 1m)",
        None,
        "TUMBLING takes (size) or (time_column, size)",
    ),
    ("SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, 1m", None, "unbalanced parenthesis"),
    (
        "SELECT COUNT(*) FROM trades WINDOW TUMBLING(INTERVAL '1 MINUTE)",
        None,
        "unsupported window interval",
    ),
    (
        "SELECT COUNT(*) FROM trades WINDOW TUMBLING(getenv('HOME'), 1m)",
        None,
        "function getenv() is not allowed",
    ),
    (
        "SELECT TUMBLE_START(ts) FROM trades GROUP BY sym",
        None,
        "TUMBLE_START needs a WINDOW TUMBLING, SLIDING or SESSION clause",
    ),
    (
        "SELECT id, TUMBLE_END(ts) FROM trades",
        None,
        "TUMBLE_END needs a WINDOW TUMBLING, SLIDING or SESSION clause",
    ),
    # LIMIT
    ("SELECT id FROM trades LIMIT 'ten'", None, "LIMIT must be a non-negative integer literal"),
    ("SELECT id FROM trades LIMIT -1", None, "LIMIT must be a non-negative integer literal"),
    ("SELECT id FROM trades LIMIT 1.5", None, "LIMIT must be a non-negative integer literal"),
    ("SELECT id FROM trades LIMIT qty", None, "LIMIT must be a non-negative integer literal"),
    ("SELECT id FROM trades LIMIT ALL", None, "LIMIT must be a non-negative integer literal"),
    ("SELECT id FROM trades LIMIT 5 PERCENT", None, "LIMIT ... PERCENT"),
    ("SELECT id FROM trades LIMIT 5 OFFSET 2", None, "OFFSET is not supported"),
    # row windows
    (
        "SELECT id, LAG(id) OVER (PARTITION BY sym) FROM trades",
        None,
        "window functions need a row window: OVER (ROWS WINDOW BUFFER N ROWS",
    ),
    ("SELECT id, LAG(id) FROM trades", None, "LAG(id) needs OVER (ROWS WINDOW BUFFER N ROWS"),
    ("SELECT id, ROW_NUMBER() FROM trades", None, "ROW_NUMBER() needs OVER (ROWS WINDOW BUFFER"),
    (
        f"SELECT LAG(id) OVER ({ROWS}), LEAD(id) OVER (ORDER BY id) FROM trades",
        None,
        "every OVER (...) needs its own ROWS WINDOW BUFFER N ROWS",
    ),
    (
        f"SELECT NTILE(2) OVER ({ROWS}) FROM trades",
        None,
        "NTILE(2) is not supported over a row window",
    ),
    (
        f"SELECT RANK() OVER ({ROWS}) FROM trades",
        None,
        "RANK needs ORDER BY one expression inside OVER (...)",
    ),
    (
        f"SELECT DENSE_RANK() OVER ({ROWS} ORDER BY a, b) FROM trades",
        None,
        "DENSE_RANK needs ORDER BY one expression",
    ),
    (
        f"SELECT LAG(id, 4) OVER ({ROWS}) FROM trades",
        None,
        "LAG offset 4 exceeds the row buffer of 3 rows",
    ),
    (
        f"SELECT LAG(id, qty) OVER ({ROWS}) FROM trades",
        None,
        "LAG offset must be an integer literal",
    ),
    (
        "SELECT LAG(id) OVER (ROWS WINDOW BUFFER 0 ROWS) FROM trades",
        None,
        "ROWS WINDOW BUFFER needs at least 1 row",
    ),
    (
        f"SELECT sym, SUM(qty) OVER ({ROWS}) FROM trades GROUP BY sym",
        None,
        "window functions cannot be combined with GROUP BY or aggregates yet",
    ),
    (
        f"SELECT id FROM trades WHERE LAG(id) OVER ({ROWS}) > 1",
        None,
        "window functions are not allowed in WHERE",
    ),
    # clauses that would otherwise be ignored
    (
        "WITH x AS (SELECT 1) SELECT * FROM trades",
        None,
        "WITH (common table expressions) is not supported",
    ),
    ("SELECT * FROM trades QUALIFY id > 1", None, "QUALIFY is not supported"),
    ("SELECT * FROM trades USING SAMPLE 10", None, "USING SAMPLE is not supported"),
    (
        "SELECT id FROM trades WINDOW w AS (PARTITION BY sym)",
        None,
        "a named WINDOW definition is not supported",
    ),
    # sources
    ("SELECT * FROM orders", None, "FROM orders: not a declared source (declared: trades)"),
]


@pytest.mark.parametrize(("sql", "emit", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_validation_error(sql: str, emit: EmitMode | None, message: str) -> None:
    assert message in rejected(sql, emit=emit)


# (SQL, where in it the error is placed)
PLACED: list[tuple[str, str]] = [
    ("SELECT id,, FROM trades", ", FROM"),
    ("SELECT id, FROM trades", ", FROM"),
    ("SELECT id\nFROM trades\nWHERE id = = 1", "= 1"),
    ("SELECT 'é' AS e, id FROM trades GROUP", "GROUP"),
    ("SELECT id, no_such_fn(id) FROM trades", "no_such_fn"),
    # the streaming clauses are blanked, not cut: later offsets still hold
    ("SELECT COUNT(*) FROM trades WINDOW TUMBLING(ts, 1m) HAVING nope(COUNT(*)) > 1", "nope"),
    ("SELECT LAG(id) OVER (ROWS WINDOW BUFFER 2 ROWS ORDER BY nope(id)) FROM trades", "nope"),
    ("SELECT id, TUMBLE_START(ts) FROM trades", "TUMBLE_START"),
]


@pytest.mark.parametrize(("sql", "needle"), PLACED, ids=[p[0] for p in PLACED])
def test_plan_errors_carry_the_offset_of_the_problem(sql: str, needle: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan(sql)
    assert caught.value.offset == sql.index(needle)


def test_sqlglot_syntax_errors_are_placed_at_their_token() -> None:
    sql = "SELECT a\nFROM trades\nWHERE a = = 1"
    with pytest.raises(ParseError) as caught:
        sqlglot.parse_one(sql, read="duckdb")
    assert sqlglot_offset(sql, caught.value.errors[0]) == sql.index("= 1")
    assert sqlglot_offset(sql, {}) is None


def test_a_job_planned_again_gets_a_copy_of_its_plan() -> None:
    """Validation plans a job, then its processor does: the second is a copy."""
    spec = job("SELECT id, price * 2 AS p FROM trades WHERE price > 1")
    first = plan_job(spec)
    first.select_sql.append("changed by its caller")
    second = plan_job(spec)
    assert second is not first
    assert second.select_sql == ['id AS "id"', 'price * 2 AS "p"']
    assert second == plan_job(job(spec.select_sql))  # as an equal job, planned afresh


def test_a_job_changed_since_it_was_planned_is_planned_afresh() -> None:
    spec = job("SELECT DISTINCT id FROM trades")
    assert plan_job(spec).distinct_time_sql is None
    spec.properties["event.time.field"] = "ts"  # its dicts may change
    assert plan_job(spec).distinct_time_sql == '"ts"'
