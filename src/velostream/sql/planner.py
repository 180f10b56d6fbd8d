"""Plan a job's SELECT into DuckDB SQL fragments the engine runs per micro-batch.

The dialect's streaming clauses are blanked out (keeping every offset) before the
rest is parsed: `WINDOW TUMBLING(...)` (a time window on event time) and `ROWS WINDOW
BUFFER N ROWS` inside `OVER (...)` (a row window kept across batches). What remains is
standard SQL. DuckDB's own parser judges its syntax; sqlglot parses it into a tree that
is checked against the sandbox (no table functions, no other tables) and split into the
pieces each plan kind needs: projections, WHERE, group keys, aggregates and their
arguments, HAVING, ORDER BY, LIMIT. The planned pieces are parsed by DuckDB again, and
every function they call must be one DuckDB has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from velostream.errors import ConfigurationError, PlanError, SandboxError
from velostream.sql.duckdb_check import (
    check_functions,
    check_planned_sql,
    check_syntax,
    sqlglot_offset,
)
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import EmitMode, JobSpec
from velostream.sql.sandbox import check_sandbox

__all__ = [
    "AggregateCall",
    "PlanKind",
    "QueryPlan",
    "RowWindowCall",
    "TumblingWindow",
    "parse_duration_ms",
    "plan_job",
]

BATCH = "__batch"
ROW = "__rn"
KEY = "__k{}"
ARG = "__a{}"
AGG = "__agg{}"
WINDOW_START = "__ws"
WINDOW_END = "__we"
EVENT_TIME = "__et"

_INTERVAL_UNIT_MS = {
    "MILLISECOND": 1,
    "MILLISECONDS": 1,
    "SECOND": 1000,
    "SECONDS": 1000,
    "MINUTE": 60_000,
    "MINUTES": 60_000,
    "HOUR": 3_600_000,
    "HOURS": 3_600_000,
    "DAY": 86_400_000,
    "DAYS": 86_400_000,
}
_WINDOW_CLAUSE = re.compile(r"\bWINDOW\s+(TUMBLING|SLIDING|SESSION)\s*\(", re.IGNORECASE)
_ROWS_BUFFER = re.compile(r"\bROWS\s+WINDOW\s+BUFFER\s+(\d+)\s+ROWS\b", re.IGNORECASE)
_SYSTEM_WINDOW_COLUMNS = {"_window_start": WINDOW_START, "_window_end": WINDOW_END}
_SUPPORTED_AGGS: dict[type[exp.Expr], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Stddev: "stddev",
    exp.StddevSamp: "stddev",
    exp.StddevPop: "stddev_pop",
    exp.FirstValue: "first_value",
    exp.LastValue: "last_value",
    exp.First: "first_value",
    exp.Last: "last_value",
}
_ROW_FUNCS = {
    exp.Lag: "lag",
    exp.Lead: "lead",
    exp.RowNumber: "row_number",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Count: "count",
}
_RANKS = {"RANK": "rank", "DENSE_RANK": "dense_rank"}


class PlanKind(StrEnum):
    STATELESS = "stateless"
    AGGREGATE = "aggregate"
    ROW_WINDOW = "row_window"


@dataclass(frozen=True, slots=True)
class AggregateCall:
    """One aggregate of the SELECT/HAVING: its function and its argument column (`__aN`)."""

    index: int
    func: str
    arg: str | None
    distinct: bool = False

    @property
    def column(self) -> str:
        return AGG.format(self.index)


@dataclass(frozen=True, slots=True)
class TumblingWindow:
    size_ms: int
    time_sql: str


@dataclass(frozen=True, slots=True)
class RowWindowCall:
    """One `f(...) OVER (ROWS WINDOW BUFFER N ROWS ...)` of a row-window query."""

    index: int
    func: str
    arg: str | None
    offset: int
    default_sql: str | None
    buffer_rows: int
    partition_sql: tuple[str, ...]
    order_sql: tuple[str, ...]

    @property
    def column(self) -> str:
        return f"__w{self.index}"


@dataclass(slots=True)
class QueryPlan:
    """Everything the engine needs to run one job's SELECT on micro-batches."""

    kind: PlanKind
    source: str
    output_columns: list[str]
    select_sql: list[str]
    where_sql: str | None = None
    limit: int | None = None
    emit: EmitMode | None = None
    keys: list[str] = field(default_factory=list)
    aggregates: list[AggregateCall] = field(default_factory=list)
    having_sql: str | None = None
    order_sql: list[str] = field(default_factory=list)
    window: TumblingWindow | None = None
    row_calls: list[RowWindowCall] = field(default_factory=list)
    casts: list[tuple[str, str, str, bool, str]] = field(default_factory=list)
    """(CAST sql, argument sql, target type, in WHERE?, the row expression around it)
    for isolating failing rows."""


