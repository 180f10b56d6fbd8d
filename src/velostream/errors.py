"""Velostream's exceptions and its error taxonomy.

Every project exception derives from one root and carries the context it was raised
in (job, stage, source, position)::

    VelostreamError                     kind           raised when
    ├── ConfigurationError              Configuration  a setting or WITH property is wrong
    │   ├── SqlValidationError          Parse          an application fails validation
    │   │   ├── PlanError               Parse          a SELECT the engine cannot run
    │   │   └── SandboxError            Parse          job SQL reaches outside its sources
    │   ├── StateIncompatibleError      Configuration  a checkpointed state does not fit the plan
    │   └── JobConflictError            Configuration  that job and version is already deployed
    │       └── SinkConflictError       Configuration  a sink another deployed job already writes
    ├── RecordError                     Parse/Type     one record cannot be decoded or typed
    ├── SchemaError                     Schema         columns do not match what a query needs
    ├── QueryExecutionError             Execution      DuckDB fails to run a job's SQL
    ├── SourceError                     IO             a source cannot be read
    ├── SinkError                       IO             a sink cannot be written or flushed
    ├── BrokerConnectionError           Connection     a broker or server cannot be reached
    ├── OperationTimeoutError           Timeout        an operation did not finish in time
    ├── ResourceExhaustedError          Resource       memory, disk or a limit is exhausted
    │   └── JobLimitError               Resource       a batch went over its job's memory or time
    ├── DeadLetterError                 IO             a dead letter cannot be written
    ├── JobStateError                   Configuration  an illegal job state transition
    ├── BatchFailedError                (failed_kind)  a batch cannot commit under its strategy
    ├── RetryableBatchError             (failed_kind)  RetryWithBackoff will try the batch again
    ├── ReplayError                     Execution      replayed dead letters still fail
    ├── ApiProblem                      Configuration  an HTTP route answers with a problem document
    │   └── AuthError                   Configuration  a request lacks the bearer token it needs
    └── InternalError                   Internal       a bug: an invariant did not hold

`classify` maps any exception, ours or third-party, to an `ErrorKind`.
"""

from __future__ import annotations

import errno
import json
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "ApiProblem",
    "AuthError",
    "BatchFailedError",
    "BrokerConnectionError",
    "ConfigurationError",
    "DeadLetterError",
    "ErrorKind",
    "InternalError",
    "JobConflictError",
    "JobLimitError",
    "JobStateError",
    "OperationTimeoutError",
    "PlanError",
    "QueryExecutionError",
    "RecordError",
    "ReplayError",
    "ResourceExhaustedError",
    "RetryableBatchError",
    "SandboxError",
    "SchemaError",
    "Severity",
    "SinkConflictError",
    "SinkError",
    "SourceError",
    "SqlValidationError",
    "Stage",
    "StateIncompatibleError",
    "VelostreamError",
    "classify",
    "default_severity",
]


class Stage(StrEnum):
    """Where in a job's life an error happened."""

    DEPLOY = "deploy"
    SOURCE = "source"
    DESERIALIZE = "deserialize"
    PROCESS = "process"
    SINK = "sink"
    COMMIT = "commit"
    DLQ = "dlq"
    JOB = "job"


class ErrorKind(StrEnum):
    """The fixed taxonomy of error kinds (bounded label values for metrics)."""

    PARSE = "ParseError"
    TYPE = "TypeError"
    EXECUTION = "ExecutionError"
    SCHEMA = "SchemaError"
    IO = "IOError"
    CONNECTION = "ConnectionError"
    TIMEOUT = "TimeoutError"
    CONFIGURATION = "ConfigurationError"
    RESOURCE = "ResourceError"
    INTERNAL = "InternalError"


class Severity(StrEnum):
    """Whose problem it is: the user's data or SQL, or the infrastructure."""

    USER = "user"
    SYSTEM = "system"


