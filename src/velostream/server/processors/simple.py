"""Simple mode: at-least-once.

A batch's source position is committed only after its sink writes and its dead
letters are durable; a crash before the commit replays the batch (duplicates are
possible, losses are not). An abort rewinds the source and the executor's state to
the last commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from velostream.datasource.traits import SourceBatch
from velostream.errors import Stage
from velostream.server.checkpoint import Checkpoint

if TYPE_CHECKING:
    from velostream.server.processors.processor import JobProcessor

__all__ = ["SimpleCommitter"]


class SimpleCommitter:
    """Flush sinks, flush dead letters, then persist the position (and state)."""

    def __init__(self, processor: JobProcessor) -> None:
        self.p = processor
        self.position: Any = None
        self.state: Any = None
        self.batches = 0

    def recover(self) -> None:
        p = self.p
        self.state = p.executor.snapshot()
        if p.checkpoints is None:
            return
        checkpoint = p.checkpoints.load(p.job.name)
        if checkpoint is None:
            return
        self.restore(checkpoint)

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

    def commit(self, batch: SourceBatch | None) -> None:
        p = self.p
        p.flush_sinks()
        dlq_offset = p.flush_dead_letters()
        position = batch.position if batch is not None else self.position
        self.state = p.executor.snapshot()
        self.batches += 1
        self.save(Checkpoint(position=position, dlq_offset=dlq_offset, state=self.state))
        self.position = position

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