def _extract_window_clause(sql: str) -> tuple[str, str | None, str | None]:
    """Remove `WINDOW TUMBLING(...)`; return (sql, kind, inner arguments)."""
    match = _WINDOW_CLAUSE.search(sql)
    if match is None:
        return sql, None, None
    depth, i = 1, match.end()
    while i < len(sql) and depth:
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        i += 1
    if depth:
        raise PlanError("unbalanced parenthesis in WINDOW clause", match.start())
    blanked = sql[: match.start()] + _blank(sql[match.start() : i]) + sql[i:]
    return blanked, match.group(1).upper(), sql[match.end() : i - 1]


def _blank(text: str) -> str:
    """`text` as spaces, line breaks kept: offsets after it still point into the SELECT."""
    return re.sub(r"[^\n]", " ", text)


def _window_size_ms(arg: str) -> int:
    arg = arg.strip()
    if arg.upper().startswith("INTERVAL"):
        try:
            node = sqlglot.parse_one(arg, read="duckdb")
        except (ParseError, TokenError) as exc:
            raise PlanError(f"unsupported window interval {arg!r}") from exc
        if isinstance(node, exp.Interval):
            unit = node.unit.name.upper() if node.unit is not None else ""
            if unit in _INTERVAL_UNIT_MS and node.this is not None:
                return int(float(node.this.name) * _INTERVAL_UNIT_MS[unit])
        raise PlanError(f"unsupported window interval {arg!r}")
    # A window size needs its unit: a bare number would silently mean milliseconds.
    if arg[-1:].isalpha():
        try:
            return parse_duration_ms(arg)
        except ConfigurationError:
            pass
    raise PlanError(f"invalid duration {arg!r}; expected a number and one of ms, s, m, h, d")


def _tumbling(args: str, job: JobSpec, source: str) -> TumblingWindow:
    parts = [p.strip() for p in _split_top_level(args)]
    if len(parts) == 1:
        time_sql = job.event_time_field or job.properties.get("event.time.field") or "_timestamp"
        size = _window_size_ms(parts[0])
    elif len(parts) == 2:
        time_sql, size = parts[0], _window_size_ms(parts[1])
    else:
        raise PlanError(f"TUMBLING takes (size) or (time_column, size), got ({args})")
    if size <= 0:
        raise PlanError("window size must be positive")
    # The event time is job SQL too: same sandbox, same source qualifiers.
    try:
        probe = sqlglot.parse_one(f"SELECT {time_sql} FROM {_quote(source)}", read="duckdb")
    except (ParseError, TokenError) as exc:
        raise PlanError(f"invalid event time {time_sql!r} in TUMBLING") from exc
    try:
        check_sandbox(probe, {source})
    except SandboxError as exc:
        raise PlanError(str(exc)) from exc
    assert isinstance(probe, exp.Select)
    _unqualify(probe, source)
    return TumblingWindow(size_ms=size, time_sql=_sql(probe.selects[0]))


