"""The union executor: each batch through its source's branch, one output schema."""

from __future__ import annotations

import pyarrow as pa
import pytest

from velostream.datasource.memory import TableRefs
from velostream.datasource.traits import SourceBatch
from velostream.engine import UnionExecutor, build_executor
from velostream.errors import SchemaError
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.planner import plan_job


def executor(sql: str) -> UnionExecutor:
    job = JobSpec(
        name="j",
        statement_name="j",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=None,
        sources=(ConnectorConfig("a", "memory_source"), ConnectorConfig("b", "memory_source")),
        sinks=(),
    )
    built = build_executor(plan_job(job), job)
    assert isinstance(built, UnionExecutor)
    return built


def batch(source: str | None, **columns: list[object]) -> SourceBatch:
    table = pa.table(columns)
    return SourceBatch(table, TableRefs(source or "?", table, 0), source=source)


SQL = "SELECT id, v * 10 AS v FROM a WHERE id > 1 UNION ALL SELECT id, w AS v FROM b"


def test_each_batch_runs_through_the_branch_of_its_source() -> None:
    union = executor(SQL)
    a = union.process(batch("a", id=[1, 2, 3], v=[1, 2, 3]))
    b = union.process(batch("b", id=[7], w=[5]))
    assert a.table.to_pylist() == [{"id": 2, "v": 20}, {"id": 3, "v": 30}]
    assert b.table.to_pylist() == [{"id": 7, "v": 5}]


def test_a_branch_whose_types_differ_is_cast_to_the_unions_schema_or_refused() -> None:
    union = executor(SQL)
    union.process(batch("a", id=[2], v=[1.5]))  # v: DOUBLE
    widened = union.process(batch("b", id=[7], w=[5]))  # w: BIGINT, cast to DOUBLE
    assert widened.table.schema.field("v").type == pa.float64()
    with pytest.raises(SchemaError, match="column v is string FROM b"):
        union.process(batch("b", id=[8], w=["x"]))


def test_a_batch_of_no_known_source_is_refused() -> None:
    with pytest.raises(SchemaError, match="a batch from c has no UNION ALL branch"):
        executor(SQL).process(batch("c", id=[1]))
