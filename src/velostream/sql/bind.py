"""Bind a job's planned queries to its source's columns, without running them.

Planning judges a SELECT on its own; whether its names resolve depends on the source.
Here the queries the engine builds from the plan (the stateless SELECT; a GROUP BY's
pre-query, aggregates and projection; a row window's calls and projection) are bound
by DuckDB over an empty table of the source's columns. An unknown column, type or
function, an argument of the wrong type, or a window without an event time is a
PlanError at the offending name in the user's SQL, in our words: never DuckDB's
"Binder Error", never a column of the engine's own (`__rn`).

What is known of a source decides what is judged (`SourceSchema`, from the datasource
layer, which may sample a source; this layer may not):

- its columns and their types (a file's header and first lines, inferred as the file
  source infers them): everything;
- its column names only (a header, no row yet): names, types and functions; the
  columns are bound as NULL, which converts to anything, and a problem that depends
  on their types is not reported;
- nothing (a Kafka topic of JSON, a file not there yet): types and functions only, the
  query's own column names standing in for the source's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from velostream.errors import PlanError
from velostream.sql.bind_errors import (
    MAX_LISTED,
    Problem,
    UserSql,
    read_problem,
    suggest,
    type_names,
    types_message,
    without_internal_names,
)
from velostream.sql.duckdb_check import binding_connection
from velostream.sql.model import JobSpec
from velostream.sql.plan import (
    ARG,
    BATCH,
    EVENT_TIME,
    KEY,
    ROW,
    WINDOW_END,
    WINDOW_START,
    AggregateCall,
    PlanKind,
    QueryPlan,
    RowWindowCall,
)
from velostream.sql.plan_sql import to_sql, unalias

__all__ = ["SchemaLookup", "SourceSchema", "bind_job"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSchema:
    """What validation knows of a source's columns before the job reads it."""

    #: The source's name in the job's SQL.
    source: str
    #: Its columns as the job's queries will see them (system columns included).
    columns: pa.Schema
    #: How they are known, to end a sentence: "as inferred from the first lines of t.csv".
    origin: str
    #: False when only the names are known (the types come with the first rows).
    typed: bool = True
    #: Why a column came out as text, by column: "'x' at t.csv:3 is not a number".
    evidence: Mapping[str, str] = field(default_factory=dict)


SchemaLookup = Callable[[JobSpec, str], "SourceSchema | None"]
"""The columns of a job's source (by its name), or None when they are not known."""


class _Knows(Enum):
    TYPES = "types"
    NAMES = "names"
    NOTHING = "nothing"


# What each kind of knowledge can judge (see the module docstring).
_NAMING = ("column", "qualifier", "member", "ambiguous")
_REPORTED = {
    _Knows.TYPES: frozenset({*_NAMING, "type", "function", "types", "other"}),
    _Knows.NAMES: frozenset({*_NAMING, "type", "function"}),
    _Knows.NOTHING: frozenset({"type", "function"}),
}
_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)


def _connection() -> duckdb.DuckDBPyConnection:
    return binding_connection()


Pieces = list[tuple[str, exp.Expr | None]]
"""Each piece of a query alone, with the user's SQL it comes from: to place an error."""


