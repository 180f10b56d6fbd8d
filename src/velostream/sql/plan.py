"""The plan model: what the planners produce and the engine runs on micro-batches.

The column-name constants name the helper columns the engine's DuckDB queries add to a
batch: they start with `__`, which a job's own columns may not (`_check_grouped`).
"""

from __future__ import annotations

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
    "WINDOW_END",
    "WINDOW_START",
    "AggregateCall",
    "PlanKind",
    "QueryPlan",
    "RowWindowCall",
    "TumblingWindow",
]

BATCH = "__batch"
ROW = "__rn"
KEY = "__k{}"
ARG = "__a{}"
AGG = "__agg{}"
WINDOW_START = "__ws"
WINDOW_END = "__we"
EVENT_TIME = "__et"


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
