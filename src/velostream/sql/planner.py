"""Plan a job's SELECT into DuckDB SQL fragments the engine runs per micro-batch.

The dialect's streaming clauses are blanked out (keeping every offset) before the
rest is parsed: `WINDOW TUMBLING|SLIDING|SESSION(...)` (a time window) and `ROWS WINDOW
BUFFER N ROWS` inside `OVER (...)` (a row window kept across batches). What remains is
standard SQL. DuckDB's own parser judges its syntax; sqlglot parses it into a tree that
is checked against the sandbox (no table functions, no other tables) and split into the
pieces each plan kind needs: projections, WHERE, group keys, aggregates and their
arguments, HAVING, ORDER BY, LIMIT. The planned pieces are parsed by DuckDB again, and
every function they call must be one DuckDB has.

This module routes a SELECT to its plan kind and plans stateless queries itself;
`plan_aggregate` plans GROUP BY and time windows, `plan_row_window` row windows, and
`plan` holds the model they all produce.
"""

from __future__ import annotations

import copy
import re
import threading
from collections import OrderedDict

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from velostream.errors import PlanError, SandboxError
from velostream.sql.duckdb_check import (
    check_functions,
    check_planned_sql,
    check_syntax,
    sqlglot_offset,
)
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import JobSpec
from velostream.sql.plan import (
    AGG,
    ARG,
    BATCH,
    EVENT_TIME,
    KEY,
    ROW,
    SYSTEM_COLUMNS,
    WINDOW_END,
    WINDOW_START,
    AggregateCall,
    PlanKind,
    QueryPlan,
    RowWindowCall,
    Star,
    StreamJoin,
    TableSide,
    TumblingWindow,
)
from velostream.sql.plan_aggregate import extract_window_clause, plan_aggregate, time_window
from velostream.sql.plan_casts import (
    HELPER,
    integer_casts,
    mask_timestamp_calls,
    timestamp_calls,
)
from velostream.sql.plan_distinct import distinct_of, distinct_time_sql
from velostream.sql.plan_headers import check_header_reads, plan_set_headers
from velostream.sql.plan_join import fill_subqueries, flatten_join, plan_table_sides
from velostream.sql.plan_row_window import in_text_order, is_row_function, plan_row_window
from velostream.sql.plan_sql import (
    blank,
    check_engine_names,
    check_stars,
    output_name,
    plan_star,
    quote,
    standard_functions,
    to_sql,
    unalias,
    unqualify,
)
from velostream.sql.plan_stream_join import (
    AGGREGATE_OVER_JOIN,
    plan_stream_join,
    stream_join_from_sql,
)
from velostream.sql.plan_union import is_union, plan_union
from velostream.sql.sandbox import check_sandbox

__all__ = [
    # The plan model lives in `plan`; re-exported because the engine imports it from here.
    "AGG",
    "ARG",
    "BATCH",
    "EVENT_TIME",
    "KEY",
    "ROW",
    "SYSTEM_COLUMNS",
    "WINDOW_END",
    "WINDOW_START",
    "AggregateCall",
    "PlanKind",
    "QueryPlan",
    "RowWindowCall",
    "Star",
    "StreamJoin",
    "TableSide",
    "TumblingWindow",
    "parse_duration_ms",
    "plan_job",
]

_ROWS_BUFFER = re.compile(r"\bROWS\s+WINDOW\s+BUFFER\s+(\d+)\s+ROWS\b", re.IGNORECASE)

# SELECT clauses the engine runs; any other one is rejected rather than ignored.
_SUPPORTED_CLAUSES = frozenset(
    {"expressions", "distinct", "from_", "joins", "where", "group", "having", "order", "limit"}
)
_CLAUSE_NAMES = {
    "with_": "WITH (common table expressions)",
    "qualify": "QUALIFY",
    "offset": "OFFSET",
    "sample": "USING SAMPLE",
    "windows": "a named WINDOW definition",
    "laterals": "LATERAL",
    "pivots": "PIVOT",
    "prewhere": "PREWHERE",
    "into": "SELECT INTO",
}


def _check_clauses(tree: exp.Select) -> None:
    for key, value in tree.args.items():
        if value and key not in _SUPPORTED_CLAUSES:
            name = _CLAUSE_NAMES.get(key, key.rstrip("_").upper())
            raise PlanError(f"{name} is not supported in a job's SELECT")
    group = tree.args.get("group")
    if group is not None and group.args.get("all"):
        raise PlanError("GROUP BY ALL is not supported: list the grouping expressions")


def _limit(tree: exp.Select) -> int | None:
    node = tree.args.get("limit")
    if node is None:
        return None
    options = node.args.get("limit_options")
    if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
        raise PlanError("LIMIT ... PERCENT / WITH TIES is not supported")
    value = node.expression
    if (
        not isinstance(value, exp.Literal)
        or value.is_string
        or not str(value.this).isdigit()
        or node.args.get("offset") is not None
    ):
        raise PlanError(f"LIMIT must be a non-negative integer literal, not {to_sql(value)}")
    return int(value.this)