def _split_top_level(text: str) -> list[str]:
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _sql(node: exp.Expr) -> str:
    return node.sql(dialect="duckdb")


def _output_name(node: exp.Expr, position: int) -> str:
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    return f"col{position}"


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
_ROW_FUNCTION_TYPES = (exp.Lag, exp.Lead, exp.RowNumber, exp.Rank, exp.DenseRank)


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
        raise PlanError(f"LIMIT must be a non-negative integer literal, not {_sql(value)}")
    return int(value.this)


def _unqualify(tree: exp.Select, source: str) -> None:
    """Drop a leading `src.` / `alias.` from column references: the batch is the only table.

    Any other dotted name (`payload.price`) is left alone: DuckDB reads it as a struct
    field.
    """
    from_ = tree.args.get("from_")
    names = {source}
    if from_ is not None and isinstance(from_.this, exp.Table) and from_.this.alias:
        names.add(from_.this.alias)
    for column in list(tree.find_all(exp.Column)):
        parts = column.parts
        if len(parts) < 2 or parts[0].name not in names:
            continue
        rest = parts[1:]
        if isinstance(rest[-1], exp.Star):
            column.replace(exp.Star())
            continue
        keys = ("this", "table", "db", "catalog")
        column.replace(exp.Column(**dict(zip(keys, reversed(rest), strict=False))))


def _is_row_function(node: exp.Expr) -> bool:
    if isinstance(node, exp.Anonymous):
        return node.name.upper() in _RANKS
    return isinstance(node, _ROW_FUNCTION_TYPES)


def plan_job(job: JobSpec) -> QueryPlan:
    """Plan `job.select_sql`; raises PlanError naming what is unsupported."""
    sql, window_kind, window_args = _extract_window_clause(job.select_sql)
    buffer_sizes = [int(n) for n in _ROWS_BUFFER.findall(sql)]
    sql = _ROWS_BUFFER.sub(lambda m: _blank(m.group()), sql)
    parsed = check_syntax(sql)
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
    if tree.args.get("distinct"):
        raise PlanError("SELECT DISTINCT is not supported on streams yet")
    _check_clauses(tree)
    _unqualify(tree, source)
    if any(isinstance(s, exp.Star) for s in tree.selects) and tree.args.get("group"):
        raise PlanError("SELECT * cannot be combined with GROUP BY")
    window = None
    if window_kind is not None:
        if window_kind != "TUMBLING":
            raise PlanError(f"WINDOW {window_kind} is not supported yet (TUMBLING is)")
        window = _tumbling(window_args or "", job, source)

    limit = _limit(tree)
    where = tree.args.get("where")
    if where is not None:
        if where.find(exp.Window) is not None:
            raise PlanError("window functions are not allowed in WHERE")
        aggregate = where.find(exp.AggFunc)
        if aggregate is not None:
            raise PlanError(
                f"aggregate {_sql(aggregate)} is not allowed in WHERE (filter groups with HAVING)"
            )
    where_sql = _sql(where.this) if where is not None else None
    plan_args = (job, tree, source, where_sql, limit)
    for node in tree.find_all(exp.Func):
        if _is_row_function(node) and not isinstance(node.parent, exp.Window):
            raise PlanError(
                f"{_sql(node)} needs OVER (ROWS WINDOW BUFFER N ROWS [PARTITION BY ...] "
                "[ORDER BY ...])"
            )
    # Any aggregate outside OVER (...) makes this a GROUP BY query; an unsupported one
    # is rejected there rather than silently computed per batch.
    has_aggregates = any(not isinstance(a.parent, exp.Window) for a in tree.find_all(exp.AggFunc))
    windows = list(tree.find_all(exp.Window))
    if tree.args.get("group") is not None or has_aggregates or window is not None:
        if windows:
            raise PlanError("window functions cannot be combined with GROUP BY or aggregates yet")
        plan = _plan_aggregate(*plan_args, window)
    elif windows:
        plan = _plan_row_window(*plan_args, windows, buffer_sizes)
    else:
        if tree.args.get("order") is not None:
            raise PlanError(
                "ORDER BY on a stream is not supported: a stream emits in arrival order "
                "(use it with GROUP BY ... EMIT FINAL)"
            )
        plan = QueryPlan(
            kind=PlanKind.STATELESS,
            source=source,
            output_columns=[],
            select_sql=[],
            where_sql=where_sql,
            limit=limit,
            emit=job.emit,
        )
        for i, item in enumerate(tree.selects):
            if isinstance(item, exp.Star):
                plan.select_sql.append("*")
                plan.output_columns.append("*")
            else:
                plan.select_sql.append(f"{_sql(_unalias(item))} AS {_quote(_output_name(item, i))}")
                plan.output_columns.append(_output_name(item, i))
    plan.casts = _collect_casts(tree)
    check_planned_sql(_planned_sql(plan), tree)
    return plan


