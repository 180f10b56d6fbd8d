"""file_sink on a disk that fills part-way through a batch: the write leaves a torn line
in the file and unwritten bytes in the stream's buffer. Rolling back (`truncate`, or
`discard` when staged) must leave exactly the committed bytes, whether the disk is
still full or has room again, and those buffered bytes must never land later."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tests.fulldisk import Disk
from velostream.datasource.file.sink import FileSink
from velostream.errors import ResourceExhaustedError

ROWS = pa.table({"a": [1, 2]})
COMMITTED = b"a\n1\n2\n"
SMALL = pa.table({"a": list(range(1_000))})  # fits a stream's buffer (8 KiB)
BIG = pa.table({"a": list(range(20_000))})  # does not
BATCH_LINES = [str(i) for i in range(1_000)] + [str(i) for i in range(20_000)]


def _on(disk: Disk, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(FileSink, "_open_stream", lambda self: disk.stream(self._stream_path, mode))


def _fail_part_way(sink: FileSink, disk: Disk) -> None:
    """A batch in two writes: the first sits in the stream's buffer; the second makes
    it write that out, which stops after 5 bytes, and ENOSPC keeps the rest buffered."""
    sink.write(SMALL)
    disk.fill(5)  # room for "0\n1\n2": the line after is torn
    with pytest.raises(ResourceExhaustedError, match="no space left writing"):
        sink.write(BIG)
    assert disk.refused == 1


def _retry(sink: FileSink) -> None:
    sink.write(SMALL)
    sink.write(BIG)
    sink.flush()


@pytest.mark.parametrize("room_again", [True, False], ids=["space-freed", "still-full"])
def test_truncate_after_a_write_torn_by_a_full_disk_keeps_exactly_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room_again: bool
) -> None:
    path = tmp_path / "o.csv"
    disk = Disk()
    _on(disk, monkeypatch, "wb")
    sink = FileSink("out", {"path": str(path)})
    sink.write(ROWS)
    sink.flush()
    committed = sink.committed_offset()
    assert committed == len(COMMITTED)
    _fail_part_way(sink, disk)
    assert path.read_bytes() == COMMITTED + b"0\n1\n2", "torn part-way through a line"
    if room_again:
        disk.free()  # closing the failed stream now lands its buffered bytes: cut too
    sink.truncate(committed)
    assert path.read_bytes() == COMMITTED
    disk.free()
    _retry(sink)
    assert sink.committed_offset() == path.stat().st_size
    sink.close()
    assert path.read_text().splitlines() == ["a", "1", "2", *BATCH_LINES]


def test_truncate_to_nothing_after_a_torn_first_batch_writes_the_header_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.csv"
    disk = Disk()
    _on(disk, monkeypatch, "wb")
    sink = FileSink("out", {"path": str(path)})
    sink.open()
    _fail_part_way(sink, disk)
    sink.truncate(0)
    assert path.read_bytes() == b""
    disk.free()
    _retry(sink)
    sink.close()
    assert path.read_text().splitlines() == ["a", *BATCH_LINES]


def test_discard_after_a_staged_write_torn_by_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactional mode: the abort's discard empties the staging file though the disk
    is still full (the stream's buffer is dropped, not flushed), and the next batch
    publishes after the committed bytes."""
    path = tmp_path / "o.csv"
    disk = Disk()
    _on(disk, monkeypatch, "w+b")
    sink = FileSink("out", {"path": str(path)})
    sink.begin_staging(0)
    sink.open()
    sink.write(ROWS)
    sink.flush()
    sink.publish()
    assert path.read_bytes() == COMMITTED
    _fail_part_way(sink, disk)
    sink.discard()
    assert Path(sink.staging_path).read_bytes() == b"" and path.read_bytes() == COMMITTED
    assert sink.committed_offset() == len(COMMITTED)
    disk.free()
    _retry(sink)
    sink.publish()
    sink.close()
    assert path.read_text().splitlines() == ["a", "1", "2", *BATCH_LINES]
