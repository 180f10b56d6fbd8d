"""Building the executor of a job whose state is partitioned (sql/partitioning.py says
which jobs may), and attaching its Kafka glue.

This module imports no Kafka client: `partitions.py` (the glue) is loaded only for a
job that asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velostream.datasource.multi import sources_of
from velostream.datasource.traits import Source
from velostream.engine import Executor, build_executor, sandboxed_connection
from velostream.engine.core import opening_connection
from velostream.engine.partitioned import PartitionedExecutor
from velostream.errors import ConfigurationError
from velostream.sql.model import JobSpec
from velostream.sql.partitioning import partitioning_problem, wants_partitioned
from velostream.sql.planner import QueryPlan

if TYPE_CHECKING:
    from velostream.observability.state_metrics import StateFamilies
    from velostream.server.processors.context import ErrorHook
    from velostream.server.processors.partitions import PartitionedState

__all__ = ["attach_partitions", "partitioned_executor"]


def partitioned_executor(job: JobSpec, plan: QueryPlan, memory_limit: int | None) -> Executor:
    """The job's executor: one per partition when its state is partitioned."""
    problem = partitioning_problem(job, plan)
    if problem is not None:
        raise ConfigurationError(problem, job=job.name)
    if not wants_partitioned(job):  # its DuckDB opens while the job reads its source
        return build_executor(plan, job, opening_connection(memory_limit))

    def make() -> Executor:
        return build_executor(plan, job, sandboxed_connection(memory_limit=memory_limit))

    return PartitionedExecutor(make, sandboxed_connection(memory_limit=memory_limit))


def attach_partitions(
    job: JobSpec,
    app: str | None,
    source: Source,
    executor: Executor,
    record_error: ErrorHook,
    metrics: StateFamilies,
) -> PartitionedState | None:
    """The Kafka glue of a partitioned executor (None for any other executor)."""
    if not isinstance(executor, PartitionedExecutor):
        return None
    from velostream.datasource.kafka.source import KafkaSource
    from velostream.server.processors.partitions import PartitionedState

    [kafka] = [s for s in sources_of(source) if isinstance(s, KafkaSource)]
    return PartitionedState(job, app or job.name, kafka, executor, record_error, metrics)
