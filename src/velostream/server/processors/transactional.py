"""Transactional mode: a batch's outputs, dead letters and source position commit
together or not at all.

A sink that can stage (`StagingSink`, e.g. a file) writes the batch aside; its
`flush` prepares it, and its committed length — what it will hold once the batch is
published — goes into the checkpoint with the DLQ length, the source position and
the executor state. The checkpoint is replaced atomically (write, fsync, rename), and
only then is each staged batch published, so readers of a sink's output see committed
rows only. Once the checkpoint is saved the batch is rolled forward, never back: a
failed publish is tried again by the abort, and after a crash by `begin_staging`.

A sink that cannot stage but can truncate (the memory sink) is written directly and
cut back to its committed length. An abort discards the staged batches, truncates the
other sinks and the DLQ and rewinds the source and state, so the batch is processed
again exactly once; a restart after a crash settles every sink to the checkpoint.
"""

from __future__ import annotations

import logging

from velostream.datasource.traits import SourceBatch, StagingSink
from velostream.errors import ConfigurationError, Stage
from velostream.server.processors.context import CommitContext
from velostream.server.processors.simple import SimpleCommitter

__all__ = ["TransactionalCommitter"]

_log = logging.getLogger("velostream.processor")


class TransactionalCommitter(SimpleCommitter):
    """All-or-nothing commits over sinks that can stage or be truncated.

    Like `SimpleCommitter.recover`, `recover` runs before the sinks are opened.
    """

    def __init__(self, context: CommitContext) -> None:
        super().__init__(context)
        self._publish_due = False  # the checkpoint holds staged batches not yet published

    def recover(self) -> None:
        ctx = self.context
        for sink in ctx.sinks:
            if sink.committed_offset() is None:
                raise ConfigurationError(
                    f"sink {sink.name!r} cannot take part in transactional mode "
                    "(it cannot roll back); use job_mode simple",
                    job=ctx.job.name,
                )
        # Before any checkpoint, a sink's committed length is what its open keeps.
        self.sink_offsets = self.sink_lengths()
        self.state = ctx.executor.snapshot()
        checkpoint = ctx.checkpoints.load(ctx.job.name) if ctx.checkpoints is not None else None
        self.dlq_offset = self.committed_dlq_offset(checkpoint)
        if checkpoint is not None:
            self.sink_offsets.update(self.kept_sink_offsets(checkpoint))
            self.restore(checkpoint)
        for sink in ctx.sinks:
            committed = self.sink_offsets.get(sink.name, 0)
            if isinstance(sink, StagingSink):
                sink.begin_staging(committed)  # rolls a crashed publish forward
            else:
                sink.truncate(committed)
        if ctx.dlq is not None:
            ctx.dlq.truncate(self.dlq_offset)

    def commit(self, batch: SourceBatch | None) -> None:
        """Prepare (flush), save the checkpoint, then publish the staged batches."""
        super().commit(batch)
        self._publish_due = True
        self._publish()

    def _publish(self) -> None:
        ctx = self.context
        for sink in ctx.sinks:
            if isinstance(sink, StagingSink):
                try:
                    sink.publish()
                except Exception as exc:
                    ctx.record_error(Stage.SINK, f"publishing {sink.name}: {exc}", exc=exc)
                    raise
        self._publish_due = False
        _log.debug("job %r: published the staged batch of every sink", ctx.job.name)

    def abort(self) -> bool:
        """Undo everything since the last commit: outputs, dead letters, position, state.

        A batch the checkpoint already holds is published instead (rolled forward, and
        True is returned); if that fails again the abort raises, and the job's restart
        publishes it.
        """
        ctx = self.context
        _log.debug("job %r: abort, rewinding sinks, dead letters and source", ctx.job.name)
        rolled_forward = self._publish_due
        if rolled_forward:
            self._publish()
        for sink in ctx.sinks:
            if isinstance(sink, StagingSink):
                sink.discard()
            else:
                sink.truncate(self.sink_offsets.get(sink.name, 0))
        if ctx.dlq is not None:
            ctx.dlq.truncate(self.dlq_offset)
        if self.state is not None:
            ctx.executor.restore(self.state)
        ctx.source.seek(self.position)
        return rolled_forward
