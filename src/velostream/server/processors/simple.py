"""Simple mode: at-least-once, settled to the last commit.

A batch's source position is committed only after its sink writes and its dead
letters are durable. Each commit records, with the position and the executor state,
the committed length of every sink that can roll back (a file: bytes; the memory
sink: rows) and of the dead-letter file. Before anything is written again the job
settles them to that commit:

- an abort (a failed batch, before its retry; a stop mid-batch) cuts every such
  sink and the dead-letter file back to the last commit and rewinds the source and
  the state, so a retry never duplicates what the sink already holds and a write
  torn by a full disk is gone before a reader can see it;
- a job that resumes from a checkpoint — after a crash, a restart or a redeploy —
  does the same before its sinks open.

What at-least-once still means: a batch is not committed until its checkpoint is
saved, so rows and dead letters written after the last commit are, after a crash,
cut at the restart and written again by the replayed batches. A reader of the output
may see them, and see them go, in between — that is what transactional mode spares.
A sink that cannot roll back (Kafka) keeps what it was sent: it may hold a batch twice.
Before a job's first checkpoint its committed lengths are what its sinks keep at open
and what the dead-letter file holds then.

A checkpoint resumes only what still fits. Its position is applied only to the source
it was read from: after an upgrade to another source the new one is read from its start
(a warning, recorded as a `source` configuration error). A multi-source job keeps one
position per source, each applied the same way (positions.py). Its executor state must fit
the job's query: one that does not (other GROUP BY keys, aggregates, window) fails the
job at start with what differs, rather than resetting the state unasked.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from velostream.datasource.traits import SourceBatch
from velostream.dlq import FileDeadLetterQueue
from velostream.errors import DeadLetterError, ErrorKind, Stage, StateIncompatibleError
from velostream.server.checkpoint import Checkpoint, describe_source, source_identity
from velostream.server.processors.context import CommitContext
from velostream.server.processors.positions import resume_position
from velostream.sql.plan_union import stream_sources

__all__ = ["SimpleCommitter"]

_log = logging.getLogger("velostream.processor")


class SimpleCommitter:
    """Flush sinks, flush dead letters, then persist the position (and state).

    `recover` runs before the sinks are opened: a sink that opens by truncating its
    destination must find it already positioned when the job resumes. A file
    dead-letter queue reports the lines it cannot read back as the job's `dlq` errors.
    """

    def __init__(self, context: CommitContext) -> None:
        self.context = context
        self.position: Any = None
        self.state: Any = None
        self.batches = 0
        self.sink_offsets: dict[str, int] = {}
        self.dlq_offset: int | None = None
        job = context.job
        streams = stream_sources(job)
        self.source_ids = {s.name: source_identity(s) for s in streams}
        self.source_id = source_identity(streams[0]) if len(streams) == 1 else None
        self.sink_ids = {s.name: source_identity(s) for s in job.sinks}
        if isinstance(context.dlq, FileDeadLetterQueue):
            context.dlq.report = self._unreadable_dead_letter

    def _unreadable_dead_letter(self, message: str, kind: ErrorKind) -> None:
        self.context.record_error(Stage.DLQ, message, kind=kind)

    def recover(self) -> None:
        """Settle the sinks and the dead-letter file to the last commit, resume from it."""
        ctx = self.context
        self.state = ctx.executor.snapshot()
        # Before any checkpoint, a sink's committed length is what its open keeps.
        self.sink_offsets = self.sink_lengths()
        checkpoint = ctx.checkpoints.load(ctx.job.name) if ctx.checkpoints is not None else None
        self.dlq_offset = self.committed_dlq_offset(checkpoint)
        if ctx.dlq is not None:
            ctx.dlq.truncate(self.dlq_offset)
        if checkpoint is None:
            return
        self.restore(checkpoint)
        kept = self.kept_sink_offsets(checkpoint)
        self.sink_offsets.update(kept)
        for sink in ctx.sinks:
            offset = kept.get(sink.name)
            if offset is not None and sink.committed_offset() is not None:
                sink.truncate(offset)
        _log.info(
            "job %r: resuming from checkpoint %d at %s",
            ctx.job.name,
            checkpoint.batches,
            checkpoint.position,
        )

    def committed_dlq_offset(self, checkpoint: Checkpoint | None) -> int | None:
        """The dead letters' committed offset: the checkpoint's, else (before a first
        commit) a file queue's length now, once a torn line a crash left is cut."""
        if checkpoint is not None and checkpoint.dlq_offset is not None:
            return checkpoint.dlq_offset
        dlq = self.context.dlq
        if not isinstance(dlq, FileDeadLetterQueue):
            return None
        try:
            return dlq.settle()
        except DeadLetterError as exc:
            self.context.record_error(Stage.DLQ, f"settling dead letters: {exc}", exc=exc)
            raise

    def restore(self, checkpoint: Checkpoint) -> None:
        """Resume the executor's state, and the position if read from this source.

        A state that does not fit the query raises StateIncompatibleError naming the
        versions and what differs; the job then fails at start, its checkpoint intact.
        Only a state that holds no data yet (no groups, windows or rows) is let go.
        """
        ctx = self.context
        position = resume_position(
            checkpoint, self.source_ids, functools.partial(self._changed, Stage.SOURCE)
        )
        self.batches = checkpoint.batches
        if checkpoint.state is not None:
            self._restore_state(checkpoint.state, checkpoint.version)
        if position is not None:
            ctx.source.commit(position)
            ctx.source.seek(position)
            self.position = position

    def _restore_state(self, state: dict[str, Any], version: str | None) -> None:
        ctx = self.context
        try:
            ctx.executor.restore(state)
        except StateIncompatibleError as exc:
            if _holds_data(state):
                raise StateIncompatibleError(
                    f"the state checkpointed by version {version} of job {ctx.job.name!r} "
                    f"cannot be resumed by version {ctx.job.version}: {exc}; deploy a "
                    "compatible version, or start the job afresh (docs/operations.md, Upgrades)",
                    job=ctx.job.name,
                ) from exc
            # Nothing kept, nothing lost: the executor starts with its own empty state.
            _log.info(
                "job %r: the empty state of version %s is not kept: %s", ctx.job.name, version, exc
            )
            return
        self.state = state

    def kept_sink_offsets(self, checkpoint: Checkpoint) -> dict[str, int]:
        """The checkpoint's sink offsets, for the sinks that still write where they did.

        A sink now pointed elsewhere (another file, another topic) is not rolled back
        to an offset of its old destination: that would cut the new one. It starts as
        a new sink does; the change is logged and recorded.
        """
        offsets = dict(checkpoint.sink_offsets)
        if checkpoint.sinks is None:
            return offsets
        for name in list(offsets):
            old, new = checkpoint.sinks.get(name), self.sink_ids.get(name)
            if old is None or new is None or old == new:
                continue
            del offsets[name]
            self._changed(
                Stage.SINK,
                f"sink {name!r}",
                checkpoint.version,
                (old, new),
                "its committed offset is not applied to the new destination",
            )
        return offsets

    def _changed(
        self,
        stage: Stage,
        what: str,
        version: str | None,
        identities: tuple[Mapping[str, Any], Mapping[str, Any]],
        outcome: str,
    ) -> None:
        """Warn that a connector changed since the checkpoint; record it as an error."""
        old, new = identities
        message = (
            f"{what} changed since the checkpoint of version {version}: was "
            f"{describe_source(old)}, now {describe_source(new)}; {outcome}"
        )
        _log.warning("job %r: %s", self.context.job.name, message)
        self.context.record_error(stage, message, kind=ErrorKind.CONFIGURATION)

    def sink_lengths(self) -> dict[str, int]:
        """The committed length of every sink that can roll back (after a flush)."""
        lengths = {}
        for sink in self.context.sinks:
            offset = sink.committed_offset()
            if offset is not None:
                lengths[sink.name] = offset
        return lengths

    def commit(self, batch: SourceBatch | None) -> None:
        ctx = self.context
        ctx.flush_sinks()
        offsets = self.sink_lengths()
        dlq_offset = ctx.flush_dead_letters()
        position = batch.position if batch is not None else self.position
        state = ctx.executor.snapshot()
        self.batches += 1
        self.save(
            Checkpoint(position=position, sink_offsets=offsets, dlq_offset=dlq_offset, state=state)
        )
        self.position, self.state = position, state
        self.sink_offsets, self.dlq_offset = offsets, dlq_offset
        _log.debug("job %r: committed batch %d at %s", ctx.job.name, self.batches, position)

    def save(self, checkpoint: Checkpoint) -> None:
        """Persist the checkpoint, then tell the source; a failure is a commit error."""
        ctx = self.context
        checkpoint.version = ctx.job.version
        checkpoint.batches = self.batches
        checkpoint.source = self.source_id
        checkpoint.sources = self.source_ids if len(self.source_ids) > 1 else None
        checkpoint.sinks = self.sink_ids
        try:
            if ctx.checkpoints is not None:
                ctx.checkpoints.save(ctx.job.name, checkpoint)
            if checkpoint.position is not None:
                ctx.source.commit(checkpoint.position)
        except Exception as exc:
            ctx.record_error(Stage.COMMIT, f"commit failed: {exc}", exc=exc)
            raise

    def abort(self) -> bool:
        """Rewind to the last commit: sinks that can roll back and the dead letters are
        cut back to their committed lengths, then the state and the source rewind.
        Nothing is rolled forward in simple mode: False."""
        ctx = self.context
        _log.debug("job %r: abort, rewinding to %s", ctx.job.name, self.position)
        for sink in ctx.sinks:
            offset = self.sink_offsets.get(sink.name)
            if offset is not None and sink.committed_offset() is not None:
                sink.truncate(offset)
        if ctx.dlq is not None:
            ctx.dlq.truncate(self.dlq_offset)
        if self.state is not None:
            ctx.executor.restore(self.state)
        ctx.source.seek(self.position)
        return False


def _holds_data(state: dict[str, Any]) -> bool:
    """Whether an executor state keeps any data (its groups, windows, rows are tables)."""
    return any(isinstance(value, pa.Table) and value.num_rows for value in state.values())
