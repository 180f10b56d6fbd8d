"""What the parser produces: an application of jobs with their connectors and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Application",
    "ConnectorConfig",
    "EmitMode",
    "FailureStrategy",
    "JobMode",
    "JobSpec",
    "MetricSpec",
    "Position",
    "StatementKind",
]


class StatementKind(StrEnum):
    STREAM = "STREAM"
    TABLE = "TABLE"


class EmitMode(StrEnum):
    CHANGES = "CHANGES"
    FINAL = "FINAL"


class JobMode(StrEnum):
    SIMPLE = "simple"
    TRANSACTIONAL = "transactional"


class FailureStrategy(StrEnum):
    LOG_AND_CONTINUE = "LogAndContinue"
    SEND_TO_DLQ = "SendToDLQ"
    FAIL_BATCH = "FailBatch"
    RETRY_WITH_BACKOFF = "RetryWithBackoff"


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column in the application file."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """A source or sink: its name, `type`, and its keys with the `<name>.` prefix removed."""

    name: str
    type: str
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A user-defined metric from `@metric*` annotations."""

    name: str
    type: str = "counter"
    help: str = ""
    labels: tuple[str, ...] = ()
    field: str | None = None
    condition: str | None = None
    buckets: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One statement of an application: one job."""

    name: str
    statement_name: str
    kind: StatementKind
    select_sql: str
    emit: EmitMode | None
    sources: tuple[ConnectorConfig, ...]
    sinks: tuple[ConnectorConfig, ...]
    primary_keys: tuple[str, ...] = ()
    job_mode: JobMode = JobMode.SIMPLE
    batch_size: int | None = None
    failure_strategy: FailureStrategy = FailureStrategy.LOG_AND_CONTINUE
    max_retries: int = 10
    retry_backoff_ms: int = 500
    properties: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    metrics: tuple[MetricSpec, ...] = ()
    version: str | None = None
    position: Position = Position(1, 1)
    select_position: Position = Position(1, 1)
    text: str = ""
    metrics_enabled: bool = True
    event_time_field: str | None = None
    max_out_of_orderness_ms: int | None = None
    late_data_strategy: str = "drop"
    #: `job.memory.limit` and `job.batch.timeout` (None: the server's defaults).
    memory_limit_bytes: int | None = None
    batch_timeout_ms: int | None = None
    #: The application's in-app tables (sinkless `CREATE TABLE`s) this job reads.
    tables: tuple[JobSpec, ...] = ()

    @property
    def is_table(self) -> bool:
        """An in-app table: a `CREATE TABLE` without a sink, read by later statements."""
        return self.kind == StatementKind.TABLE and not self.sinks


@dataclass(frozen=True, slots=True)
class Application:
    """A parsed, validated SQL application."""

    name: str
    version: str | None
    jobs: tuple[JobSpec, ...]
    description: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: Its in-app tables (sinkless `CREATE TABLE`s): computed by the jobs that read
    #: them, never run as jobs of their own.
    tables: tuple[JobSpec, ...] = ()