_USER_KINDS = frozenset(
    {
        ErrorKind.PARSE,
        ErrorKind.TYPE,
        ErrorKind.EXECUTION,
        ErrorKind.SCHEMA,
        ErrorKind.CONFIGURATION,
    }
)


def default_severity(kind: ErrorKind) -> Severity:
    """Bad data, SQL and configuration are the user's; the rest is the system's."""
    return Severity.USER if kind in _USER_KINDS else Severity.SYSTEM


class VelostreamError(Exception):
    """Root of every Velostream exception; carries where it happened."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        job: str | None = None,
        stage: Stage | None = None,
        source: str | None = None,
        position: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.job = job
        self.stage = stage
        self.source = source
        self.position = position

    @property
    def severity(self) -> Severity:
        return default_severity(self.kind)


class ConfigurationError(VelostreamError):
    """A setting, CLI flag or WITH property is missing or invalid."""

    kind = ErrorKind.CONFIGURATION


class SqlValidationError(ConfigurationError):
    """An application's SQL fails validation; `problems` lists every one found."""

    kind = ErrorKind.PARSE

    def __init__(self, message: str, *, problems: list[str] | None = None, **kw: str) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.problems = problems or [message]


class PlanError(SqlValidationError, ValueError):
    """A SELECT the engine cannot run; `offset` is a character offset into it, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class SandboxError(SqlValidationError, ValueError):
    """Job SQL tried to reach outside its declared sources."""


class StateIncompatibleError(ConfigurationError):
    """A state (from a checkpoint) does not fit the plan asked to restore it.

    Raised by `Executor.restore` before it changes anything, e.g. when an upgrade
    changed the GROUP BY keys, the aggregates, the window or the kind of query; the
    message names what differs.
    """


class JobConflictError(ConfigurationError):
    """A job of that name and version is already deployed (HTTP 409)."""


class SinkConflictError(JobConflictError):
    """A deploy names a sink another job already writes (HTTP 409).

    Raised before anything starts when a job would write the file (a sink's `path`,
    `dlq.path`) or the Kafka topic another deployed job, or another statement of the
    same application, writes. `other_job` is that job, `target` what both write
    (e.g. `file /srv/out.csv`).
    """

    def __init__(
        self,
        message: str,
        *,
        other_job: str | None = None,
        target: str | None = None,
        **kw: str,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.other_job = other_job
        self.target = target


class RecordError(VelostreamError):
    """One record cannot be decoded (ParseError) or fails its column type (TypeError)."""

    kind = ErrorKind.PARSE


class SchemaError(VelostreamError):
    """A batch's columns do not match what a query or sink needs."""

    kind = ErrorKind.SCHEMA


class QueryExecutionError(VelostreamError):
    """DuckDB failed while running a job's SQL."""

    kind = ErrorKind.EXECUTION


class SourceError(VelostreamError):
    """A source cannot be opened or read."""

    kind = ErrorKind.IO


class SinkError(VelostreamError):
    """A sink cannot be written or flushed."""

    kind = ErrorKind.IO


class BrokerConnectionError(VelostreamError):
    """A broker or remote server cannot be reached."""

    kind = ErrorKind.CONNECTION


class OperationTimeoutError(VelostreamError):
    """An operation did not complete within its deadline."""

    kind = ErrorKind.TIMEOUT


class ResourceExhaustedError(VelostreamError):
    """Memory, disk space or a configured limit (such as max_jobs) is exhausted."""

    kind = ErrorKind.RESOURCE


class JobLimitError(ResourceExhaustedError):
    """A job went over one of its limits (`job.memory.limit`, `job.batch.timeout`): its
    batch is abandoned uncommitted and the job fails, whatever its failure strategy."""


class DeadLetterError(VelostreamError):
    """A dead letter could not be written; the job must fail rather than lose it."""

    kind = ErrorKind.IO


class JobStateError(VelostreamError):
    """A job was asked for a transition its current state does not allow."""

    kind = ErrorKind.CONFIGURATION