class _Binder:
    """Binds one job's planned queries; raises PlanError at the first problem."""

    def __init__(
        self,
        job: JobSpec,
        plan: QueryPlan,
        source: SourceSchema | None,
        tables: Mapping[str, SourceSchema] | None = None,
    ) -> None:
        self.job, self.plan, self.source = job, plan, source
        self.tables = dict(tables or {})
        self.user = UserSql(job.select_sql, plan.source, qualified=bool(plan.tables))
        if source is None:
            self.knows = _Knows.NOTHING
            names = self.user.column_names()
            if plan.window is not None:
                names += _column_names(plan.window.time_sql)
            unique = {n.lower(): n for n in names}  # DuckDB's names ignore case
            columns = pa.schema([(n, pa.null()) for n in unique.values()])
        elif not source.typed:
            self.knows = _Knows.NAMES
            columns = pa.schema([(f.name, pa.null()) for f in source.columns])
        else:
            self.knows = _Knows.TYPES
            columns = source.columns
        self.columns = columns
        self.con = _connection()
        self.con.register(BATCH, columns.empty_table())
        for side in plan.tables:
            table = self.tables[side.name]
            if not table.typed and self.knows is _Knows.TYPES:
                self.knows = _Knows.NAMES
            shown = table.columns if table.typed else _untyped(table.columns)
            self.con.register(side.relation, shown.empty_table())
        self.output: duckdb.DuckDBPyRelation | None = None
        described = self.con.sql(f"SELECT * FROM {BATCH}")
        pairs = zip(described.columns, described.types, strict=True)
        self.types = {column.lower(): str(kind) for column, kind in pairs}

    def close(self) -> None:
        self.con.close()

    # --- binding ---------------------------------------------------------------

    def _try(self, query: str) -> tuple[duckdb.DuckDBPyRelation | None, duckdb.Error | None]:
        try:
            return self.con.sql(query), None
        except duckdb.Error as exc:
            return None, exc

    def _step(self, query: str, pieces: Pieces) -> duckdb.DuckDBPyRelation | None:
        """Bind `query`; PlanError at a problem we may judge, else None if it did not bind."""
        relation, error = self._try(query)
        if error is None:
            return relation
        problem = read_problem(error)
        if problem.what in _REPORTED[self.knows]:
            raise self._error(problem, self._piece_of(problem, pieces))
        # A problem of types that are not known: a piece alone may still name a type or
        # a function that does not exist at all.
        for sql, node in pieces:
            _, failed = self._try(sql)
            if failed is not None and read_problem(failed).what in ("type", "function"):
                raise self._error(read_problem(failed), node)
        return None

    def _piece_of(self, problem: Problem, pieces: Pieces) -> exp.Expr | None:
        for sql, node in pieces:
            _, failed = self._try(sql)
            if failed is not None and read_problem(failed) == problem:
                return node
        return None

    def bind(self) -> None:
        if self.plan.prejoin_sql is not None:  # a row window reads the joined rows
            numbered = self.columns.append(pa.field(ROW, pa.int64()))
            self.con.register(BATCH, numbered.empty_table())
            joined = self._step(self.plan.prejoin_sql, [])
            if joined is None:
                return
            self.con.register(BATCH, joined.limit(0).to_arrow_table())
        where = f" WHERE {self.plan.where_sql}" if self.plan.where_sql else ""
        pieces: Pieces = []
        if self.plan.where_sql:
            pieces.append((f"SELECT 1 FROM {self.plan.from_sql}{where}", self.user.clause("where")))
        if self.plan.kind == PlanKind.AGGREGATE:
            self._aggregate(where, pieces)
        elif self.plan.kind == PlanKind.ROW_WINDOW:
            self._row_window(where, pieces)
        else:
            items = self.plan.select_list(self.columns.names, ())
            if self.plan.distinct_time_sql is not None:
                self._distinct_time(self.plan.distinct_time_sql)
            frm = self.plan.from_sql
            self.output = self._step(f"SELECT {items} FROM {frm}{where}", self._items(frm) + pieces)

    def _items(self, table: str) -> Pieces:
        return [
            (f"SELECT {item} FROM {table}", self.user.select(i))
            for i, item in enumerate(self.plan.select_sql)
            if item != "*"
        ]

    def _aggregate(self, where: str, pieces: Pieces) -> None:
        plan = self.plan
        time_type = self._event_time() if plan.window is not None else None
        keys = plan.keys or ["0"]
        items = [f"({k}) AS {KEY.format(i)}" for i, k in enumerate(keys)]
        items += [f"({c.arg}) AS {ARG.format(c.index)}" for c in plan.aggregates if c.arg]
        if plan.window is not None:
            items.append(f"({plan.window.time_sql}) AS {EVENT_TIME}")
        pre = f"SELECT {', '.join(items)} FROM {plan.from_sql}{where}"
        group = self.user.clause("group")
        by = list(group.expressions) if group is not None else []
        pieces = (
            [
                (
                    f"SELECT ({k}) FROM {plan.from_sql}",
                    self.user.node_of(k) or (by[i] if i < len(by) else None),
                )
                for i, k in enumerate(plan.keys)
            ]
            + [
                (f"SELECT ({c.arg}) FROM {plan.from_sql}", self.user.aggregate(c))
                for c in plan.aggregates
                if c.arg
            ]
            + pieces
        )
        if self._step(pre, pieces) is None:
            return
        key_cols = [KEY.format(i) for i in range(len(keys))]
        bound = "TIMESTAMP_MS" if (time_type or "").startswith("TIMESTAMP") else "BIGINT"
        window = (
            [f"CAST(NULL AS {bound}) AS {WINDOW_START}", f"CAST(NULL AS {bound}) AS {WINDOW_END}"]
            if plan.window is not None
            else []
        )
        aggregates = [f"{_aggregate_sql(c)} AS {c.column}" for c in plan.aggregates]
        grouped = (
            f"SELECT {', '.join(key_cols + window + aggregates)} FROM ({pre}) AS __pre "
            f"GROUP BY {', '.join(key_cols)}"
        )
        pieces = [
            (f"SELECT {_aggregate_sql(c)} FROM ({pre}) AS __pre", self.user.aggregate(c))
            for c in plan.aggregates
        ]
        if self._step(grouped, pieces) is None:
            return
        table = f"({grouped}) AS __grouped"
        having = f" WHERE {plan.having_sql}" if plan.having_sql else ""
        order = f" ORDER BY {', '.join(plan.order_sql)}" if plan.order_sql else ""
        pieces = self._items(table)
        if plan.having_sql:
            pieces.append((f"SELECT 1 FROM {table}{having}", self.user.clause("having")))
        if plan.order_sql:
            pieces.append((f"SELECT 1 FROM {table}{order}", self.user.clause("order")))
        self.output = self._step(
            f"SELECT {', '.join(plan.select_sql)} FROM {table}{having}{order}", pieces
        )

    def _row_window(self, where: str, pieces: Pieces) -> None:
        calls = self.plan.row_calls
        windows = self.user.windows()
        pieces = [
            (f"SELECT {_call_sql(c)} FROM {BATCH}", windows[i] if i < len(windows) else None)
            for i, c in enumerate(calls)
        ] + pieces
        columns = ", ".join(f"{_call_sql(c)} AS {c.column}" for c in calls)
        computed = f"SELECT *, {columns} FROM {BATCH}{where}"
        if self._step(computed, pieces) is None:
            return
        table = f"({computed}) AS __computed"
        everything = f"* EXCLUDE ({', '.join(c.column for c in calls)})"
        items = [everything if item == "*" else item for item in self.plan.select_sql]
        self._step(f"SELECT {', '.join(items)} FROM {table}", self._items(table))

    def _distinct_time(self, time_sql: str) -> None:
        """PlanError unless the event time that ages a DISTINCT's rows is a column."""
        _, error = self._try(f"SELECT {time_sql} FROM {BATCH}")
        if error is None or self.knows is _Knows.NOTHING:
            return
        problem = read_problem(error)
        if problem.what == "column":
            raise PlanError(self._no_event_time(problem.name))

    # --- the event time of a window ---------------------------------------------

    def _event_time(self) -> str | None:
        """The DuckDB type of the window's event time; PlanError if there is none."""
        assert self.plan.window is not None
        relation, error = self._try(
            f"SELECT ({self.plan.window.time_sql}) FROM {self.plan.from_sql}"
        )
        if error is not None:
            problem = read_problem(error)
            if problem.what == "column" and self.knows is not _Knows.NOTHING:
                raise PlanError(self._no_event_time(problem.name), self.user.window_at)
            if problem.what in _REPORTED[self.knows]:
                raise self._error(problem, None, self.user.window_at)
            return None
        assert relation is not None
        found = str(relation.types[0])
        if self.knows is _Knows.TYPES and not (found.startswith("TIMESTAMP") or found in _INTEGERS):
            time_sql = self.plan.window.time_sql
            origin = self._origin_of(_column_names(time_sql))
            raise PlanError(
                f"the event time {time_sql} of the window is {found}, not a TIMESTAMP or "
                f"epoch milliseconds (an integer){'; ' + origin if origin else ''}: CAST it, "
                "or choose another column",
                self.user.window_at,
            )
        return found

    def _no_event_time(self, name: str) -> str:
        source = self.plan.source
        configured = self.job.event_time_field or self.job.properties.get("event.time.field")
        args = self.user.window_args or ""
        assert self.plan.window is not None
        kind = self.plan.window.kind
        explicit = _top_level_commas(args) > (1 if kind == "SLIDING" else 0)
        hint = suggest(name, self._visible())
        if explicit:
            return f"the event time {name} of the window is not a column of source {source}{hint}"
        if configured:
            return f"event.time.field '{configured}' is not a column of source {source}{hint}"
        times = [
            f.name
            for f in self.columns
            if self.types.get(f.name.lower(), "").startswith("TIMESTAMP")
        ]
        column = times[0] if times else "<time column>"
        example = f" (such as '{times[0]}')" if times else ""
        return (
            f"WINDOW {kind}({args.strip()}) has no event time: source {source} has no "
            f"{name} column (only Kafka sources have one); set 'event.time.field' to the "
            f"column that holds each row's time{example}, or write "
            f"{kind}({column}, {args.strip()})"
        )

    # --- messages --------------------------------------------------------------

    def _visible(self) -> list[str]:
        return [f.name for f in self.columns if not f.name.startswith("__")]

    def _error(self, problem: Problem, node: exp.Expr | None, at: int | None = None) -> PlanError:
        user = self.user
        if problem.what == "ambiguous":
            use = re.search(r"\(use: (.+)\)", problem.detail)
            how = f": write {use.group(1)}" if use else ": qualify it with its table's name"
            message = f"ambiguous column {problem.name}: more than one side has it{how}"
            return PlanError(message, user.column_at(problem.name, node) or at)
        if problem.what == "member":
            table = re.search(r'(?:Table|Values list) "((?:[^"]|"")+)"', problem.detail)
            alias = table.group(1) if table else "?"
            names = self._columns_of(alias)
            listed = ", ".join(names[:MAX_LISTED]) + (", ..." if len(names) > MAX_LISTED else "")
            message = (
                f"unknown column {alias}.{problem.name}{suggest(problem.name, names)}: "
                f"{alias} has {listed}"
            )
            return PlanError(message, user.column_at(problem.name, node) or at)
        if problem.what in ("column", "qualifier"):
            offset = user.column_at(problem.name, node)
            message = self._unknown_column(problem.name, qualifier=problem.what == "qualifier")
            return PlanError(message, offset or at or user.offset(node))
        if problem.what == "type":
            message = f"unknown type {problem.name}{suggest(problem.name, type_names())}"
            return PlanError(message, user.type_at(problem.name) or at)
        if problem.what == "function":
            return PlanError(f"unknown function {problem.name}()", user.call_at(problem.name) or at)
        text = to_sql(unalias(node)) if node is not None else None
        said = (
            types_message(problem.detail, problem.name)
            if problem.what == "types"
            else problem.detail
        )
        said = without_internal_names(said)
        named = [c.parts[0].name for c in node.find_all(exp.Column)] if node is not None else []
        message = f"{text}: {said}" if text else said
        origin = self._origin_of(named)
        if origin:
            message += f"; {origin}"
        return PlanError(message, at or user.offset(node))

    def _columns_of(self, alias: str) -> list[str]:
        """The columns of the relation called `alias` in the query's FROM."""
        try:
            query = self.plan.prejoin_sql or f"SELECT 1 FROM {self.plan.from_sql}"
            tree = sqlglot.parse_one(query, read="duckdb")
        except (ParseError, TokenError):
            return []
        relations = {t.alias_or_name.lower(): t.name for t in tree.find_all(exp.Table)}
        relation = relations.get(alias.lower())
        if relation == BATCH:
            return self._visible()
        side = next((t for t in self.plan.tables if t.relation == relation), None)
        schema = self.tables.get(side.name) if side is not None else None
        return [f.name for f in schema.columns] if schema is not None else []

    def _sides(self) -> str:
        """`; table instruments has symbol, name` for each table side."""
        text = ""
        for side in self.plan.tables:
            names = [f.name for f in self.tables[side.name].columns]
            listed = ", ".join(names[:MAX_LISTED]) + (", ..." if len(names) > MAX_LISTED else "")
            text += f"; table {side.name} has {listed}"
        return text

    def _unknown_column(self, name: str, *, qualifier: bool = False) -> str:
        visible = self._visible()
        source = self.plan.source
        if self.plan.tables:
            names = [*visible, *(f.name for t in self.tables.values() for f in t.columns)]
            what = "table or alias" if qualifier else "column"
            listed = ", ".join(visible[:MAX_LISTED]) + (
                ", ..." if len(visible) > MAX_LISTED else ""
            )
            return (
                f"unknown {what} {name}{suggest(name, names)}: stream {source} has "
                f"{listed}{self._sides()}"
            )
        listed = ", ".join(visible[:MAX_LISTED]) + (", ..." if len(visible) > MAX_LISTED else "")
        if qualifier:
            return (
                f"unknown name {name} before a '.'{suggest(name, [source, *visible])}: it is "
                f"neither the source {source} (or its alias) nor one of its columns ({listed})"
            )
        message = f"unknown column {name}{suggest(name, visible)}: source {source} has {listed}"
        if name.lower() in self.user.aliases():
            message += (
                f"; {name} names an item of the SELECT list, which this clause cannot use: "
                "repeat its expression"
            )
        return message

    def _origin_of(self, names: Sequence[str]) -> str:
        """`in source trades, price is VARCHAR, as inferred from ... ('x' at t.csv:3 is not
        a number)`: the types of the columns `names`, and where they come from."""
        if self.source is None or self.knows is not _Knows.TYPES:
            return ""
        parts, evidence = [], []
        for name in dict.fromkeys(n.lower() for n in names):
            column = next((f.name for f in self.columns if f.name.lower() == name), None)
            if column is None:
                continue
            parts.append(f"{column} is {self.types[name]}")
            if column in self.source.evidence:
                evidence.append(self.source.evidence[column])
        if not parts:
            return ""
        why = f" ({'; '.join(evidence)})" if evidence else ""
        listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        return f"in source {self.source.source}, {listed}, {self.source.origin}{why}"


