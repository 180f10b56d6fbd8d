"""A piped file source infers its columns only from what the writer has committed.

The writer's sink writes before it commits, and a simple-mode retry cuts the file
back to its last commit: bytes past the committed length may never be part of the
file. A reader with no schema from the pipe yet (the writer committed no row since it
started) must not infer its columns from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from velostream.datasource.file.pipe import Pipe
from velostream.datasource.file.source import FileSource

HEADER = b"id,total\n"


@contextmanager
def _piped(path: Path) -> Iterator[tuple[FileSource, Pipe]]:
    source = FileSource("src", {"path": str(path), "format": "csv", "polling_interval": "10ms"})
    pipe = Pipe("writer", str(path))
    source.attach_pipe(pipe)
    source.open()
    try:
        yield source, pipe
    finally:
        source.close()


def test_uncommitted_bytes_are_not_inferred_from(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(HEADER + b"x,y\n")  # written, not committed: the header only is
    with _piped(path) as (source, pipe):
        pipe.publish(len(HEADER))  # no schema: the writer has committed no row yet
        batch = source.read_batch(100)
        assert batch is not None and batch.num_records == 0

        path.write_bytes(HEADER + b"1,2.5\n2,4.0\n")  # the retry's rows, committed
        pipe.publish(path.stat().st_size)
        batch = source.read_batch(100)
    assert batch is not None
    assert batch.table.schema.field("total").type == pa.float64()
    assert batch.table.column("total").to_pylist() == [2.5, 4.0]


def test_an_ended_pipe_with_only_a_header_committed_ends(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(HEADER)
    with _piped(path) as (source, pipe):
        pipe.publish(len(HEADER))
        pipe.end()
        assert source.read_batch(100) is None