def _unalias(node: exp.Expr) -> exp.Expr:
    return node.this if isinstance(node, exp.Alias) else node


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
        if isinstance(cast, exp.TryCast) or cast.find(exp.AggFunc, exp.Window) is not None:
            continue  # a CAST of a group's or a window's value is not a row's failure
        in_where = where is not None and cast.find_ancestor(exp.Where) is not None
        context = where.this if in_where and where is not None else _row_context(cast)
        out.append((_sql(cast), _sql(cast.this), _sql(cast.to), in_where, _sql(context)))
    return out


def _plan_aggregate(
    job: JobSpec,
    tree: exp.Select,
    source: str,
    where_sql: str | None,
    limit: int | None,
    window: TumblingWindow | None,
) -> QueryPlan:
    group = tree.args.get("group")
    group_exprs = list(group.expressions) if group is not None else []
    aliases = {item.alias: _unalias(item) for item in tree.selects if isinstance(item, exp.Alias)}
    keys: list[str] = []
    key_nodes: list[exp.Expr] = []
    for g in group_exprs:
        # GROUP BY may name a SELECT alias; group on its expression.
        if isinstance(g, exp.Column) and not g.table and g.name in aliases:
            g = aliases[g.name]
        key_nodes.append(g)
        keys.append(_sql(g))
    aggregates: list[AggregateCall] = []

    def rewrite(node: exp.Expr) -> exp.Expr:
        for idx, key in enumerate(key_nodes):
            if node == key:
                return exp.column(KEY.format(idx))
        if isinstance(node, exp.Column) and node.name in _SYSTEM_WINDOW_COLUMNS and window:
            return exp.column(_SYSTEM_WINDOW_COLUMNS[node.name])
        if isinstance(node, exp.Anonymous) and node.name.upper() in ("TUMBLE_START", "TUMBLE_END"):
            if window is None:
                raise PlanError(f"{node.name.upper()} needs a WINDOW TUMBLING clause")
            return exp.column(WINDOW_START if node.name.upper() == "TUMBLE_START" else WINDOW_END)
        agg_type = _SUPPORTED_AGGS.get(type(node))
        if agg_type is not None:
            return exp.column(_register_aggregate(node, agg_type, aggregates))
        if isinstance(node, exp.AggFunc):
            raise PlanError(
                f"aggregate {_sql(node)} is not supported (supported: COUNT(*), COUNT, "
                "COUNT(DISTINCT), SUM, AVG, MIN, MAX, STDDEV, STDDEV_POP, FIRST_VALUE, LAST_VALUE)"
            )
        return node

    select_sql, output_columns = [], []
    for i, item in enumerate(tree.selects):
        rewritten = _unalias(item).copy().transform(rewrite)
        _check_grouped(rewritten, f"SELECT item {_sql(item)}")
        select_sql.append(f"{_sql(rewritten)} AS {_quote(_output_name(item, i))}")
        output_columns.append(_output_name(item, i))
    having_sql = None
    if tree.args.get("having") is not None:
        having = tree.args["having"].this.copy()
        # HAVING may use SELECT aliases
        having = having.transform(
            lambda n: (
                aliases[n.name].copy()
                if isinstance(n, exp.Column) and not n.table and n.name in aliases
                else n
            )
        ).transform(rewrite)
        _check_grouped(having, "HAVING")
        having_sql = _sql(having)
    order_sql = []
    if tree.args.get("order") is not None:
        if job.emit == EmitMode.CHANGES:
            raise PlanError(
                "ORDER BY is not supported with EMIT CHANGES (rows emit in arrival order)"
            )
        for ordered in tree.args["order"].expressions:
            node = ordered.this
            if isinstance(node, exp.Column) and not node.table and node.name in output_columns:
                order_sql.append(_sql(ordered))
                continue
            rewritten = ordered.copy().transform(rewrite)
            _check_grouped(rewritten, "ORDER BY")
            order_sql.append(_sql(rewritten))
    emit = job.emit
    if emit is None:
        emit = EmitMode.FINAL if window is not None else EmitMode.CHANGES
    return QueryPlan(
        kind=PlanKind.AGGREGATE,
        source=source,
        output_columns=output_columns,
        select_sql=select_sql,
        where_sql=where_sql,
        limit=limit,
        emit=emit,
        keys=keys,
        aggregates=aggregates,
        having_sql=having_sql,
        order_sql=order_sql,
        window=window,
    )