class BatchFailedError(VelostreamError):
    """A batch cannot be committed under the job's strategy (FailBatch, or
    RetryWithBackoff out of retries); the job fails with this reason.

    `failed_kind` is the kind of what failed the batch (the first bad record's, or the
    last attempt's error), so the job-stage error is filed under it rather than as an
    internal error.
    """

    def __init__(
        self, message: str, *, failed_kind: ErrorKind = ErrorKind.INTERNAL, job: str | None = None
    ) -> None:
        super().__init__(message, job=job)
        self.failed_kind = failed_kind


class RetryableBatchError(VelostreamError):
    """A batch had bad records and RetryWithBackoff will try it again (already recorded)."""

    def __init__(self, message: str, *, failed_kind: ErrorKind, job: str | None = None) -> None:
        super().__init__(message, job=job)
        self.failed_kind = failed_kind


class ReplayError(VelostreamError):
    """Dead letters sent through the job again still fail; none of them was replayed.

    `failures` holds the records that failed again (the datasource's BadRecord values).
    """

    kind = ErrorKind.EXECUTION

    def __init__(self, message: str, *, failures: list[Any], job: str | None = None) -> None:
        super().__init__(message, job=job)
        self.failures = failures


class ApiProblem(VelostreamError):
    """Raised by an HTTP route; the app answers with an RFC 9457 problem document."""

    kind = ErrorKind.CONFIGURATION

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


class AuthError(ApiProblem):
    """A request lacks the bearer token the server was started with (HTTP 401)."""

    def __init__(self, detail: str = "this call needs Authorization: Bearer <token>") -> None:
        super().__init__(401, "Unauthorized", detail)


class InternalError(VelostreamError):
    """An invariant did not hold: a bug in Velostream."""

    kind = ErrorKind.INTERNAL


_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.ENOMEM, errno.EDQUOT, errno.EMFILE})


def classify(exc: BaseException) -> ErrorKind:
    """Map any exception, ours or a library's, to its `ErrorKind`.

    Third-party errors are recognised by module and class name so that this module
    imports none of them.
    """
    if isinstance(exc, VelostreamError):
        return exc.kind
    third_party = _classify_third_party(exc)
    if third_party is not None:
        return third_party
    if isinstance(exc, MemoryError):
        return ErrorKind.RESOURCE
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, ConnectionError):
        return ErrorKind.CONNECTION
    if isinstance(exc, OSError):
        return ErrorKind.RESOURCE if exc.errno in _RESOURCE_ERRNOS else ErrorKind.IO
    if isinstance(exc, json.JSONDecodeError | UnicodeError):
        return ErrorKind.PARSE
    if isinstance(exc, TypeError | ValueError | OverflowError | ArithmeticError):
        return ErrorKind.TYPE
    return ErrorKind.INTERNAL


def _classify_third_party(exc: BaseException) -> ErrorKind | None:
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith(("duckdb", "_duckdb")):
        if name in {"ConversionException", "InvalidTypeException", "OutOfRangeException"}:
            return ErrorKind.TYPE
        if name in {"ParserException", "SyntaxException"}:
            return ErrorKind.PARSE
        if name in {"BinderException", "CatalogException"}:
            return ErrorKind.SCHEMA
        if name in {"OutOfMemoryException"}:
            return ErrorKind.RESOURCE
        if name in {"IOException", "HTTPException"}:
            return ErrorKind.IO
        if name in {"InternalException", "FatalException"}:
            return ErrorKind.INTERNAL
        return ErrorKind.EXECUTION
    if module.startswith("pyarrow"):
        if name in {"ArrowInvalid", "ArrowTypeError", "ArrowNotImplementedError"}:
            return ErrorKind.TYPE if name == "ArrowTypeError" else ErrorKind.PARSE
        if name == "ArrowMemoryError":
            return ErrorKind.RESOURCE
        return ErrorKind.IO
    if module.startswith(("confluent_kafka", "cimpl")):
        return ErrorKind.CONNECTION
    return None
