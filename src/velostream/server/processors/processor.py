"""The job loop shared by both delivery modes: read, process, apply the failure strategy,
write, flush, commit — with pause, stop, retries and dead letters.

What differs between modes is how a batch commits and how an abort rewinds; that is
the `Committer` (simple.py: at-least-once; transactional.py and kafka_transactional.py:
all or nothing), chosen by the job's mode and its source's capability (committers.py)
and given a `CommitContext` (context.py), never the processor.

Counts are per source record, not per attempt: a batch that is retried counts its
records in (and its bad records failed) once, and its rows out and dead letters only
when they are committed. Each attempt's errors are recorded, since each happened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence

import pyarrow as pa

from velostream.datasource.bad_records import FailureKey, failure_groups, failure_keys, joined
from velostream.datasource.multi import sources_of
from velostream.datasource.traits import BadRecord, Sink, Source, SourceBatch
from velostream.dlq import DeadLetter, DeadLetterQueue
from velostream.dlq.letter import dead_letters
from velostream.engine import BatchOutput, Executor
from velostream.errors import (
    BatchFailedError,
    DeadLetterError,
    ErrorKind,
    JobLimitError,
    RetryableBatchError,
    Severity,
    Stage,
    classify,
)
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.job_metrics import JobCounters, JobCounts
from velostream.observability.logging import TRACE, bind_stage
from velostream.observability.manager import ObservabilityManager
from velostream.observability.source_metrics import SourceTally
from velostream.server.checkpoint import CheckpointStore
from velostream.server.processors.committers import choose_committer
from velostream.server.processors.context import CommitContext, Committer
from velostream.server.processors.failure import FailurePolicy, transient
from velostream.server.processors.limits import (
    BatchWatch,
    JobLimits,
    Watchdog,
    interrupted,
    memory_error,
)
from velostream.server.processors.partitioning import attach_partitions, partitioned_executor
from velostream.server.processors.pipes import PipeWriter
from velostream.server.processors.replay import replay_letters
from velostream.server.processors.table_loader import TableLoader
from velostream.sql.bind_errors import query_error
from velostream.sql.model import JobSpec
from velostream.sql.planner import plan_job

__all__ = ["DEFAULT_BATCH_SIZE", "JobProcessor"]

DEFAULT_BATCH_SIZE = 100_000
# How long the loop waits after an empty batch: a source that answers "nothing new"
# at once (an idle memory source) must not turn the loop into a busy spin.
IDLE_WAIT_SECONDS = 0.05
# How long `pause()` waits for the batch in flight to finish.
PAUSE_WAIT_SECONDS = 30.0
_log = logging.getLogger("velostream.processor")


class JobProcessor:
    """Runs one job from its source (several: a `MultiSource`) to its sinks; errors never
    vanish."""

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
        slots: threading.Semaphore | None = None,
        limits: JobLimits | None = None,
    ) -> None:
        """`limits`: the server's defaults, which the job's own WITH keys override."""
        self.job = job
        self.app_name = app_name
        self.source = source
        self.sinks = sinks
        self.observability = observability
        self.metrics = observability.require_metrics()
        self.limits = (limits or JobLimits()).for_job(job)
        self.executor = executor or partitioned_executor(
            job, plan_job(job), self.limits.memory_bytes
        )
        self.tables = TableLoader(self, self.limits.memory_bytes)
        self.pipes = PipeWriter()  # to later statements reading this job's output
        self._watchdog = Watchdog.shared()
        self._watch: BatchWatch | None = None  # the batch in flight, while in the query
        self.batch_size = batch_size or job.batch_size or DEFAULT_BATCH_SIZE
        self.policy = FailurePolicy.for_job(job)
        self.checkpoints = checkpoints
        self.dlq = dlq
        # Shared by the server's jobs: how many process a batch at once (see `_attempt`).
        self._slots = slots or contextlib.nullcontext()
        # The job's counters live in one place, read at scrape time; they outlive this
        # processor (a restart or an upgrade counts on). `stats` is this run's share.
        self.counters: JobCounters = self.metrics.job_counters(job.name)
        self._counted_before = self.counters.snapshot()
        names = [s.name for s in sources_of(source)]  # a multi-source job counts per source
        self.source_counts = self.metrics.sources.for_job(job.name, names) if len(names) > 1 else {}
        self._tally = SourceTally(self.counters, self.source_counts)
        self.errors = observability.job_errors(job.name)
        self.partitions = attach_partitions(
            job, app_name, source, self.executor, self.errors.record, self.metrics.state
        )
        if self.executor.state_kind != "stateless" and self.partitions is None:
            for each in sources_of(source):  # its state covers what it reads: all of it
                if hasattr(each, "whole_topic"):  # a Kafka source: all of its topic
                    each.whole_topic = True
        self.started = time.time()
        self.ended_at: float | None = None
        self.stopped = False
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._batch_lock = threading.Lock()
        # `pause()` waits on this until the loop is parked (or has ended).
        self._loop_state = threading.Condition()
        self._parked = False
        self._finished = False
        self._ready = False  # recovered and opened: a replay may use the sinks
        self._closed = False  # sinks closed: a replay needs a fresh processor
        self._dlq_pending = 0  # dead letters written but not yet flushed
        self._pending_out = 0  # rows written for the batch in flight, not yet committed
        self.committer: Committer = choose_committer(
            CommitContext(
                job=job,
                source=source,
                sinks=sinks if self.partitions is None else [*sinks, *self.partitions.sinks],
                executor=self.executor,
                checkpoints=checkpoints,
                dlq=dlq,
                record_error=self.errors.record,
                flush_dead_letters=self.flush_dead_letters,
                deployment_context=functools.partial(
                    observability.deployment_context_for_job, job.name
                ),
            )
        )

    # --- control --------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """End the loop after the batch in flight (committed), or interrupt that batch
        (not committed) if it takes longer than a short grace; a paused loop ends too."""
        self.stopped = True
        self.stop_reason = reason
        self._stop.set()
        self._running.set()
        self.source.wake()  # a read waiting out its polling interval ends now
        watch = self._watch
        if watch is not None:  # interrupted unless it ends within the grace period
            watch.stop()

    def pause(self, timeout: float = PAUSE_WAIT_SECONDS) -> bool:
        """Read nothing more; return once the batch in flight is committed.

        True when the loop is parked before its next read (it keeps its position and
        state); False when the loop has ended instead, or `timeout` passed first (it
        then parks after its batch).
        """
        self._running.clear()
        with self._loop_state:
            self._loop_state.wait_for(lambda: self._parked or self._finished, timeout)
            return self._parked

    def resume(self) -> None:
        self._running.set()

    @property
    def finished(self) -> bool:
        """Whether `run()` has returned (or raised)."""
        return self._finished

    @property
    def closed(self) -> bool:
        """Whether the sinks are closed (the loop has ended)."""
        return self._closed

    def _wait_while_paused(self) -> None:
        if self._running.is_set():
            return
        with self._loop_state:
            self._parked = True
            self._loop_state.notify_all()
        self._running.wait()
        with self._loop_state:
            self._parked = False

    @property
    def duration(self) -> float:
        """Seconds this processor has run (until it ended)."""
        return (self.ended_at or time.time()) - self.started

    # --- the loop ---------------------------------------------------------------

    @property
    def stats(self) -> JobCounts:
        """What this processor has counted (the job's counters since it was built)."""
        return self.counters.since(self._counted_before)

    def run(self) -> JobCounts:
        """Process until the source ends (bounded), `stop()`, or a failure (raised)."""
        try:
            with self._batch_lock:  # a replay waits until the job has resumed
                self.committer.recover()  # first: a sink that opens by truncating must resume
                self._open()
                self.pipes.publish(self.committer)
                self.tables.load(initial=True)
                self._ready = True
            while not self._stop.is_set() and not self.executor.limit_reached:
                self._wait_while_paused()
                if self._stop.is_set():
                    break
                batch = self._read()
                if batch is None:
                    break
                if batch.num_records == 0:
                    _log.log(TRACE, "job %r: no records, idle", self.job.name)
                    self._stop.wait(IDLE_WAIT_SECONDS)
                    continue
                with self._tally.batch(batch.source):
                    self._process_with_policy(batch)
            if not self._stop.is_set():
                _log.debug("job %r: source ended, final flush and commit", self.job.name)
                with self._batch_lock:
                    if isinstance(columns := getattr(self.source, "schema", None), pa.Schema):
                        self.executor.prime(columns)  # in case no row brought them
                    written = self._write(self.executor.finish())
                    self.committer.commit(None)
                    self._count_out(written)
                    self.pipes.publish(self.committer)
                    self.pipes.end()
        except BaseException as exc:
            self.pipes.fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.ended_at = time.time()
            self._close()
            with self._loop_state:
                self._finished = True
                self._loop_state.notify_all()
            stats = self.stats
            _log.info(
                "job %r: %d in, %d out, %d failed, %d dead letters in %.2fs",
                self.job.name,
                stats.records_in,
                stats.records_out,
                stats.records_failed,
                stats.dead_letters,
                self.duration,
            )
        return self.stats

    def _open(self) -> None:
        try:
            if self.partitions is not None:
                self.partitions.open()  # its topics, before the source subscribes
            self.source.open()
        except Exception as exc:
            self.errors.record(Stage.SOURCE, f"opening {self.source.name}: {exc}", exc=exc)
            raise
        for sink in self.sinks:
            try:
                sink.open()
            except Exception as exc:
                self.errors.record(Stage.SINK, f"opening {sink.name}: {exc}", exc=exc)
                raise

    def _close(self) -> None:
        closers = [(Stage.SINK, s.name, s.close) for s in self.sinks]
        if self.partitions is not None:
            closers.append((Stage.COMMIT, self.partitions.topic, self.partitions.close))
        closers.append((Stage.SOURCE, self.source.name, self.source.close))
        with self._batch_lock:
            self._closed = True
            for stage, name, close in closers:
                try:
                    close()
                except Exception as exc:
                    self.errors.record(stage, f"closing {name}: {exc}", exc=exc)

    def _read(self) -> SourceBatch | None:
        attempt = 0
        while True:
            try:
                # Under the batch lock: a dead-letter replay may rewind the source
                # between two batches, never in the middle of a read.
                with self._batch_lock, bind_stage(Stage.SOURCE):
                    return self.source.read_batch(self.batch_size)
            except Exception as exc:
                self.errors.record(Stage.SOURCE, f"reading {self.source.name}: {exc}", exc=exc)
                attempt += 1
                # A broker or network blip is retried under every strategy.
                if not self.policy.retries and not transient(exc):
                    raise
                if attempt > self.policy.max_retries:
                    raise BatchFailedError(
                        f"RetryWithBackoff: reading {self.source.name} still fails after "
                        f"{self.policy.max_retries} retries: {exc}",
                        failed_kind=classify(exc),
                        job=self.job.name,
                    ) from exc
                self._backoff(attempt)
                if self._stop.is_set():
                    return None

    def _backoff(self, attempt: int) -> None:
        self.counters.retries += 1
        delay = self.policy.backoff_seconds(attempt)
        _log.debug("job %r: retry %d in %.2fs", self.job.name, attempt, delay)
        self._stop.wait(delay)

    def _process_with_policy(self, batch: SourceBatch) -> None:
        attempt = 0
        while True:
            try:
                with self._batch_lock:
                    if self._attempt(batch, first=attempt == 0):
                        return
                    self._abort()  # interrupted by a stop: nothing was written
                if attempt == 0:  # read again when the job starts: not counted twice
                    self.counters.records_in -= batch.num_records
                _log.info(
                    "job %r: stopped in the middle of a batch of %d records; it was not "
                    "committed and is read again when the job starts",
                    self.job.name,
                    batch.num_records,
                )
                return
            except JobLimitError:
                with self._batch_lock:
                    self._abort()
                raise
            except (DeadLetterError, BatchFailedError):
                raise
            except Exception as exc:
                with self._batch_lock:
                    self._abort()
                attempt += 1
                if not self.policy.retries and not transient(exc):
                    raise
                if attempt > self.policy.max_retries:
                    kind = exc.failed_kind if isinstance(exc, RetryableBatchError) else None
                    raise BatchFailedError(
                        f"RetryWithBackoff: the batch still fails after "
                        f"{self.policy.max_retries} retries: {exc}",
                        failed_kind=kind or classify(exc),
                        job=self.job.name,
                    ) from exc
                _log.warning(
                    "job %r: batch failed, retry %d of %d",
                    self.job.name,
                    attempt,
                    self.policy.max_retries,
                )
                self._backoff(attempt)
                self._wait_while_paused()
                if self._stop.is_set():
                    return
                again = self._read()
                if again is None:
                    return
                batch = again

    def _attempt(self, batch: SourceBatch, *, first: bool = True) -> bool:
        """Process, write and commit one batch; `first`: not a retry (counts its input).

        False when a stop interrupted its query: nothing was written or committed.
        """
        started = time.perf_counter()
        again = "" if first else " again"
        _log.debug("job %r: batch of %d records%s", self.job.name, batch.num_records, again)
        if first:
            self.counters.records_in += batch.num_records
        self.tables.load()
        # A processing slot bounds how many job threads compute at once (the commit,
        # mostly fsync, is outside it): with 50 busy jobs the API thread would otherwise
        # wait for the GIL behind all of them.
        if self.partitions is not None:
            self.partitions.ready()  # partitions given since: their state first
        with self._slots:
            output = self._process(batch)
            if output is None:
                return False
            bad = joined(batch.bad, output.bad)
            if bad:
                self.handle_bad(bad, count=first)
            if output.late or output.late_dropped:
                self._handle_late(output, count=first)
            written = self._pending_out = self._write(output.table)
        with bind_stage(Stage.COMMIT):
            if self.partitions is not None:
                self.partitions.stage(batch)
            self.committer.commit(batch)
        self.pipes.publish(self.committer)
        self._pending_out = 0
        self._count_out(written)
        self.counters.observe_batch(time.perf_counter() - started)
        _log.debug("job %r: batch committed, %d rows out", self.job.name, written)
        return True

    def _process(self, batch: SourceBatch) -> BatchOutput | None:
        """Run the batch's query under the job's limits; None if a stop interrupted it."""
        if not batch.table.num_rows:  # only bad records, maybe before any schema is known
            return BatchOutput(batch.table.slice(0, 0))
        watch = self._watch = self._watchdog.begin(self.limits, self.executor.interrupt)
        if self._stop.is_set():
            watch.stop()
        try:
            with bind_stage(Stage.PROCESS):
                output = self.executor.process(batch)
        except Exception as exc:
            limit = watch.tripped or memory_error(self.limits, exc)
            if limit is None and watch.stopping and interrupted(exc):
                return None
            error: Exception = limit or query_error(exc, batch.table.column_names) or exc
            self.errors.record(Stage.PROCESS, str(error) or type(error).__name__, exc=error)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._watch = None
            self._watchdog.end(watch)
        if watch.tripped is not None:  # over its limit in Python, where no interrupt reaches
            self.errors.record(Stage.PROCESS, str(watch.tripped), exc=watch.tripped)
            raise watch.tripped
        return output

    def _abort(self) -> None:
        """Undo the batch in flight; rows of a batch the abort committed after all
        (a publish rolled forward) are counted out like any committed rows."""
        self._dlq_pending = 0  # the abort drops the unflushed dead letters
        rolled_forward = self.committer.abort()
        _log.debug("job %r: batch aborted (rolled forward: %s)", self.job.name, rolled_forward)
        if rolled_forward:
            self._count_out(self._pending_out)
        self._pending_out = 0

    def _count_out(self, rows: int) -> None:
        """A batch committed: count it and its rows out."""
        self.counters.batches += 1
        self.counters.records_out += rows

    def handle_bad(self, bad: Sequence[BadRecord], *, count: bool = True, source: str = "") -> None:
        """Record every bad record, then do what the failure strategy says (`source`: a table)."""
        context = self.errors.context  # looked up once for the batch's bad records
        fingerprints = self._record_bad(bad, context)
        if count:
            self.counters.records_failed += len(bad)
        if self.policy.dead_letters:
            self._dead_letter(bad, fingerprints, context, source)
        elif not self.policy.skips_bad_records:
            first = bad[0]
            reason = f"{len(bad)} bad record(s) in the batch; first at {first.ref}: {first.message}"
            if self.policy.retries:
                raise RetryableBatchError(reason, failed_kind=first.kind, job=self.job.name)
            raise BatchFailedError(
                f"FailBatch: {reason}", failed_kind=first.kind, job=self.job.name
            )

    def _handle_late(self, output: BatchOutput, *, count: bool = True) -> None:
        """Late rows are counted as late (never as failed) and recorded under every
        strategy; with `late.data.strategy = 'dead_letter'` each goes to the DLQ."""
        if count:
            self.counters.late_records += len(output.late) + output.late_dropped
        if output.late_dropped:
            self.errors.record(
                Stage.PROCESS,
                f"late records dropped: {self.executor.late_message} (late.data.strategy 'drop')",
                kind=ErrorKind.EXECUTION,
                severity=Severity.USER,
                count=output.late_dropped,
            )
        if output.late:
            context = self.errors.context
            self._dead_letter(output.late, self._record_bad(output.late, context), context)

    def _record_bad(
        self, bad: Sequence[BadRecord], context: DeploymentContext
    ) -> dict[FailureKey, str | None]:
        """Record the bad records' errors; return the fingerprint of each kind of failure.

        Records that fail alike (same stage, kind and message, e.g. one bad value in
        many rows) are recorded in one call with their count: every place counts each
        of them, at a fraction of the cost per record.
        """
        fingerprints: dict[FailureKey, str | None] = {}
        for group in failure_groups(bad):
            fingerprints[group.key] = self.errors.record(
                group.stage,
                group.message,
                kind=group.kind,
                record_ref=group.last_ref,
                count=group.records,
                context=context,
            )
        return fingerprints

    def _dead_letter(
        self,
        bad: Sequence[BadRecord],
        fps: dict[FailureKey, str | None],
        ctx: DeploymentContext,
        source: str = "",
    ) -> None:
        if self.dlq is None:
            raise DeadLetterError(f"job {self.job.name} has no dead-letter queue configured")
        letters = dead_letters(
            bad,
            list(map(fps.__getitem__, failure_keys(bad))),
            job=self.job.name,
            app=self.app_name,
            version=self.job.version,
            source=source or self.source.name,
            context=ctx,
        )
        self.dlq.write(letters)
        self._dlq_pending += len(letters)

    def flush_dead_letters(self) -> int | None:
        """Make pending dead letters durable; a failure fails the job."""
        if self.dlq is None:
            return None
        pending, self._dlq_pending = self._dlq_pending, 0
        try:
            with bind_stage(Stage.DLQ):
                offset = self.dlq.flush()
        except Exception as exc:
            self.counters.dlq_write_failures += 1
            self.errors.record(Stage.DLQ, f"dead-letter write failed: {exc}", exc=exc)
            raise DeadLetterError(f"dead-letter write failed: {exc}", job=self.job.name) from exc
        if pending:
            self.counters.dead_letters += pending
        return offset

    def _write(self, table: pa.Table | None) -> int:
        """Write `table` to every sink; return its rows (counted once committed)."""
        if table is None or table.num_rows == 0:
            return 0
        for sink in self.sinks:
            try:
                with bind_stage(Stage.SINK):
                    sink.write(table)
                    self.pipes.wrote(table)
            except Exception as exc:
                self.errors.record(Stage.SINK, f"writing {sink.name}: {exc}", exc=exc)
                raise
        if self.job.metrics:
            try:
                self.metrics.user_metrics.observe(
                    self.job.name, self.job.metrics, table, self.executor.con
                )
            except Exception as exc:  # a metric never costs the batch; it is an error
                self.errors.record(Stage.PROCESS, f"user metric: {exc}", exc=exc)
        return int(table.num_rows)

    # --- dead-letter replay (replay.py) ---------------------------------------------

    def replay(self, letters: list[DeadLetter]) -> int:
        """Send dead letters through the running job again; return the rows they produced."""
        return replay_letters(self, letters)

    def replay_offline(self, letters: list[DeadLetter]) -> int:
        """`replay` for a job whose loop is not running: resume its sinks, replay, close."""
        try:
            with self._batch_lock:
                self.committer.recover()
                self._open()
                self.tables.load(initial=True)
                self._ready = True
            return self.replay(letters)
        finally:
            self._close()
