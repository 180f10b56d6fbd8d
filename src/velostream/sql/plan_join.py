"""Plan a SELECT's table sides: stream–table JOINs and subqueries over tables.

The first source of FROM is the stream; every other relation the query reads (a JOIN,
or the FROM of an `IN (SELECT ...)`, `EXISTS (...)` or scalar subquery) must be a
*table side*: a bounded source of the job (a `file_source` without `watch`), a Kafka
topic read as a compacted table (its latest row per key), or an in-app table of the
application (a sinkless `CREATE TABLE`). The engine loads each into
the job's DuckDB as `__table_<name>` before the stream is read and runs the batch's
first query over `__batch AS <stream alias>` joined to them (`QueryPlan.from_sql`), so
the user's qualified names (`t.symbol`, `i.name`) bind as written.

Subqueries are taken out of the tree while the planners split it (an aggregate inside
`(SELECT MAX(x) FROM t)` is not the job's aggregate) and put back, as SQL, into the
planned pieces (`fill_subqueries`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from enum import Enum
from typing import Any

from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.model import ConnectorConfig, JobSpec
from velostream.sql.plan import BATCH, ROW, TABLE, QueryPlan, TableSide
from velostream.sql.plan_sql import output_name, quote, start_of, to_sql

__all__ = ["TableSides", "fill_subqueries", "flatten_join", "plan_table_sides"]

# A subquery's stand-in while the planners work: marked with a digest of the query, so
# that no text of the user's (a string literal, say) is ever taken for one.
_PLACEHOLDER = "__subquery_{}_{}__"
_PLACEHOLDER_SQL = '"?__subquery_{}_(\\d+)__"?'
_STREAM_KINDS = "an unbounded source cannot be read as a table"


@dataclasses.dataclass(slots=True)
class TableSides:
    """What `plan_table_sides` found: the FROM to run, the tables, the subqueries' SQL."""

    from_sql: str
    tables: list[TableSide]
    subqueries: list[str]
    joined: bool
    marker: str = ""
    """The digest in the subqueries' placeholders (`_PLACEHOLDER`)."""


def _refusal(job: JobSpec, name: str, stream: str) -> str | None:
    """Why source `name` cannot be a table side of `job` (None: it can)."""
    if name.lower() == stream.lower():
        return (
            f"{name} is the statement's stream: a stream cannot be joined to itself or read "
            "in a subquery (join it to a table: a file source without watch, or an in-app table)"
        )
    if any(t.statement_name.lower() == name.lower() for t in job.tables):
        return None
    connector = next((c for c in job.sources if c.name.lower() == name.lower()), None)
    if connector is None:
        return f"{name} is neither a declared source nor an in-app table defined earlier"
    return _unbounded(connector)


def _unbounded(connector: ConnectorConfig) -> str | None:
    kind = connector.type
    watched = str(connector.properties.get("watch", "false")).strip().lower()
    if kind == "file_source" and watched in ("true", "1", "yes", "on"):
        return (
            f"{connector.name} is a watched file (unbounded): {_STREAM_KINDS}; join the "
            f"stream to {connector.name} without 'watch' (a table, reloaded when it changes)"
        )
    if kind not in ("file_source", "memory_source", "kafka_source"):
        return f"{connector.name} ({kind}) cannot be a table side: use a file_source"
    return None


