"""What a committer gets of its job: a small value, not the processor.

A `Committer` (simple.py, transactional.py, kafka_transactional.py) makes a batch
durable and rewinds after a failure. It needs the job's connectors, executor,
checkpoints and dead-letter queue, and three things only the processor can do: record
an error, flush (and count) the dead letters, and name the job's deployment context.
`CommitContext` carries exactly these, so no committer imports the processor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from velostream.datasource.traits import Sink, Source, SourceBatch
from velostream.dlq import DeadLetterQueue
from velostream.engine import Executor
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.server.checkpoint import CheckpointStore
from velostream.sql.model import JobSpec

__all__ = ["CommitContext", "Committer", "ErrorHook"]


class Committer(Protocol):
    """How a mode makes a batch durable and how it rewinds after a failure."""

    def recover(self) -> None: ...
    def commit(self, batch: SourceBatch | None) -> None: ...
    def abort(self) -> bool:
        """Undo the batch in flight; True if it was committed after all (rolled forward)."""
        ...


class ErrorHook(Protocol):
    """Records one error of the job (its `JobErrors.record`); returns its fingerprint."""

    def __call__(
        self,
        stage: Stage,
        message: str,
        *,
        kind: ErrorKind | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
    ) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitContext:
    """The job a committer commits for, and the processor's hooks it calls back."""

    job: JobSpec
    source: Source
    sinks: Sequence[Sink]
    executor: Executor
    checkpoints: CheckpointStore | None
    dlq: DeadLetterQueue | None
    #: Records an error of the job in every place (log, catalog, metrics).
    record_error: ErrorHook
    #: Makes pending dead letters durable and counts them; returns the DLQ offset.
    flush_dead_letters: Callable[[], int | None]
    #: The job's deployment context (node, region), read when it is needed: the
    #: server sets it after the processor is built.
    deployment_context: Callable[[], DeploymentContext]

    def flush_sinks(self) -> None:
        """Make every sink's writes durable; a failure is a `sink` error, then raised."""
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as exc:
                self.record_error(Stage.SINK, f"flushing {sink.name}: {exc}", exc=exc)
                raise
