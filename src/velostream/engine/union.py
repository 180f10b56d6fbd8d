"""`UNION ALL` of sources: each batch runs through the branch of the source it came from.

A multi-source job's batches are tagged with their source (`SourceBatch.source`, set by
`velostream.datasource.multi.MultiSource`); the union executor hands each to that
source's stateless branch and gives every branch's output the same schema. Validation
has checked that the branches produce the same columns and types (sql/plan_union.py);
here a batch whose types still differ (a source typed otherwise than its sample) is cast
to the union's schema when no value changes (a column of NULLs, a wider number), and
refused with a SchemaError naming the column otherwise.

The branches are stateless, so the union keeps no state of its own: its snapshot is a
stateless executor's, and a single-source stateless job upgraded to a union keeps its
checkpoint.
"""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa

from velostream.datasource.traits import SourceBatch
from velostream.engine.core import BatchOutput, Executor, StatelessExecutor
from velostream.errors import SchemaError
from velostream.sql.planner import QueryPlan

__all__ = ["UnionExecutor"]

_log = logging.getLogger("velostream.engine")


class UnionExecutor(Executor):
    """Runs each batch through its source's branch; outputs share one schema."""

    def __init__(self, plan: QueryPlan, con: duckdb.DuckDBPyConnection | None = None) -> None:
        super().__init__(plan, con)
        self.branches = {b.source: StatelessExecutor(b, self.con) for b in plan.branches}
        self.schema: pa.Schema | None = None  # the first output's: every branch conforms
        self._warned: set[tuple[str, str]] = set()

    def process(self, batch: SourceBatch) -> BatchOutput:
        branch = self.branches.get(batch.source or "")
        if branch is None:
            known = ", ".join(self.branches)
            raise SchemaError(
                f"a batch from {batch.source or 'an unnamed source'} has no UNION ALL branch "
                f"(branches read {known})"
            )
        output = branch.process(batch)
        output.table = self._conform(output.table, batch.source or "")
        return output

    def _conform(self, table: pa.Table, source: str) -> pa.Table:
        if self.schema is None:
            if table.num_rows:
                self.schema = table.schema
            return table
        if table.schema.equals(self.schema):
            return table
        if table.column_names != self.schema.names:
            raise SchemaError(
                f"UNION ALL branch FROM {source} gives columns {', '.join(table.column_names)}; "
                f"the union's are {', '.join(self.schema.names)}"
            )
        columns = []
        for field, column in zip(self.schema, table.columns, strict=True):
            if column.type == field.type:
                columns.append(column)
                continue
            try:
                columns.append(column.cast(field.type, safe=True))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"UNION ALL column {field.name} is {column.type} FROM {source}, "
                    f"{field.type} in the union's earlier rows: CAST it in the branch ({exc})"
                ) from exc
            if not pa.types.is_null(column.type) and (source, field.name) not in self._warned:
                self._warned.add((source, field.name))
                _log.warning(
                    "UNION ALL column %s FROM %s is %s, cast to the union's %s",
                    field.name,
                    source,
                    column.type,
                    field.type,
                )
        return pa.Table.from_arrays(columns, schema=self.schema)
