"""Plan row-window queries: `f(...) OVER (ROWS WINDOW BUFFER N ROWS ...)`.

Each window call becomes a `__wN` column the engine computes over the batch joined
with the last N rows it kept per partition. The `ROWS WINDOW BUFFER` clauses were
blanked out of the text before parsing: the N-th clause belongs to the N-th window
call in the text (`in_text_order`), whatever order the tree lists them in.
"""

from __future__ import annotations

from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.model import JobSpec
from velostream.sql.plan import PlanKind, QueryPlan, RowWindowCall
from velostream.sql.plan_sql import output_name, plan_star, quote, start_of, to_sql, unalias

__all__ = ["in_text_order", "is_row_function", "plan_row_window"]

_ROW_FUNCS = {
    exp.Lag: "lag",
    exp.Lead: "lead",
    exp.RowNumber: "row_number",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Count: "count",
    exp.Stddev: "stddev_samp",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Variance: "var_samp",
    exp.VariancePop: "var_pop",
}
# Aggregates over the frame: one argument, `COUNT(*)` the only star.
_FRAME_AGGREGATES = frozenset(_ROW_FUNCS.values()) - {"lag", "lead", "row_number"}
_RANKS = {"RANK": "rank", "DENSE_RANK": "dense_rank"}
_ROW_FUNCTION_TYPES = (exp.Lag, exp.Lead, exp.RowNumber, exp.Rank, exp.DenseRank)


def is_row_function(node: exp.Expr) -> bool:
    """Whether `node` is a function that only makes sense over a row window."""
    if isinstance(node, exp.Anonymous):
        return node.name.upper() in _RANKS
    return isinstance(node, _ROW_FUNCTION_TYPES)


def in_text_order(windows: list[exp.Window]) -> list[exp.Window]:
    """`windows` in the order their calls appear in the SQL text."""
    return sorted(windows, key=lambda window: start_of(window) or 0)


def plan_row_window(
    job: JobSpec,
    tree: exp.Select,
    source: str,
    where_sql: str | None,
    limit: int | None,
    windows: list[exp.Window],
    buffer_sizes: list[int],
) -> QueryPlan:
    """Plan a SELECT whose `windows` each carry a ROWS WINDOW BUFFER of `buffer_sizes`."""
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
    for window, size in zip(windows, buffer_sizes, strict=True):
        if size < 1:
            raise PlanError("ROWS WINDOW BUFFER needs at least 1 row")
        if window.args.get("spec") is not None:
            raise PlanError(
                f"a window frame ({to_sql(window.args['spec'])}) is not supported: the frame "
                "of a row window is its ROWS WINDOW BUFFER N ROWS"
            )
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
            raise PlanError(f"{to_sql(func_node)} is not supported over a row window")
        arg = offset_sql = default_sql = None
        offset = 1
        if name in ("lag", "lead") or name in _FRAME_AGGREGATES:
            this = func_node.this
            if isinstance(this, exp.Star) and name != "count":
                raise PlanError(f"{name.upper()}(*) is not valid")
            arg = None if this is None or isinstance(this, exp.Star) else to_sql(this)
            if name in ("lag", "lead"):
                offset_node = func_node.args.get("offset")
                if offset_node is not None:
                    offset_sql = to_sql(offset_node)
                    if not offset_sql.isdigit():
                        raise PlanError(f"{name.upper()} offset must be an integer literal")
                    offset = int(offset_sql)
                default = func_node.args.get("default")
                default_sql = to_sql(default) if default is not None else None
                if offset > size:
                    raise PlanError(
                        f"{name.upper()} offset {offset} exceeds the row buffer of {size} rows"
                    )
        partition = tuple(to_sql(p) for p in window.args.get("partition_by") or [])
        order = window.args.get("order")
        ordered = list(order.expressions) if order is not None else []
        order_sql = tuple(to_sql(o) for o in ordered)
        order_keys = tuple(
            (
                to_sql(o.this),
                f"{'DESC' if o.args.get('desc') else 'ASC'} "
                f"NULLS {'FIRST' if o.args.get('nulls_first') else 'LAST'}",
            )
            for o in ordered
        )
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
            order_keys=order_keys,
        )
        calls.append(call)
    # Each window becomes its column in a copy of the tree (the same walk finds the
    # copy's windows in the same order; two calls with the same text stay two).
    work = tree.copy()
    for window, call in zip(in_text_order(list(work.find_all(exp.Window))), calls, strict=True):
        window.replace(exp.column(call.column))
    select_sql, output_columns, stars = [], [], []
    for i, (item, rewritten) in enumerate(zip(tree.selects, work.selects, strict=True)):
        if isinstance(rewritten, exp.Star):
            select_sql.append("*")
            output_columns.append("*")
            stars.append(plan_star(rewritten))
            continue
        select_sql.append(f"{to_sql(unalias(rewritten))} AS {quote(output_name(item, i))}")
        output_columns.append(output_name(item, i))
    return QueryPlan(
        kind=PlanKind.ROW_WINDOW,
        source=source,
        output_columns=output_columns,
        select_sql=select_sql,
        where_sql=where_sql,
        limit=limit,
        emit=job.emit,
        row_calls=calls,
        stars=stars,
    )