def _check_join(join: exp.Join) -> None:
    side = (join.args.get("side") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    method = (join.args.get("method") or "").upper()
    at = start_of(join)
    if side in ("RIGHT", "FULL"):
        raise PlanError(
            f"{side} OUTER JOIN against a table is not supported: write the stream first "
            "in FROM and use LEFT JOIN (or INNER JOIN)",
            at,
        )
    if method or kind not in ("", "INNER", "OUTER") or (kind == "OUTER" and side != "LEFT"):
        what = " ".join(w for w in (method, side, kind) if w) or "a comma join"
        raise PlanError(
            f"{what} JOIN is not supported: use [INNER | LEFT [OUTER]] JOIN table ON condition",
            at,
        )
    if join.args.get("on") is None and not join.args.get("using"):
        raise PlanError(
            "a JOIN needs its condition: [INNER | LEFT [OUTER]] JOIN table ON condition "
            "(a comma or CROSS join is not supported)",
            at,
        )
    if not isinstance(join.this, exp.Table) or not isinstance(join.this.this, exp.Identifier):
        raise PlanError(
            f"JOIN {to_sql(join.this)}: join a declared source or an in-app table by its name "
            "(a subquery or table function is not supported)",
            at,
        )
    if join.this.args.get("db") or join.this.args.get("catalog"):
        raise PlanError(f"JOIN {to_sql(join.this)}: name a declared source or an in-app table", at)


class _Planner:
    def __init__(self, tree: exp.Select, job: JobSpec, stream: str) -> None:
        self.tree, self.job, self.stream = tree, job, stream
        self.tables: dict[str, TableSide] = {}

    def table(self, node: exp.Table, what: str) -> None:
        """Check `node` names a table side; make it read that side's relation."""
        name = node.name
        reason = _refusal(self.job, name, self.stream)
        if reason is not None:
            raise PlanError(f"{what} {name}: {reason}", start_of(node))
        key = name.lower()
        side = self.tables.get(key)
        if side is None:
            relation = TABLE.format(key)
            side = self.tables[key] = TableSide(name=name, relation=relation)
        alias = node.alias or name
        node.replace(
            exp.Table(this=exp.to_identifier(side.relation), alias=exp.to_identifier(alias))
        )

    def subquery(self, node: exp.Expr) -> str:
        for inner in node.find_all(exp.Join):
            _check_join(inner)
        for table in list(node.find_all(exp.Table)):
            if not isinstance(table.this, exp.Identifier):
                raise PlanError(
                    f"subquery FROM {to_sql(table)}: read a table by its name", start_of(table)
                )
            self.table(table, "subquery reads")
        return f"({to_sql(node)})"


def plan_table_sides(tree: exp.Select, job: JobSpec, stream: str) -> TableSides | None:
    """Check and rewrite `tree`'s JOINs and subqueries in place; None if it has neither.

    PlanError at a join or a table that cannot be honoured: RIGHT/FULL, CROSS and other
    join kinds, an unbounded table side, a subquery reading the stream.
    """
    joins = list(tree.args.get("joins") or [])
    outermost: list[exp.Expr] = []
    for node in tree.find_all(exp.Subquery, exp.Exists, exp.In):
        if isinstance(node, exp.In) and node.args.get("query") is None:
            continue
        if any(node is not o and _inside(node, o) for o in outermost):
            continue
        if isinstance(node, exp.Subquery) and isinstance(node.parent, exp.In):
            continue  # its IN is taken whole
        outermost.append(node)
    if not joins and not outermost:
        return None
    marker = hashlib.sha256(to_sql(tree).encode()).hexdigest()[:12]
    planner = _Planner(tree, job, stream)
    for join in joins:
        _check_join(join)
        planner.table(join.this, "JOIN")
    subqueries: list[str] = []
    for found in outermost:
        sql = planner.subquery(found)
        placeholder: exp.Expr = exp.column(_PLACEHOLDER.format(marker, len(subqueries)))
        parent = found.parent
        if isinstance(parent, exp.Select) and found in parent.expressions:
            placeholder = exp.alias_(placeholder, f"col{parent.expressions.index(found)}")
        found.replace(placeholder)
        subqueries.append(sql)
    from_ = tree.args.get("from_")
    assert from_ is not None and isinstance(from_.this, exp.Table)
    stream_alias = from_.this.alias or from_.this.name
    from_sql = f"{BATCH} AS {quote(stream_alias)}"
    for join in joins:
        on = join.args.get("on")
        using = join.args.get("using")
        side = "LEFT JOIN" if (join.args.get("side") or "").upper() == "LEFT" else "JOIN"
        condition = (
            f" ON {to_sql(on)}"
            if on is not None
            else f" USING ({', '.join(to_sql(u) for u in using)})"
        )
        from_sql += f" {side} {to_sql(join.this)}{condition}"
    tree.set("joins", None)
    return TableSides(
        from_sql=from_sql,
        tables=list(planner.tables.values()),
        subqueries=subqueries,
        joined=bool(joins),
        marker=marker,
    )


def flatten_join(tree: exp.Select, sides: TableSides) -> str:
    """Rewrite `tree` over the joined rows as one table; return the query making them.

    Row windows keep rows across batches in one table of their own, where `t.price`
    and `i.price` cannot be told apart: every column the query reads (and every
    subquery) becomes a column `__jN` of the joined rows, computed first by the query
    returned, which also keeps each stream row's `__rn`.
    """
    for index, item in enumerate(list(tree.selects)):
        if not isinstance(item, exp.Alias):
            item.replace(exp.alias_(item.copy(), output_name(item, index), quoted=True))
    names: dict[str, str] = {}
    for column in list(tree.find_all(exp.Column)):
        sql = to_sql(column)
        name = names.setdefault(sql, f"__j{len(names)}")
        column.replace(exp.column(name))
    items = [f"{sql} AS {name}" for sql, name in names.items()]
    return f"SELECT {', '.join([*items, ROW])} FROM {sides.from_sql}"


def _inside(node: exp.Expr, ancestor: exp.Expr) -> bool:
    parent = node.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


def fill_subqueries(plan: QueryPlan, sides: TableSides) -> None:
    """Put the subqueries' SQL back into `plan`'s pieces, where the placeholders are."""

    pattern = re.compile(_PLACEHOLDER_SQL.format(sides.marker))

    def fill(text: str) -> str:
        return pattern.sub(lambda m: sides.subqueries[int(m.group(1))], text)

    _fill_fields(plan, fill)
    # A row window reads the joined rows (`prejoin_sql`) as its batch.
    plan.from_sql = BATCH if plan.prejoin_sql else fill(sides.from_sql)
    plan.tables = sides.tables


def _fill_fields(obj: Any, fill: Callable[[str], str]) -> None:
    for f in dataclasses.fields(obj):
        if f.name in ("from_sql", "tables", "kind", "emit"):
            continue
        value = getattr(obj, f.name)
        new = _filled(value, fill)
        if new is not value:
            try:
                setattr(obj, f.name, new)
            except dataclasses.FrozenInstanceError:
                object.__setattr__(obj, f.name, new)


def _filled(value: Any, fill: Callable[[str], str]) -> Any:
    if isinstance(value, Enum):
        return value
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, list):
        return [_filled(v, fill) for v in value]
    if isinstance(value, tuple):
        return tuple(_filled(v, fill) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        copy = dataclasses.replace(value)
        _fill_fields(copy, fill)
        return copy
    return value