def _column_names(sql: str) -> list[str]:
    """The names of the columns an expression reads."""
    try:
        node = sqlglot.parse_one(f"SELECT {sql}", read="duckdb")
    except (ParseError, TokenError):
        return []
    return [c.parts[0].name for c in node.find_all(exp.Column)]


def _top_level_commas(text: str) -> int:
    depth, commas, quote = 0, 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            commas += 1
    return commas


def _aggregate_sql(call: AggregateCall) -> str:
    """The aggregate as the engine's DuckDB path computes it (argument `__aN`)."""
    a = ARG.format(call.index)
    match call.func:
        case "count_star":
            return "COUNT(*)"
        case "count":
            return f"COUNT({a})"
        case "count_distinct":
            return f"COUNT(DISTINCT {a})"
        case "sum":
            return f"SUM({a})"
        case "avg":  # a sum and a count, as the engine keeps it
            return f"CAST(SUM({a}) AS DOUBLE) / COUNT({a})"
        case "stddev":
            return f"STDDEV_SAMP(CAST({a} AS DOUBLE))"
        case "stddev_pop":
            return f"STDDEV_POP(CAST({a} AS DOUBLE))"
        case "variance" | "var_pop":
            return f"{'VAR_SAMP' if call.func == 'variance' else 'VAR_POP'}(CAST({a} AS DOUBLE))"
        case "string_agg":  # any value, as its text
            return f"STRING_AGG(CAST({a} AS VARCHAR), ',')"
        case "first_value":
            return f"FIRST({a})"
        case "last_value":
            return f"LAST({a})"
        case _:
            return f"{call.func.upper()}({a})"


