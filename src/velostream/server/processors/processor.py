"""The job loop shared by both delivery modes: read, process, apply the failure strategy,
write, flush, commit — with pause, stop, retries and dead letters.

What differs between modes is how a batch commits and how an abort rewinds; that is
the `Committer` (simple.py: at-least-once; transactional.py: all or nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from velostream.datasource.traits import BadRecord, Sink, Source, SourceBatch
from velostream.engine import Executor, build_executor
from velostream.errors import DeadLetterError, ErrorKind, Stage, VelostreamError
from velostream.observability.manager import ObservabilityManager
from velostream.server.checkpoint import CheckpointStore
from velostream.server.processors.dlq import DeadLetter, dead_letter
from velostream.server.processors.error_tracking_helper import ErrorTracker
from velostream.server.processors.failure import BatchFailedError, FailurePolicy
from velostream.sql.model import JobMode, JobSpec
from velostream.sql.planner import plan_job

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Committer",
    "DeadLetterQueue",
    "JobProcessor",
    "JobStats",
    "RetryableBatchError",
]

DEFAULT_BATCH_SIZE = 100_000
_log = logging.getLogger("velostream.processor")


class RetryableBatchError(VelostreamError):
    """A batch failed in a way RetryWithBackoff may retry (already recorded)."""


class DeadLetterQueue(Protocol):
    def write(self, letters: list[DeadLetter]) -> None: ...
    def flush(self) -> int: ...
    def truncate(self, offset: int | None) -> None: ...
    def mark_replayed(self, ids: list[str]) -> None: ...
    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]: ...
    def close(self) -> None: ...


class Committer(Protocol):
    """How a mode makes a batch durable and how it rewinds after a failure."""

    def recover(self) -> None: ...
    def commit(self, batch: SourceBatch | None) -> None: ...
    def abort(self) -> None: ...


@dataclass(slots=True)
class JobStats:
    """Counts of one job run, updated batch by batch."""

    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    dead_letters: int = 0
    late_records: int = 0
    batches: int = 0
    retries: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def duration(self) -> float:
        return (self.finished or time.time()) - self.started


class JobProcessor:
    """Runs one job from its source to its sinks; errors never vanish."""

    def __init__(
        self,
        job: JobSpec,
        source: Source,
        sinks: list[Sink],
        observability: ObservabilityManager,
        *,
        app_name: str | None = None,
        checkpoints: CheckpointStore | None = None,
        dlq: DeadLetterQueue | None = None,
        executor: Executor | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.job = job
        self.app_name = app_name
        self.source = source
        self.sinks = sinks
        self.observability = observability
        self.metrics = observability.require_metrics()
        self.executor = executor or build_executor(plan_job(job), job)
        self.batch_size = batch_size or job.batch_size or DEFAULT_BATCH_SIZE
        self.policy = FailurePolicy.for_job(job)
        self.checkpoints = checkpoints
        self.dlq = dlq
        self.stats = JobStats()
        self.stopped = False
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._batch_lock = threading.Lock()
        self.committer = self._committer()

    def _committer(self) -> Committer:
        if self.job.job_mode == JobMode.TRANSACTIONAL:
            from velostream.server.processors.transactional import TransactionalCommitter

            return TransactionalCommitter(self)
        from velostream.server.processors.simple import SimpleCommitter

        return SimpleCommitter(self)

    # --- control --------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        self.stopped = True
        self.stop_reason = reason
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def record_error(
        self,
        stage: Stage,
        message: str,
        *,
        kind: ErrorKind | None = None,
        exc: BaseException | None = None,
        record_ref: str | None = None,
    ) -> str | None:
        return ErrorTracker.record_error(
            self.observability,
            self.job.name,
            message,
            stage=stage,
            kind=kind,
            exc=exc,
            record_ref=record_ref,
        )

    # --- the loop ---------------------------------------------------------------

    def run(self) -> JobStats:
        """Process until the source ends (bounded), `stop()`, or a failure (raised)."""
        try:
            self._open()
            self.committer.recover()
            while not self._stop.is_set() and not self.executor.limit_reached:
                self._running.wait()
                if self._stop.is_set():
                    break
                batch = self._read()
                if batch is None:
                    break
                if batch.num_records == 0:
                    continue
                self._process_with_policy(batch)
            if not self._stop.is_set():
                with self._batch_lock:
                    self._write(self.executor.finish())
                    self.committer.commit(None)
        finally:
            self.stats.finished = time.time()
            self._close()
            _log.info(
                "job %r: %d in, %d out, %d failed, %d dead letters in %.2fs",
                self.job.name,
                self.stats.records_in,
                self.stats.records_out,
                self.stats.records_failed,
                self.stats.dead_letters,
                self.stats.duration,
            )
        return self.stats

    def _open(self) -> None:
        try:
            self.source.open()
        except Exception as exc:
            self.record_error(Stage.SOURCE, f"opening {self.source.name}: {exc}", exc=exc)
            raise
        for sink in self.sinks:
            try:
                sink.open()
            except Exception as exc:
                self.record_error(Stage.SINK, f"opening {sink.name}: {exc}", exc=exc)
                raise

    def _close(self) -> None:
        closers = [(Stage.SINK, s.name, s.close) for s in self.sinks]
        closers.append((Stage.SOURCE, self.source.name, self.source.close))
        for stage, name, close in closers:
            try:
                close()
            except Exception as exc:
                self.record_error(stage, f"closing {name}: {exc}", exc=exc)

    def _read(self) -> SourceBatch | None:
        attempt = 0
        while True:
            try:
                return self.source.read_batch(self.batch_size)
            except Exception as exc:
                self.record_error(Stage.SOURCE, f"reading {self.source.name}: {exc}", exc=exc)
                attempt += 1
                if not self.policy.retries or attempt > self.policy.max_retries:
                    raise
                self._backoff(attempt)
                if self._stop.is_set():
                    return None

    def _backoff(self, attempt: int) -> None:
        self.stats.retries += 1
        self._stop.wait(self.policy.backoff_seconds(attempt))

    def _process_with_policy(self, batch: SourceBatch) -> None:
        attempt = 0
        while True:
            try:
                with self._batch_lock:
                    self._attempt(batch)
                return
            except (DeadLetterError, BatchFailedError):
                raise
            except Exception:
                with self._batch_lock:
                    self.committer.abort()
                attempt += 1
                if not self.policy.retries or attempt > self.policy.max_retries:
                    raise
                _log.warning(
                    "job %r: batch failed, retry %d of %d",
                    self.job.name,
                    attempt,
                    self.policy.max_retries,
                )
                self._backoff(attempt)
                if self._stop.is_set():
                    return
                again = self._read()
                if again is None:
                    return
                batch = again

    def _attempt(self, batch: SourceBatch) -> None:
        started = time.perf_counter()
        job = self.job.name
        self.stats.batches += 1
        self.stats.records_in += batch.num_records
        self.metrics.add_records_in(job, batch.num_records)
        try:
            output = self.executor.process(batch)
        except Exception as exc:
            self.record_error(Stage.PROCESS, str(exc) or type(exc).__name__, exc=exc)
            raise
        bad = [*batch.bad, *output.bad, *output.late]
        self.stats.late_records += len(output.late)
        if bad:
            self._handle_bad(bad)
        self._write(output.table)
        self.committer.commit(batch)
        self.metrics.observe_batch(job, time.perf_counter() - started)

    def _handle_bad(self, bad: list[BadRecord]) -> None:
        """Record every bad record, then do what the failure strategy says."""
        fingerprints = [
            self.record_error(r.stage, r.message, kind=r.kind, record_ref=r.ref) for r in bad
        ]
        self.stats.records_failed += len(bad)
        self.metrics.add_records_failed(self.job.name, len(bad))
        if self.policy.dead_letters:
            self._dead_letter(bad, fingerprints)
        elif not self.policy.skips_bad_records:
            first = bad[0]
            reason = f"{len(bad)} bad record(s) in the batch; first at {first.ref}: {first.message}"
            if self.policy.retries:
                raise RetryableBatchError(reason, job=self.job.name)
            raise BatchFailedError(f"FailBatch: {reason}")

    def _dead_letter(self, bad: list[BadRecord], fingerprints: list[str | None]) -> None:
        if self.dlq is None:
            raise DeadLetterError(f"job {self.job.name} has no dead-letter queue configured")
        context = self.observability.deployment_context_for_job(self.job.name)
        letters = [
            dead_letter(
                record,
                job=self.job.name,
                app=self.app_name,
                version=self.job.version,
                source=self.source.name,
                fingerprint=fp,
                context=context,
            )
            for record, fp in zip(bad, fingerprints, strict=True)
        ]
        self.dlq.write(letters)
        self.stats.dead_letters += len(letters)

    def flush_dead_letters(self) -> int | None:
        """Make pending dead letters durable; a failure fails the job."""
        if self.dlq is None:
            return None
        try:
            offset = self.dlq.flush()
        except Exception as exc:
            self.metrics.add_dlq_write_failure(self.job.name)
            self.record_error(Stage.DLQ, f"dead-letter write failed: {exc}", exc=exc)
            raise DeadLetterError(f"dead-letter write failed: {exc}", job=self.job.name) from exc
        pending = self.stats.dead_letters - getattr(self, "_dlq_counted", 0)
        if pending:
            self.metrics.add_dlq_records(self.job.name, pending)
            self._dlq_counted = self.stats.dead_letters
        return offset

    def _write(self, table: pa.Table | None) -> None:
        if table is None or table.num_rows == 0:
            return
        for sink in self.sinks:
            try:
                sink.write(table)
            except Exception as exc:
                self.record_error(Stage.SINK, f"writing {sink.name}: {exc}", exc=exc)
                raise
        self.stats.records_out += table.num_rows
        self.metrics.add_records_out(self.job.name, table.num_rows)

    def flush_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as exc:
                self.record_error(Stage.SINK, f"flushing {sink.name}: {exc}", exc=exc)
                raise

    # --- dead-letter replay ------------------------------------------------------

    def replay(self, letters: list[DeadLetter]) -> int:
        """Send dead letters through the job again; return the rows they produced."""
        if not letters:
            return 0
        with self._batch_lock:
            batch = self.source.decode_records([letter.payload for letter in letters])
            output = self.executor.process(batch)
            bad = [*batch.bad, *output.bad]
            if bad:
                raise VelostreamError(
                    f"{len(bad)} of {len(letters)} dead letters still fail: {bad[0].message}",
                    job=self.job.name,
                )
            self._write(output.table)
            self.flush_sinks()
            if self.dlq is not None:
                self.dlq.mark_replayed([letter.id for letter in letters])
            return int(output.table.num_rows)