def _register_aggregate(node: exp.Expr, func: str, aggregates: list[AggregateCall]) -> str:
    arg_node = node.this
    distinct = isinstance(arg_node, exp.Distinct)
    if distinct:
        if func != "count":
            raise PlanError(f"DISTINCT is only supported in COUNT(DISTINCT x), not {_sql(node)}")
        inner = arg_node.expressions
        if len(inner) != 1:
            raise PlanError("COUNT(DISTINCT ...) takes exactly one expression")
        arg_node = inner[0]
    if arg_node is None or isinstance(arg_node, exp.Star):
        if func != "count":
            raise PlanError(f"{func.upper()}(*) is not valid")
        arg, func = None, "count_star"
    else:
        if any(True for _ in arg_node.find_all(exp.AggFunc)):
            raise PlanError(f"nested aggregate in {_sql(node)}")
        arg = _sql(arg_node)
    if distinct:
        func = "count_distinct"
    for existing in aggregates:
        if existing.func == func and existing.arg == arg:
            return existing.column
    call = AggregateCall(index=len(aggregates), func=func, arg=arg, distinct=distinct)
    aggregates.append(call)
    return call.column


def _check_grouped(node: exp.Expr, where: str) -> None:
    for column in node.find_all(exp.Column):
        if not column.name.startswith("__"):
            raise PlanError(
                f"column {column.sql()} in {where} must appear in GROUP BY or inside an aggregate"
            )


