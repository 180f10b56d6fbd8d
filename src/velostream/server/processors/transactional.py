"""Transactional mode: a batch's outputs, dead letters and source position commit
together or not at all.

Each sink reports its committed length after a flush (a file sink its byte length);
the checkpoint stores those lengths with the DLQ length, the source position and the
executor state, and is replaced atomically (write, fsync, rename). An abort — or a
restart after a crash — truncates every sink and the DLQ back to the committed
lengths and rewinds the source, so the batch is processed again exactly once.
"""

from __future__ import annotations

from velostream.errors import ConfigurationError
from velostream.server.processors.simple import SimpleCommitter

__all__ = ["TransactionalCommitter"]


class TransactionalCommitter(SimpleCommitter):
    """All-or-nothing commits over sinks that can be truncated to a committed length.

    Like `SimpleCommitter.recover`, `recover` runs before the sinks are opened.
    """

    def recover(self) -> None:
        p = self.p
        for sink in p.sinks:
            if sink.committed_offset() is None:
                raise ConfigurationError(
                    f"sink {sink.name!r} cannot take part in transactional mode "
                    "(it cannot roll back); use job_mode simple",
                    job=p.job.name,
                )
        # Before any checkpoint, a sink's committed length is what its open keeps.
        self.sink_offsets = self.sink_lengths()
        self.dlq_offset = None
        self.state = p.executor.snapshot()
        checkpoint = p.checkpoints.load(p.job.name) if p.checkpoints is not None else None
        if checkpoint is not None:
            self.sink_offsets.update(checkpoint.sink_offsets)
            self.dlq_offset = checkpoint.dlq_offset
            self.restore(checkpoint)
        self._rollback_outputs()

    def _rollback_outputs(self) -> None:
        p = self.p
        for sink in p.sinks:
            sink.truncate(self.sink_offsets.get(sink.name, 0))
        if p.dlq is not None:
            p.dlq.truncate(self.dlq_offset)

    def abort(self) -> None:
        """Undo everything since the last commit: outputs, dead letters, position, state."""
        p = self.p
        self._rollback_outputs()
        if self.state is not None:
            p.executor.restore(self.state)
        p.source.seek(self.position)