# Plans made lately, each with a copy of its job as it was then (a job's dicts may
# change): validation plans every job of an application, then each job's processor
# plans it again when the application is deployed. Planning takes a few milliseconds;
# copying a job and its plan, and comparing jobs, a fraction of one.
_RECENT_PLANS = 64
_recent: OrderedDict[int, tuple[JobSpec, QueryPlan]] = OrderedDict()
_recent_lock = threading.Lock()


def plan_job(job: JobSpec) -> QueryPlan:
    """Plan `job.select_sql`; raises PlanError naming what is unsupported.

    A job planned lately, unchanged since, gets a copy of its plan (each caller may
    change its own).
    """
    with _recent_lock:
        hit = _recent.get(id(job))
    if hit is not None and hit[0] == job:
        return copy.deepcopy(hit[1])
    plan = _plan_job(job)
    kept = (copy.deepcopy(job), copy.deepcopy(plan))
    with _recent_lock:
        _recent[id(job)] = kept
        _recent.move_to_end(id(job))
        while len(_recent) > _RECENT_PLANS:
            _recent.popitem(last=False)
    return plan


def _plan_job(job: JobSpec) -> QueryPlan:
    if is_union(job.select_sql):  # one stateless branch per source (plan_union)
        return plan_union(job, _plan_job)
    sql, window_kind, window_args = extract_window_clause(job.select_sql)
    buffer_sizes = [int(n) for n in _ROWS_BUFFER.findall(sql)]
    sql = _ROWS_BUFFER.sub(lambda m: blank(m.group()), sql)
    parsed = check_syntax(mask_timestamp_calls(sql))
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except ParseError as exc:
        errors = exc.errors[0] if exc.errors else {}
        raise PlanError(
            f"SQL syntax error: {errors.get('description', exc)}", sqlglot_offset(sql, errors)
        ) from exc
    except TokenError as exc:
        raise PlanError(f"SQL syntax error: {exc}") from exc
    try:
        source = check_sandbox(tree, {s.name for s in job.sources})
    except SandboxError as exc:
        raise PlanError(str(exc)) from exc
    if not isinstance(tree, exp.Select):
        raise PlanError("a statement must be a single SELECT")
    check_functions(tree, parsed)
    _check_clauses(tree)
    check_engine_names(tree)
    stream_join = plan_stream_join(tree, job, source)
    sides = plan_table_sides(tree, job, source)
    if stream_join is not None and sides is not None:
        raise PlanError(
            "a stream–stream join cannot also read a table or a subquery: write the join to "
            "a sink and read it with the table in a second statement"
        )
    if stream_join is not None and (
        window_kind is not None
        or tree.args.get("group") is not None
        or tree.find(exp.AggFunc, exp.Window) is not None
    ):
        raise PlanError(AGGREGATE_OVER_JOIN)
    if stream_join is not None and any(isinstance(s, exp.Star) for s in tree.selects):
        raise PlanError("SELECT * over a join is not supported: name the columns to emit")
    if sides is None and stream_join is None:
        unqualify(tree, source)  # the batch is the only table
    elif (
        sides is not None
        and (sides.joined or tree.find(exp.Window))
        and any(isinstance(s, exp.Star) for s in tree.selects)
    ):
        raise PlanError(
            "SELECT * over a join (or with window functions and a subquery) is not "
            "supported: name the columns to emit (t.* and i.* are not supported either)"
        )
    prejoin = flatten_join(tree, sides) if sides is not None and tree.find(exp.Window) else None
    check_stars(tree)
    check_header_reads(tree, job, source)
    set_headers = plan_set_headers(tree, job)
    standard_functions(tree)
    timestamp_calls(tree)
    integer_casts(tree)
    window = None
    if window_kind is not None:
        window = time_window(window_kind, window_args or "", job, source)

    limit = _limit(tree)
    where = tree.args.get("where")
    if where is not None:
        if where.find(exp.Window) is not None:
            raise PlanError("window functions are not allowed in WHERE")
        aggregate = where.find(exp.AggFunc)
        if aggregate is not None:
            raise PlanError(
                f"aggregate {to_sql(aggregate)} is not allowed in WHERE (filter groups with HAVING)"
            )
    where_sql = to_sql(where.this) if where is not None else None
    plan_args = (job, tree, source, where_sql, limit)
    for node in tree.find_all(exp.Func):
        if is_row_function(node) and not isinstance(node.parent, exp.Window):
            raise PlanError(
                f"{to_sql(node)} needs OVER (ROWS WINDOW BUFFER N ROWS [PARTITION BY ...] "
                "[ORDER BY ...])"
            )
    # Any aggregate outside OVER (...) makes this a GROUP BY query; an unsupported one
    # is rejected there rather than silently computed per batch.
    has_aggregates = any(not isinstance(a.parent, exp.Window) for a in tree.find_all(exp.AggFunc))
    windows = in_text_order(list(tree.find_all(exp.Window)))
    grouped = tree.args.get("group") is not None or has_aggregates or window is not None
    distinct = distinct_of(tree, job, grouped=grouped, windowed=bool(windows))
    if tree.args.get("group") is not None or has_aggregates or window is not None:
        if any(isinstance(s, exp.Star) for s in tree.selects):
            raise PlanError(
                "SELECT * cannot be combined with GROUP BY, aggregates or a time window: "
                "name the keys and aggregates to emit"
            )
        if windows:
            raise PlanError("window functions cannot be combined with GROUP BY or aggregates yet")
        plan = plan_aggregate(*plan_args, window)
    elif windows:
        plan = plan_row_window(*plan_args, windows, buffer_sizes)
    else:
        if tree.args.get("order") is not None:
            raise PlanError(
                "ORDER BY on a stream is not supported: a stream emits in arrival order "
                "(use it with GROUP BY ... EMIT FINAL)"
            )
        plan = QueryPlan(
            kind=PlanKind.DISTINCT if distinct else PlanKind.STATELESS,
            source=source,
            output_columns=[],
            select_sql=[],
            where_sql=where_sql,
            limit=limit,
            emit=job.emit,
            distinct_time_sql=distinct_time_sql(job) if distinct else None,
        )
        for i, item in enumerate(tree.selects):
            if isinstance(item, exp.Star):
                plan.select_sql.append("*")
                plan.output_columns.append("*")
                plan.stars.append(plan_star(item))
            else:
                plan.select_sql.append(f"{to_sql(unalias(item))} AS {quote(output_name(item, i))}")
                plan.output_columns.append(output_name(item, i))
    if stream_join is not None:
        if plan.kind != PlanKind.STATELESS:
            raise PlanError(AGGREGATE_OVER_JOIN)
        plan.kind = PlanKind.STREAM_JOIN
        plan.stream_join = stream_join
        plan.from_sql = stream_join_from_sql(stream_join)
    if distinct and plan.kind != PlanKind.DISTINCT:  # never drop a DISTINCT silently
        raise PlanError(f"SELECT DISTINCT is not supported in a {plan.kind} query yet")
    plan.casts = _collect_casts(tree)
    plan.set_headers = set_headers
    if sides is not None:
        plan.prejoin_sql = prejoin
        fill_subqueries(plan, sides)
    check_planned_sql(_planned_sql(plan), tree)
    return plan