def _plan_row_window(
    job: JobSpec,
    tree: exp.Select,
    source: str,
    where_sql: str | None,
    limit: int | None,
    windows: list[exp.Window],
    buffer_sizes: list[int],
) -> QueryPlan:
    if not buffer_sizes:
        raise PlanError(
            "window functions need a row window: OVER (ROWS WINDOW BUFFER N ROWS "
            "[PARTITION BY ...] [ORDER BY ...])"
        )
    if len(buffer_sizes) != len(windows):
        raise PlanError("every OVER (...) needs its own ROWS WINDOW BUFFER N ROWS")
    if tree.args.get("order") is not None:
        raise PlanError("ORDER BY on a stream is not supported: use ORDER BY inside OVER (...)")
    calls: list[RowWindowCall] = []
    replacements: dict[int, str] = {}
    for window, size in zip(windows, buffer_sizes, strict=True):
        if size < 1:
            raise PlanError("ROWS WINDOW BUFFER needs at least 1 row")
        func_node = window.this
        name = _RANKS.get(func_node.name.upper()) if isinstance(func_node, exp.Anonymous) else None
        if name is None:
            if isinstance(func_node, exp.Rank):
                name = "rank"
            elif isinstance(func_node, exp.DenseRank):
                name = "dense_rank"
            else:
                name = next((v for t, v in _ROW_FUNCS.items() if type(func_node) is t), None)
        if name is None:
            raise PlanError(f"{_sql(func_node)} is not supported over a row window")
        arg = offset_sql = default_sql = None
        offset = 1
        if name in ("lag", "lead", "sum", "avg", "min", "max", "count"):
            this = func_node.this
            arg = None if this is None or isinstance(this, exp.Star) else _sql(this)
            if name in ("lag", "lead"):
                offset_node = func_node.args.get("offset")
                if offset_node is not None:
                    offset_sql = _sql(offset_node)
                    if not offset_sql.isdigit():
                        raise PlanError(f"{name.upper()} offset must be an integer literal")
                    offset = int(offset_sql)
                default = func_node.args.get("default")
                default_sql = _sql(default) if default is not None else None
                if offset > size:
                    raise PlanError(
                        f"{name.upper()} offset {offset} exceeds the row buffer of {size} rows"
                    )
        partition = tuple(_sql(p) for p in window.args.get("partition_by") or [])
        order = window.args.get("order")
        order_sql = tuple(_sql(o) for o in order.expressions) if order is not None else ()
        if name in ("rank", "dense_rank") and len(order_sql) != 1:
            raise PlanError(f"{name.upper()} needs ORDER BY one expression inside OVER (...)")
        call = RowWindowCall(
            index=len(calls),
            func=name,
            arg=arg,
            offset=offset,
            default_sql=default_sql,
            buffer_rows=size,
            partition_sql=partition,
            order_sql=order_sql,
        )
        calls.append(call)
        replacements[id(window)] = call.column
    # copy() loses identity: match each window by its SQL text instead
    window_columns = {_sql(w): replacements[id(w)] for w in windows}
    select_sql, output_columns = [], []
    for i, item in enumerate(tree.selects):
        rewritten = _unalias(item).copy()
        rewritten = rewritten.transform(
            lambda n: exp.column(window_columns[_sql(n)]) if isinstance(n, exp.Window) else n
        )
        if isinstance(item, exp.Star):
            select_sql.append("*")
            output_columns.append("*")
            continue
        select_sql.append(f"{_sql(rewritten)} AS {_quote(_output_name(item, i))}")
        output_columns.append(_output_name(item, i))
    return QueryPlan(
        kind=PlanKind.ROW_WINDOW,
        source=source,
        output_columns=output_columns,
        select_sql=select_sql,
        where_sql=where_sql,
        limit=limit,
        emit=job.emit,
        row_calls=calls,
    )


def _planned_sql(plan: QueryPlan) -> str:
    """Every SQL piece of `plan` in one SELECT: what the engine's queries are made of."""
    items = list(plan.select_sql) + [f"({k})" for k in plan.keys]
    items += [f"({a.arg})" for a in plan.aggregates if a.arg is not None]
    if plan.having_sql:
        items.append(f"({plan.having_sql})")
    if plan.window is not None:
        items.append(f"({plan.window.time_sql})")
    order = list(plan.order_sql)
    for call in plan.row_calls:
        items += [f"({s})" for s in (call.arg, call.default_sql) if s is not None]
        items += [f"({s})" for s in call.partition_sql]
        order += call.order_sql
    where = f" WHERE {plan.where_sql}" if plan.where_sql else ""
    order_by = f" ORDER BY {', '.join(order)}" if order else ""
    return f"SELECT {', '.join(items)} FROM {BATCH}{where}{order_by}"
