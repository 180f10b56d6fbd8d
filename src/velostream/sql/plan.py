"""The plan model: what the planners produce and the engine runs on micro-batches.

The column-name constants name the helper columns the engine's DuckDB queries add to a
batch: they start with `__`, which a job's own columns may not (`_check_grouped`).
`SYSTEM_COLUMNS` are the columns a source adds (Kafka metadata, window bounds): a query
reads one by naming it; `*` leaves them out, as it leaves out the engine's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from velostream.sql.model import EmitMode

__all__ = [
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
]

BATCH = "__batch"
TABLE = "__table_{}"
ROW = "__rn"
KEY = "__k{}"
ARG = "__a{}"
AGG = "__agg{}"
WINDOW_START = "__ws"
WINDOW_END = "__we"
EVENT_TIME = "__et"

# Not part of `SELECT *` (SQL.md); a query that wants one names it.
SYSTEM_COLUMNS = (
    "_event_time",
    "_timestamp",
    "_key",
    "_partition",
    "_offset",
    "_headers",
    "_window_start",
    "_window_end",
)


class PlanKind(StrEnum):
    STATELESS = "stateless"
    AGGREGATE = "aggregate"
    ROW_WINDOW = "row_window"
    UNION = "union"
    DISTINCT = "distinct"
    STREAM_JOIN = "stream_join"


@dataclass(frozen=True, slots=True)
class AggregateCall:
    """One aggregate of the SELECT/HAVING: its function and its argument column (`__aN`)."""

    index: int
    func: str
    arg: str | None
    distinct: bool = False
    separator: str | None = None
    """LISTAGG/STRING_AGG's separator (a literal)."""

    @property
    def column(self) -> str:
        return AGG.format(self.index)


@dataclass(frozen=True, slots=True)
class TumblingWindow:
    """A time window on the event time `time_sql` (the name is historical: any kind).

    `kind` is TUMBLING (windows of `size_ms`), SLIDING (windows of `size_ms` starting
    every `advance_ms`) or SESSION (`size_ms` is the gap that closes a key's session).
    """

    size_ms: int
    time_sql: str
    kind: str = "TUMBLING"
    advance_ms: int = 0

    def describe(self) -> str:
        """The window as SQL, for a state's shape and messages."""
        if self.kind == "SLIDING":
            return f"SLIDING({self.time_sql}, {self.size_ms}ms, {self.advance_ms}ms)"
        return f"{self.kind}({self.time_sql}, {self.size_ms}ms)"


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
    order_keys: tuple[tuple[str, str], ...] = ()
    """The ORDER BY as (expression SQL, `ASC|DESC NULLS FIRST|LAST`), DuckDB's defaults
    spelled out (the modifiers of `create_sort_key`)."""

    @property
    def column(self) -> str:
        return f"__w{self.index}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Star:
    """A `*` of the SELECT list with DuckDB's `EXCLUDE`, `REPLACE` and `RENAME`.

    It stands for the batch's columns, less the system columns and the engine's own
    (`hidden`); which of those a batch has is known only when it comes, so the SQL is
    made per batch (`sql`).
    """

    exclude: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    """(expression SQL, the column it replaces)"""
    rename: tuple[tuple[str, str], ...] = ()
    """(column, its new name)"""

    def sql(self, columns: Iterable[str], hidden: Iterable[str]) -> str:
        """`*` over a table of `columns`, leaving out those of `hidden` and EXCLUDE's."""
        hidden_names = {*SYSTEM_COLUMNS, *hidden}
        leave_out = [c for c in columns if c in hidden_names]
        taken = {c.lower() for c in leave_out}
        lowered_hidden = {h.lower() for h in hidden_names}
        # Excluding a system column the batch does not have is no error: * never had it.
        for name in self.exclude:
            if name.lower() not in taken and name.lower() not in lowered_hidden:
                leave_out.append(name)
                taken.add(name.lower())
        text = "*"
        if leave_out:
            text += f" EXCLUDE ({', '.join(_quote(c) for c in leave_out)})"
        if self.replace:
            text += " REPLACE (" + ", ".join(f"{e} AS {_quote(n)}" for e, n in self.replace) + ")"
        if self.rename:
            text += " RENAME (" + ", ".join(f"{_quote(a)} AS {_quote(b)}" for a, b in self.rename)
            text += ")"
        return text


@dataclass(frozen=True, slots=True)
class TableSide:
    """A table the query reads besides its stream (a JOIN, or a subquery's FROM).

    `name` is a bounded source of the job or an in-app table; the engine loads it into
    the job's DuckDB as `relation` before the stream is read, and again when it changes.
    """

    name: str
    relation: str


@dataclass(frozen=True, slots=True)
class StreamJoin:
    """A stream–stream join: both sides streamed, rows matched within `timeout_ms`.

    `on_sql` reads the sides by their aliases (`left_alias`, `right_alias`); the event
    time of both is the column `time_column` (`event.time.field`, else `_timestamp`).
    `right_columns` (`left_columns`) are the right (left) side's columns the query
    names, NULL-filled when an outer join emits a row before any row of that side came.
    """

    left: str
    right: str
    left_alias: str
    right_alias: str
    on_sql: str
    timeout_ms: int
    time_column: str
    kind: str = "INNER"  # INNER, LEFT, RIGHT or FULL
    right_columns: tuple[str, ...] = ()
    left_columns: tuple[str, ...] = ()

    def outer(self, side: str) -> bool:
        """Whether `side`'s ("left" or "right") unmatched rows are emitted, other side NULL."""
        return self.kind in ("FULL", "LEFT" if side == "left" else "RIGHT")


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
    stars: list[Star] = field(default_factory=list)
    """The `*` items of `select_sql` (each written there as `*`), in order."""
    set_headers: list[tuple[str, str]] = field(default_factory=list)
    """(Kafka header key, output column) of each `SET_HEADER` item (`plan_headers`)."""
    branches: list[QueryPlan] = field(default_factory=list)
    """A UNION ALL's branches (kind UNION), one stateless plan per source."""
    distinct_time_sql: str | None = None
    """A DISTINCT's event time (`event.time.field`), which ages its remembered rows;
    None: they age in processing time."""
    from_sql: str = BATCH
    """What the engine's first query of a batch reads: the batch, or the batch (aliased
    as the stream) joined to the table sides."""
    tables: list[TableSide] = field(default_factory=list)
    """The table sides `from_sql` and the subqueries read, loaded before the stream."""
    stream_join: StreamJoin | None = None
    """A stream–stream join's sides and condition (kind STREAM_JOIN)."""
    prejoin_sql: str | None = None
    """A row-window query's join, run first: each batch becomes the joined rows, with
    every column the query reads as `__jN` and the stream row's `__rn` (`from_sql` is
    then the batch again)."""

    def select_list(self, columns: Iterable[str], hidden: Iterable[str] = ()) -> str:
        """`select_sql` joined, each `*` made for a table of `columns` (`Star.sql`)."""
        columns, hidden = list(columns), list(hidden)
        stars = iter(self.stars)
        items = [
            next(stars, Star()).sql(columns, hidden) if item == "*" else item
            for item in self.select_sql
        ]
        return ", ".join(items)
