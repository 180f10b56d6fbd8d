"""A job's side of its pipes: after each commit it publishes what its file sinks have
committed to the later statements that read its output (`datasource/file/pipe.py`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from velostream.datasource.file.pipe import Pipe

__all__ = ["PipeWriter"]


class PipeWriter:
    """The pipes of one job's sinks, by sink name; publishes, ends and fails them."""

    def __init__(self) -> None:
        self.pipes: dict[str, Pipe] = {}
        self._schema: pa.Schema | None = None

    def attach(self, sink: str, pipe: Pipe) -> None:
        self.pipes[sink] = pipe

    def wrote(self, table: pa.Table) -> None:
        """Rows of `table`'s schema went to the sinks (the schema their readers decode)."""
        if self.pipes:
            self._schema = table.schema

    def publish(self, committer: Any) -> None:
        """Publish each piped sink's committed length, as `committer` last committed it."""
        offsets: dict[str, int] = getattr(committer, "sink_offsets", None) or {}
        for sink, pipe in self.pipes.items():
            committed = offsets.get(sink)
            if committed is not None:
                pipe.publish(committed, self._schema)

    def end(self) -> None:
        for pipe in self.pipes.values():
            pipe.end()

    def fail(self, reason: str) -> None:
        for pipe in self.pipes.values():
            pipe.fail(reason)