# Where climbing from a CAST to the row expression that evaluates it stops.
_CONTEXT_STOP = (
    exp.Select,
    exp.Where,
    exp.Having,
    exp.Group,
    exp.Order,
    exp.Ordered,
    exp.Alias,
    exp.Distinct,
    exp.Window,
    exp.AggFunc,
)


def _row_context(cast: exp.Cast) -> exp.Expr:
    """The largest expression around `cast` that a single input row evaluates.

    A CAST guarded by a CASE (or inside a WHERE) fails only when its context does.
    """
    node: exp.Expr = cast
    while True:
        parent = node.parent
        if (
            parent is None
            or isinstance(parent, _CONTEXT_STOP)
            or isinstance(parent.parent, exp.Window)
            or parent.find(exp.AggFunc, exp.Window) is not None
        ):
            return node
        node = parent


def _collect_casts(tree: exp.Select) -> list[tuple[str, str, str, bool, str]]:
    where = tree.args.get("where")
    out = []
    for cast in tree.find_all(exp.Cast):
        if (
            isinstance(cast, exp.TryCast)
            or cast.meta.get(HELPER)
            or cast.find(exp.AggFunc, exp.Window) is not None
        ):
            continue  # a CAST of a group's or a window's value is not a row's failure
        in_where = where is not None and cast.find_ancestor(exp.Where) is not None
        context = where.this if in_where and where is not None else _row_context(cast)
        out.append((to_sql(cast), to_sql(cast.this), to_sql(cast.to), in_where, to_sql(context)))
    return out


def _planned_sql(plan: QueryPlan) -> str:
    """Every SQL piece of `plan` in one SELECT: what the engine's queries are made of."""
    items = [plan.select_list(())] if plan.select_sql else []
    items += [f"({k})" for k in plan.keys]
    items += [f"({a.arg})" for a in plan.aggregates if a.arg is not None]
    if plan.having_sql:
        items.append(f"({plan.having_sql})")
    if plan.window is not None:
        items.append(f"({plan.window.time_sql})")
    if plan.distinct_time_sql is not None:
        items.append(f"({plan.distinct_time_sql})")
    order = list(plan.order_sql)
    for call in plan.row_calls:
        items += [f"({s})" for s in (call.arg, call.default_sql) if s is not None]
        items += [f"({s})" for s in call.partition_sql]
        order += call.order_sql
    where = f" WHERE {plan.where_sql}" if plan.where_sql else ""
    order_by = f" ORDER BY {', '.join(order)}" if order else ""
    return f"SELECT {', '.join(items)} FROM {plan.from_sql}{where}{order_by}"
