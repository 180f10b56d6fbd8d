"""Micro-batch execution of planned jobs on DuckDB and Arrow.

The executor of each kind of plan is imported when a job of that kind is built (and
its name when first read): a stateless job loads none of the windowed or joining ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from velostream.engine.core import BatchOutput, Executor, StatelessExecutor, sandboxed_connection
from velostream.lazy import lazy_exports
from velostream.sql.model import JobSpec
from velostream.sql.planner import PlanKind, QueryPlan, parse_duration_ms

if TYPE_CHECKING:
    from velostream.engine.aggregate import AggregateExecutor
    from velostream.engine.distinct import DistinctExecutor
    from velostream.engine.row_window import RowWindowExecutor
    from velostream.engine.stream_join import StreamJoinExecutor
    from velostream.engine.union import UnionExecutor

__all__ = [
    "AggregateExecutor",
    "BatchOutput",
    "DistinctExecutor",
    "Executor",
    "RowWindowExecutor",
    "StatelessExecutor",
    "StreamJoinExecutor",
    "UnionExecutor",
    "build_executor",
    "sandboxed_connection",
]


__getattr__ = lazy_exports(
    __name__,
    {
        "AggregateExecutor": "velostream.engine.aggregate",
        "DistinctExecutor": "velostream.engine.distinct",
        "RowWindowExecutor": "velostream.engine.row_window",
        "StreamJoinExecutor": "velostream.engine.stream_join",
        "UnionExecutor": "velostream.engine.union",
    },
)


def build_executor(
    plan: QueryPlan, job: JobSpec, con: duckdb.DuckDBPyConnection | None = None
) -> Executor:
    """The executor for `plan`, configured from the job's WITH properties."""
    ooo_ms = job.max_out_of_orderness_ms
    if ooo_ms is None:
        ooo = job.properties.get("watermark.max_out_of_orderness")
        ooo_ms = parse_duration_ms(ooo) if ooo else 0
    strategy = job.properties.get("late.data.strategy", job.late_data_strategy)
    if plan.kind == PlanKind.STREAM_JOIN:
        from velostream.engine.stream_join import StreamJoinExecutor

        return StreamJoinExecutor(
            plan,
            con,
            out_of_orderness_ms=ooo_ms,
            late_to_dead_letter=strategy.lower() == "dead_letter",
        )
    if plan.kind == PlanKind.AGGREGATE:
        from velostream.engine.aggregate import AggregateExecutor
        from velostream.engine.duckdb_aggregates import MAX_STRING_BYTES
        from velostream.sql.size import parse_size_bytes

        max_string = job.properties.get("listagg.max.bytes")
        return AggregateExecutor(
            plan,
            con,
            out_of_orderness_ms=ooo_ms,
            late_to_dead_letter=strategy.lower() == "dead_letter",
            max_string_bytes=MAX_STRING_BYTES
            if max_string is None
            else parse_size_bytes(max_string),
        )
    if plan.kind == PlanKind.UNION:
        from velostream.engine.union import UnionExecutor

        return UnionExecutor(plan, con)
    if plan.kind == PlanKind.ROW_WINDOW:
        from velostream.engine.row_window import RowWindowExecutor

        return RowWindowExecutor(plan, con)
    if plan.kind == PlanKind.DISTINCT:
        from velostream.engine.distinct import DistinctExecutor

        ttl = job.properties.get("distinct.ttl")
        return DistinctExecutor(plan, con, ttl_ms=parse_duration_ms(ttl) if ttl else None)
    return StatelessExecutor(plan, con)
