"""file_source with watch: follow a growing file, pick up new files, survive truncation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from velostream.datasource.file.source import FileSource
from velostream.datasource.traits import SourceBatch


def _watch(path: Path | str) -> FileSource:
    return FileSource("live", {"path": str(path), "watch": "true", "polling_interval": "10ms"})


def _rows(batch: SourceBatch | None) -> list[dict[str, object]]:
    assert batch is not None, "an unbounded source never ends"
    return batch.table.to_pylist()


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_follows_appended_lines_between_reads(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    path.write_text("n,s\n1,a\n")
    source = _watch(path)
    assert not source.bounded
    assert _rows(source.read_batch(100)) == [{"n": 1, "s": "a"}]
    started = time.monotonic()
    idle = source.read_batch(100)
    assert _rows(idle) == [] and time.monotonic() - started >= 0.01
    assert idle is not None and tuple(idle.position) == (0, 8, 2)
    _append(path, "2,b\n3,c\n4,")  # the last line is not complete yet
    batch = source.read_batch(100)
    assert _rows(batch) == [{"n": 2, "s": "b"}, {"n": 3, "s": "c"}]
    assert batch is not None and batch.refs.ref(1) == f"{path}:4"
    assert _rows(source.read_batch(100)) == []
    _append(path, "d\n")
    batch = source.read_batch(100)
    assert _rows(batch) == [{"n": 4, "s": "d"}]
    assert batch is not None and batch.refs.ref(0) == f"{path}:5"
    source.close()


def test_reads_while_a_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    path.write_text("n\n0\n")
    total = 300

    def writer() -> None:
        for i in range(1, total):
            _append(path, f"{i}\n")
            if i % 50 == 0:
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    source = _watch(path)
    seen: list[object] = []
    thread.start()
    deadline = time.monotonic() + 10
    while len(seen) < total and time.monotonic() < deadline:
        seen.extend(r["n"] for r in _rows(source.read_batch(64)))
    thread.join()
    source.close()
    assert seen == list(range(total))


def test_waits_for_a_file_that_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    path.write_text("")
    source = _watch(path)
    assert _rows(source.read_batch(10)) == []
    _append(path, "n,s\n")
    assert _rows(source.read_batch(10)) == []
    _append(path, "5,x\n")
    assert _rows(source.read_batch(10)) == [{"n": 5, "s": "x"}]
    source.close()


def test_picks_up_new_files_of_the_glob(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"n": 1}\n{"n": 2}')
    source = _watch(tmp_path / "*.jsonl")
    assert _rows(source.read_batch(10)) == [{"n": 1}]
    (tmp_path / "b.jsonl").write_text('{"n": 3}\n')
    # a.jsonl is no longer the last file: its unterminated last line is complete.
    assert _rows(source.read_batch(10)) == [{"n": 2}]
    assert _rows(source.read_batch(10)) == [{"n": 3}]
    (tmp_path / "0.jsonl").write_text('{"n": 0}\n')  # sorts before: not picked up
    assert _rows(source.read_batch(10)) == []
    source.close()


def test_a_truncated_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    path.write_text("n\n1\n2\n3\n")
    source = _watch(path)
    assert len(_rows(source.read_batch(10))) == 3
    path.write_text("n\n9\n")
    assert _rows(source.read_batch(10)) == [{"n": 9}]
    assert _rows(source.read_batch(10)) == []
    source.close()
