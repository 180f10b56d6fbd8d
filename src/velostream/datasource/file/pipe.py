"""A pipe: what one job's file sink has committed, for a later statement of the same
application that reads that statement's output (a pipeline, `FROM earlier_statement`).

The writing job publishes after each commit: the file's committed length and the
schema of the rows it writes. The reading job's `file_source` reads only below that
length, so it never sees rows the writer could still roll back (a simple-mode
retry or restart cuts the file back to its last commit); it decodes with the
writer's schema rather than inferring one. The writer ends the pipe when its own
sources have ended and its last batch is committed: the reader then reads to the
committed length and ends too. A writer that fails fails the pipe, and the reader
fails with the writer's reason; one stopped or paused leaves the reader waiting, as
a reader of a topic would.

A pipe lives in one process (the job server's); after a restart the writer
publishes again once it has recovered, and the reader waits for that first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa

__all__ = ["Pipe", "PipeState"]


@dataclass(frozen=True, slots=True)
class PipeState:
    """What a reader may read: None `committed` means the writer has not recovered yet."""

    committed: int | None = None
    schema: pa.Schema | None = None
    ended: bool = False
    failure: str | None = None


class Pipe:
    """One writer's committed file length, schema and end; see the module docstring."""

    def __init__(self, writer: str, path: str) -> None:
        self.writer = writer
        self.path = path
        self._state = PipeState()
        self._changed = threading.Condition()

    @property
    def state(self) -> PipeState:
        return self._state

    def publish(self, committed: int, schema: pa.Schema | None = None) -> None:
        """The writer committed up to `committed` bytes (a restart may publish less)."""
        with self._changed:
            self._state = PipeState(committed, schema or self._state.schema, False, None)
            self._changed.notify_all()

    def end(self) -> None:
        """The writer's sources ended and its last batch is committed."""
        with self._changed:
            self._state = PipeState(self._state.committed, self._state.schema, True, None)
            self._changed.notify_all()

    def fail(self, reason: str) -> None:
        """The writer failed: its reader fails with `reason`."""
        with self._changed:
            state = self._state
            self._state = PipeState(state.committed, state.schema, False, reason)
            self._changed.notify_all()

    def wait(self, seen: PipeState, timeout: float) -> PipeState:
        """The state once it differs from `seen`, or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._state is not seen, timeout)
            return self._state
