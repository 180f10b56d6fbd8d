"""Drive an executor over an in-memory table cut into batches, and compare results.

No source or sink is involved: a job is planned from its SELECT, its executor is fed
`SourceBatch`es sliced from one Arrow table, and everything it returns is collected.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from velostream.datasource.traits import BadRecord, RecordRefs, SourceBatch
from velostream.engine import Executor, build_executor
from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import QueryPlan, plan_job

SOURCE = "t"

Row = dict[str, Any]


class LineRefs(RecordRefs):
    """Row `i` of a batch that starts at input row `offset` is line `offset + i + 2`.

    (Line 1 of the pretend CSV file is its header.)
    """

    def __init__(self, offset: int, path: str = "t.csv") -> None:
        self.offset = offset
        self.path = path

    def line(self, index: int) -> int:
        return self.offset + index + 2

    def ref(self, index: int) -> str:
        return f"{self.path}:{self.line(index)}"

    def raw(self, index: int) -> bytes:
        return f"line {self.line(index)}".encode()


def make_job(
    sql: str,
    *,
    emit: EmitMode | None = None,
    props: Mapping[str, str] | None = None,
    sources: Sequence[str] = (SOURCE,),
) -> JobSpec:
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=emit,
        sources=tuple(ConnectorConfig(name, "memory_source", {}) for name in sources),
        sinks=(ConnectorConfig("out", "memory_sink", {}),),
        properties=dict(props or {}),
    )


def plan(sql: str, **kwargs: Any) -> QueryPlan:
    return plan_job(make_job(sql, **kwargs))


@dataclass(slots=True)
class Run:
    """Everything one run returned, in order."""

    outputs: list[pa.Table] = field(default_factory=list)
    """One table per `process` call, then the `finish` table (if any)."""
    bad: list[BadRecord] = field(default_factory=list)
    late: list[BadRecord] = field(default_factory=list)
    executor: Executor | None = None

    @property
    def rows(self) -> list[Row]:
        return [row for table in self.outputs for row in table.to_pylist()]

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]

    @property
    def columns(self) -> list[str]:
        named = [t for t in self.outputs if t.num_columns]
        return named[0].column_names if named else []


def cut(table: pa.Table, sizes: Iterable[int]) -> list[tuple[int, pa.Table]]:
    """`table` as consecutive (offset, slice) batches, batch sizes cycling over `sizes`."""
    out, offset = [], 0
    for size in itertools.cycle(sizes):
        if offset >= table.num_rows:
            break
        out.append((offset, table.slice(offset, size)))
        offset += size
    return out


def run_job(
    sql: str,
    table: pa.Table,
    *,
    batch_size: int | Sequence[int] | None = None,
    emit: EmitMode | None = None,
    props: Mapping[str, str] | None = None,
) -> Run:
    """Plan `sql`, feed `table` in batches (default: one batch), then finish."""
    job = make_job(sql, emit=emit, props=props)
    executor = build_executor(plan_job(job), job)
    if batch_size is None:
        sizes: Sequence[int] = [max(table.num_rows, 1)]
    elif isinstance(batch_size, int):
        sizes = [batch_size]
    else:
        sizes = batch_size
    run = Run(executor=executor)
    for offset, batch in cut(table, sizes):
        output = executor.process(SourceBatch(batch, LineRefs(offset)))
        run.outputs.append(output.table)
        run.bad.extend(output.bad)
        run.late.extend(output.late)
    final = executor.finish()
    if final is not None:
        run.outputs.append(final)
    return run


def reference(sql: str, table: pa.Table) -> list[Row]:
    """DuckDB's one-shot answer for `sql` over the whole table, registered as `t`."""
    con = duckdb.connect()
    try:
        con.register(SOURCE, table)
        return list(con.sql(sql).to_arrow_table().to_pylist())
    finally:
        con.close()


def values_equal(got: Any, expected: Any) -> bool:
    """Exact, except floats (summation order differs) and DECIMAL(38,0) integer sums."""
    if got is None or expected is None:
        return got is None and expected is None
    if isinstance(got, float) or isinstance(expected, float):
        if isinstance(got, bool) or isinstance(expected, bool):
            return False
        return math.isclose(float(got), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, Decimal | int) and isinstance(expected, Decimal | int):
        if isinstance(got, bool) != isinstance(expected, bool):
            return False
        return Decimal(got) == Decimal(expected)
    return bool(got == expected) and type(got) is type(expected)


def assert_rows_equal(got: Sequence[Row], expected: Sequence[Row], context: str = "") -> None:
    """Same rows in the same order, column by column (names taken from `got`)."""
    assert len(got) == len(expected), f"{context}: {len(got)} rows, expected {len(expected)}"
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert list(g) == list(e), f"{context}: row {index} columns {list(g)} != {list(e)}"
        for name in g:
            assert values_equal(g[name], e[name]), (
                f"{context}: row {index} column {name}: got {g[name]!r}, expected {e[name]!r}"
                f"\n  got row      {g}\n  expected row {e}"
            )


def sort_key(row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
    """Order rows by `columns`, NULLs last, without comparing None to values."""
    return tuple((row[c] is None, row[c] if row[c] is not None else 0) for c in columns)
