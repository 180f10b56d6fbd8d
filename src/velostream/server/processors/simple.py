"""Simple mode: at-least-once.

A batch's source position is committed only after its sink writes and its dead
letters are durable; a crash before the commit replays the batch (duplicates are
possible, losses are not). An abort rewinds the source and the executor's state to
the last commit; what was written stays.

A sink that can roll back (a file) has its committed length recorded in the
checkpoint too. A job that resumes from a checkpoint — after a crash, a restart or a
redeploy — cuts such a sink back to that length before writing again, so the output
of before keeps its committed rows and loses only the torn tail a crash can leave (a
half-written line), which the replayed batches write again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from velostream.datasource.traits import SourceBatch
from velostream.errors import Stage
from velostream.server.checkpoint import Checkpoint

if TYPE_CHECKING:
    from velostream.server.processors.processor import JobProcessor

__all__ = ["SimpleCommitter"]

_log = logging.getLogger("velostream.processor")


class SimpleCommitter:
    """Flush sinks, flush dead letters, then persist the position (and state).

    `recover` runs before the sinks are opened: a sink that opens by truncating its
    destination must find it already positioned when the job resumes.
    """

    def __init__(self, processor: JobProcessor) -> None:
        self.p = processor
        self.position: Any = None
        self.state: Any = None
        self.batches = 0
        self.sink_offsets: dict[str, int] = {}
        self.dlq_offset: int | None = None

    def recover(self) -> None:
        p = self.p
        self.state = p.executor.snapshot()
        checkpoint = p.checkpoints.load(p.job.name) if p.checkpoints is not None else None
        if checkpoint is None:
            return
        self.restore(checkpoint)
        self.sink_offsets = dict(checkpoint.sink_offsets)
        self.dlq_offset = checkpoint.dlq_offset
        for sink in p.sinks:
            offset = self.sink_offsets.get(sink.name)
            if offset is not None and sink.committed_offset() is not None:
                sink.truncate(offset)
        _log.info(
            "job %r: resuming from checkpoint %d at %s",
            p.job.name,
            checkpoint.batches,
            checkpoint.position,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        p = self.p
        self.batches = checkpoint.batches
        if checkpoint.state is not None:
            p.executor.restore(checkpoint.state)
            self.state = checkpoint.state
        if checkpoint.position is not None:
            p.source.commit(checkpoint.position)
            p.source.seek(checkpoint.position)
            self.position = checkpoint.position

    def sink_lengths(self) -> dict[str, int]:
        """The committed length of every sink that can roll back (after a flush)."""
        lengths = {}
        for sink in self.p.sinks:
            offset = sink.committed_offset()
            if offset is not None:
                lengths[sink.name] = offset
        return lengths

    def commit(self, batch: SourceBatch | None) -> None:
        p = self.p
        p.flush_sinks()
        offsets = self.sink_lengths()
        dlq_offset = p.flush_dead_letters()
        position = batch.position if batch is not None else self.position
        state = p.executor.snapshot()
        self.batches += 1
        self.save(
            Checkpoint(position=position, sink_offsets=offsets, dlq_offset=dlq_offset, state=state)
        )
        self.position, self.state = position, state
        self.sink_offsets, self.dlq_offset = offsets, dlq_offset

    def save(self, checkpoint: Checkpoint) -> None:
        """Persist the checkpoint, then tell the source; a failure is a commit error."""
        p = self.p
        checkpoint.version = p.job.version
        checkpoint.batches = self.batches
        try:
            if p.checkpoints is not None:
                p.checkpoints.save(p.job.name, checkpoint)
            if checkpoint.position is not None:
                p.source.commit(checkpoint.position)
        except Exception as exc:
            p.record_error(Stage.COMMIT, f"commit failed: {exc}", exc=exc)
            raise

    def abort(self) -> None:
        """Rewind to the last commit: what was written stays (at-least-once)."""
        p = self.p
        if p.dlq is not None:
            p.dlq.truncate(None)
        if self.state is not None:
            p.executor.restore(self.state)
        p.source.seek(self.position)
