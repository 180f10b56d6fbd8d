"""Plan GROUP BY queries (with or without a time window: tumbling, sliding, session).

Group keys become `__kN` columns, each aggregate's argument an `__aN` column and its
value an `__aggN` column; SELECT, HAVING and ORDER BY are rewritten over those, so the
engine can merge per-batch partial aggregates into carried per-key state.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from velostream.errors import ConfigurationError, PlanError, SandboxError
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import EmitMode, JobSpec
from velostream.sql.plan import (
    KEY,
    WINDOW_END,
    WINDOW_START,
    AggregateCall,
    PlanKind,
    QueryPlan,
    TumblingWindow,
)
from velostream.sql.plan_sql import (
    blank,
    output_name,
    quote,
    start_of,
    to_sql,
    unalias,
    unqualify,
)
from velostream.sql.sandbox import check_sandbox

__all__ = [
    "MAX_SLIDING_WINDOWS",
    "extract_window_clause",
    "plan_aggregate",
    "time_window",
    "tumbling_window",
]

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
    exp.Variance: "variance",
    exp.VariancePop: "var_pop",
    exp.FirstValue: "first_value",
    exp.LastValue: "last_value",
    exp.First: "first_value",
    exp.Last: "last_value",
    exp.GroupConcat: "string_agg",
}


def extract_window_clause(sql: str) -> tuple[str, str | None, str | None]:
    """Remove `WINDOW TUMBLING|SLIDING|SESSION(...)`; return (sql, kind, inner arguments)."""
    match = _WINDOW_CLAUSE.search(sql)
    if match is None:
        return sql, None, None
    depth, i = 1, match.end()
    while i < len(sql) and depth:
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        i += 1
    if depth:
        raise PlanError("unbalanced parenthesis in WINDOW clause", match.start())
    blanked = sql[: match.start()] + blank(sql[match.start() : i]) + sql[i:]
    return blanked, match.group(1).upper(), sql[match.end() : i - 1]


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


#: The arguments each window kind takes, without and with its event-time column first.
_FORMS = {
    "TUMBLING": "(size) or (time_column, size)",
    "SLIDING": "(size, advance) or (time_column, size, advance)",
    "SESSION": "(gap) or (time_column, gap)",
}
_DURATIONS = {"TUMBLING": 1, "SLIDING": 2, "SESSION": 1}
#: Each row is counted in size / advance sliding windows: at most this many.
MAX_SLIDING_WINDOWS = 10_000


def time_window(kind: str, args: str, job: JobSpec, source: str) -> TumblingWindow:
    """The window of `TUMBLING(...)`, `SLIDING(...)` or `SESSION(...)` (see `_FORMS`)."""
    parts = [p.strip() for p in _split_top_level(args)]
    wanted = _DURATIONS[kind]
    if kind == "SESSION" and len(parts) == 3:
        raise PlanError(
            f"SESSION({args.strip()}): a partition key argument is not supported; sessions "
            "are kept per GROUP BY key: write SESSION(time_column, gap) ... GROUP BY key"
        )
    if len(parts) == wanted:
        time_sql = job.event_time_field or job.properties.get("event.time.field") or "_timestamp"
    elif len(parts) == wanted + 1:
        time_sql, parts = parts[0], parts[1:]
    else:
        raise PlanError(f"{kind} takes {_FORMS[kind]}, got ({args})")
    sizes = [_window_size_ms(part) for part in parts]
    if any(size <= 0 for size in sizes):
        raise PlanError(f"{'session gap' if kind == 'SESSION' else 'window size'} must be positive")
    size, advance = sizes[0], sizes[-1] if kind == "SLIDING" else 0
    if kind == "SLIDING" and size % advance:
        # Flink SQL's HOP (slicing) refuses the same: a window is a whole number of steps.
        raise PlanError(
            f"SLIDING size {parts[0]} is not a multiple of its advance {parts[1]}: choose an "
            "advance that divides the size, e.g. SLIDING(5m, 1m)"
        )
    if kind == "SLIDING" and size // advance > MAX_SLIDING_WINDOWS:
        raise PlanError(
            f"SLIDING({parts[0]}, {parts[1]}) puts each row in {size // advance} windows; "
            f"at most {MAX_SLIDING_WINDOWS} are supported: choose a larger advance"
        )
    # The event time is job SQL too: same sandbox, same source qualifiers.
    try:
        probe = sqlglot.parse_one(f"SELECT {time_sql} FROM {quote(source)}", read="duckdb")
    except (ParseError, TokenError) as exc:
        raise PlanError(f"invalid event time {time_sql!r} in {kind}") from exc
    try:
        check_sandbox(probe, {source})
    except SandboxError as exc:
        raise PlanError(str(exc)) from exc
    assert isinstance(probe, exp.Select)
    unqualify(probe, source)
    return TumblingWindow(
        size_ms=size, time_sql=to_sql(probe.selects[0]), kind=kind, advance_ms=advance
    )


def tumbling_window(args: str, job: JobSpec, source: str) -> TumblingWindow:
    """The window of `TUMBLING(size)` or `TUMBLING(time_column, size)`."""
    return time_window("TUMBLING", args, job, source)


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


def plan_aggregate(
    job: JobSpec,
    tree: exp.Select,
    source: str,
    where_sql: str | None,
    limit: int | None,
    window: TumblingWindow | None,
) -> QueryPlan:
    """Plan a GROUP BY (or global) aggregate, with its tumbling `window` if any."""
    group = tree.args.get("group")
    group_exprs = list(group.expressions) if group is not None else []
    aliases = {item.alias: unalias(item) for item in tree.selects if isinstance(item, exp.Alias)}
    keys: list[str] = []
    key_nodes: list[exp.Expr] = []
    for g in group_exprs:
        # GROUP BY may name a SELECT alias; group on its expression.
        if isinstance(g, exp.Column) and not g.table and g.name in aliases:
            g = aliases[g.name]
        key_nodes.append(g)
        keys.append(to_sql(g))
    aggregates: list[AggregateCall] = []

    def rewrite(node: exp.Expr) -> exp.Expr:
        for idx, key in enumerate(key_nodes):
            if node == key:
                return exp.column(KEY.format(idx))
        if isinstance(node, exp.Column) and node.name in _SYSTEM_WINDOW_COLUMNS and window:
            return exp.column(_SYSTEM_WINDOW_COLUMNS[node.name])
        if isinstance(node, exp.Anonymous) and node.name.upper() in ("TUMBLE_START", "TUMBLE_END"):
            if window is None:
                raise PlanError(
                    f"{node.name.upper()} needs a WINDOW TUMBLING, SLIDING or SESSION clause"
                )
            return exp.column(WINDOW_START if node.name.upper() == "TUMBLE_START" else WINDOW_END)
        agg_type = _SUPPORTED_AGGS.get(type(node))
        if agg_type is not None:
            return exp.column(_register_aggregate(node, agg_type, aggregates))
        if isinstance(node, exp.AggFunc):
            raise PlanError(
                f"aggregate {to_sql(node)} is not supported (supported: COUNT(*), COUNT, "
                "COUNT(DISTINCT), SUM, AVG, MIN, MAX, STDDEV, STDDEV_POP, VARIANCE, VAR_POP, "
                "FIRST_VALUE, LAST_VALUE, LISTAGG/STRING_AGG)"
            )
        return node

    select_sql, output_columns = [], []
    for i, item in enumerate(tree.selects):
        rewritten = unalias(item).copy().transform(rewrite)
        _check_grouped(rewritten, f"SELECT item {to_sql(item)}")
        select_sql.append(f"{to_sql(rewritten)} AS {quote(output_name(item, i))}")
        output_columns.append(output_name(item, i))
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
        having_sql = to_sql(having)
    emit = job.emit
    if emit is None:
        emit = EmitMode.FINAL if window is not None else EmitMode.CHANGES
    order_sql = []
    if tree.args.get("order") is not None:
        if emit == EmitMode.CHANGES:
            default = (
                "" if job.emit is not None else " (the default of a GROUP BY without a window)"
            )
            raise PlanError(
                f"ORDER BY is not supported with EMIT CHANGES{default}: each input row emits "
                "its group's new values as it arrives; add EMIT FINAL to emit the groups "
                "sorted when the input ends (with a window: each window's groups when it closes)",
                start_of(tree.args["order"]),
            )
        for ordered in tree.args["order"].expressions:
            node = ordered.this
            if isinstance(node, exp.Column) and not node.table and node.name in output_columns:
                order_sql.append(to_sql(ordered))
                continue
            rewritten = ordered.copy().transform(rewrite)
            _check_grouped(rewritten, "ORDER BY")
            order_sql.append(to_sql(rewritten))
    if (
        window is not None
        and window.kind == "SESSION"
        and any(a.func == "string_agg" for a in aggregates)
    ):
        # Sessions aggregate their kept rows, outside the per-group bound of
        # listagg.max.bytes: an unbounded string is refused rather than let grow.
        raise PlanError(
            "LISTAGG/STRING_AGG in a SESSION window is not supported yet (its size bound "
            "is kept per group, not per session): use it with TUMBLING or SLIDING windows"
        )
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


def _separator(node: exp.Expr) -> str:
    """LISTAGG/STRING_AGG's separator: a string literal, ',' when left out."""
    if isinstance(node.this, exp.Order):
        raise PlanError(
            f"{to_sql(node)}: LISTAGG/STRING_AGG concatenate in arrival order; ORDER BY "
            "(or WITHIN GROUP) is not supported: write LISTAGG(x, ',')",
            start_of(node),
        )
    extra = [k for k, v in node.args.items() if v and k not in ("this", "separator")]
    if extra:
        raise PlanError(f"{to_sql(node)} is not supported: write LISTAGG(x, ',')", start_of(node))
    separator = node.args.get("separator")
    if separator is None:
        return ","
    if not (isinstance(separator, exp.Literal) and separator.is_string):
        raise PlanError(
            f"the separator of {to_sql(node)} must be a string literal, as in LISTAGG(x, ', ')",
            start_of(node),
        )
    return str(separator.this)


def _register_aggregate(node: exp.Expr, func: str, aggregates: list[AggregateCall]) -> str:
    separator = _separator(node) if func == "string_agg" else None
    arg_node = node.this
    distinct = isinstance(arg_node, exp.Distinct)
    if distinct:
        if func != "count":
            raise PlanError(f"DISTINCT is only supported in COUNT(DISTINCT x), not {to_sql(node)}")
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
            raise PlanError(f"nested aggregate in {to_sql(node)}")
        arg = to_sql(arg_node)
    if distinct:
        func = "count_distinct"
    for existing in aggregates:
        if existing.func == func and existing.arg == arg and existing.separator == separator:
            return existing.column
    call = AggregateCall(
        index=len(aggregates), func=func, arg=arg, distinct=distinct, separator=separator
    )
    aggregates.append(call)
    return call.column


def _check_grouped(node: exp.Expr, where: str) -> None:
    for column in node.find_all(exp.Column):
        if not column.name.startswith("__"):
            raise PlanError(
                f"column {column.sql()} in {where} must appear in GROUP BY or inside an aggregate"
            )