def _call_sql(call: RowWindowCall) -> str:
    """A row-window call over the batch: binds its argument, PARTITION BY and ORDER BY."""
    partition = f"PARTITION BY {', '.join(call.partition_sql)}" if call.partition_sql else ""
    ranked = call.func in ("rank", "dense_rank") and call.order_sql
    order = f" ORDER BY {', '.join(call.order_sql)}" if ranked else ""
    over = f"OVER ({partition}{order})"
    match call.func:
        case "lag" | "lead":
            default = f", {call.default_sql}" if call.default_sql else ""
            return f"{call.func.upper()}({call.arg}, {call.offset}{default}) {over}"
        case "row_number" | "rank" | "dense_rank":
            return f"{call.func.upper()}() {over}"
        case "count":
            return f"COUNT({call.arg or '*'}) {over}"
        case _:
            return f"{call.func.upper()}({call.arg}) {over}"


def bind_job(
    job: JobSpec,
    plan: QueryPlan,
    source: SourceSchema | None,
    tables: Mapping[str, SourceSchema | None] | None = None,
) -> pa.Schema | None:
    """Bind `plan` (of `job`) to `source`'s columns; PlanError at the first problem.

    With `source` None only what needs no columns is judged (types, functions). The
    error's offset is into `job.select_sql`, at the name at fault where it is found.
    `tables` are the columns of the plan's table sides, by name: if one of them is not
    known, the query is not bound (its names cannot be judged). Returns the columns of
    the query's output where they are known (an in-app table's, for its readers).
    """
    known = {k: v for k, v in (tables or {}).items() if v is not None}
    if any(side.name not in known for side in plan.tables):
        return None
    try:
        binder = _Binder(job, plan, source, known)
    except duckdb.Error:
        return None  # columns DuckDB cannot take as a table (duplicate names): not judged
    try:
        binder.bind()
        if binder.output is None or binder.knows is _Knows.NOTHING:
            return None
        return binder.output.limit(0).to_arrow_table().schema
    except duckdb.Error:
        return None
    finally:
        binder.close()


def _untyped(schema: pa.Schema) -> pa.Schema:
    """`schema`'s names, each column of type NULL (which converts to anything)."""
    return pa.schema([(f.name, pa.null()) for f in schema])
