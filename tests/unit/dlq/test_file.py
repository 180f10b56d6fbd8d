"""The file dead-letter queue: original records with their context, durable on flush,
rolled into segments named by offset, cut back to a committed offset; a write that
runs out of space is taken back, and a torn or unreadable line is skipped and
reported, never raised."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fulldisk import Disk
from tests.unit.dlq.letters import bad, letters
from velostream.dlq import FileDeadLetterQueue, dead_letter, letters_to_replay
from velostream.errors import DeadLetterError, ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext


def test_file_dlq_keeps_the_original_record_and_context(tmp_path: Path) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "dlq" / "j.jsonl")
    ctx = DeploymentContext(node_id="n1", node_name="N", region="r", version="2")
    letters = [
        dead_letter(
            bad(i, raw),
            job="j",
            app="a",
            version="2",
            source="src",
            fingerprint="fp",
            context=ctx,
        )
        for i, raw in enumerate([b"1,x", b"\xff\xfe"])
    ]
    dlq.write(letters)
    assert dlq.read() == ([], None)  # nothing durable before flush
    offset = dlq.flush()
    assert offset == (tmp_path / "dlq" / "j.jsonl").stat().st_size
    page, nxt = dlq.read()
    assert nxt is None
    assert [d.payload for d in page] == [b"1,x", b"\xff\xfe"]
    first = page[0].doc
    assert first["payload"] == "1,x" and "payload_base64" in page[1].doc
    for key, value in {
        "job": "j",
        "app": "a",
        "version": "2",
        "stage": Stage.DESERIALIZE.value,
        "kind": "TypeError",
        "message": "bad",
        "fingerprint": "fp",
        "source": "src",
        "position": "f.csv:0",
        "node_id": "n1",
        "node_name": "N",
        "region": "r",
        "replayed": False,
    }.items():
        assert first[key] == value, key
    dlq.mark_replayed([page[0].id])
    assert [d.doc["replayed"] for d in dlq.read()[0]] == [True, False]


def test_file_dlq_truncates_to_a_committed_offset_and_pages(tmp_path: Path) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl")
    ctx = DeploymentContext()
    make = [
        dead_letter(
            bad(i), job="j", app=None, version=None, source="s", fingerprint=None, context=ctx
        )
        for i in range(5)
    ]
    dlq.write(make[:2])
    committed = dlq.flush()
    dlq.write(make[2:])
    dlq.flush()
    dlq.truncate(committed)
    assert [d.doc["position"] for d in dlq.read()[0]] == ["f.csv:0", "f.csv:1"]
    dlq.write(make[2:])
    dlq.flush()
    page, nxt = dlq.read(0, 2)
    assert len(page) == 2 and nxt == 2
    page, nxt = dlq.read(nxt, 2)
    assert [d.doc["position"] for d in page] == ["f.csv:2", "f.csv:3"] and nxt == 4


def _positions(dlq: FileDeadLetterQueue) -> list[str]:
    return [d.doc["position"] for d in dlq.read(0, 1000)[0]]


def test_file_dlq_rolls_into_segments_named_by_offset_and_reads_everything(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=200, backups=10)
    offsets = []
    for i in range(6):
        dlq.write(letters(i))
        offsets.append(dlq.flush())
    segments = sorted(p.name for p in tmp_path.glob("j.jsonl.0*"))
    assert segments, "no roll"
    # A segment's name is its base offset: the bytes of every letter before it.
    sizes = [(tmp_path / name).stat().st_size for name in segments]
    assert [int(n.rsplit(".", 1)[1]) for n in segments] == [
        sum(sizes[:k]) for k in range(len(sizes))
    ]
    # Offsets count the whole log, so they only grow, across rolls.
    assert (
        offsets == sorted(offsets)
        and offsets[-1] == sum(sizes) + (tmp_path / "j.jsonl").stat().st_size
    )
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(6)]


def test_rolling_back_past_a_roll_reopens_the_segment_holding_the_offset(tmp_path: Path) -> None:
    """An abort (or a restart) after a batch whose flush rolled the file: the committed
    offset lies in the sealed segment, which becomes live again, cut at the offset."""
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=200, backups=10)
    dlq.write(letters(0, 1))
    dlq.flush()
    dlq.write(letters(1, 1))
    committed = dlq.flush()  # inside the first segment once the next flush rolls
    assert committed >= 200
    dlq.write(letters(2, 2))
    assert dlq.flush() > committed
    assert list(tmp_path.glob("j.jsonl.0*")), "the uncommitted batch went to a new live file"
    dlq.truncate(committed)
    assert _positions(dlq) == ["f.csv:0", "f.csv:1"]
    kept = [*tmp_path.glob("j.jsonl.0*"), tmp_path / "j.jsonl"]
    assert sum(p.stat().st_size for p in kept if p.exists()) == committed
    # The retried batch is written once; offsets go on from the committed one.
    dlq.write(letters(2, 2))
    after = dlq.flush()
    assert after > committed
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(4)]
    # A torn tail inside the live file is cut back too (a crash mid-append).
    with open(tmp_path / "j.jsonl", "ab") as out:
        out.write(b'{"torn": ')
    dlq.truncate(after)
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(4)]


def test_old_segments_beyond_the_backups_are_deleted_and_offsets_stay_global(
    tmp_path: Path,
) -> None:
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl", max_bytes=1, backups=2)
    offsets = []
    for i in range(6):
        dlq.write(letters(i))
        offsets.append(dlq.flush())
    assert len(list(tmp_path.glob("j.jsonl.0*"))) == 2
    assert _positions(dlq) == ["f.csv:3", "f.csv:4", "f.csv:5"]
    assert offsets == sorted(offsets)
    dlq.truncate(offsets[4])  # the last commit: rolled back across the last roll
    assert _positions(dlq) == ["f.csv:3", "f.csv:4"]
    with pytest.raises(DeadLetterError, match="deleted"):
        dlq.truncate(offsets[0])  # long gone: said, not guessed


def test_a_dlq_write_failure_is_an_error_not_a_loss(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    dlq = FileDeadLetterQueue(blocker / "j.jsonl")
    dlq.write(letters(0))
    with pytest.raises(DeadLetterError, match="cannot write dead letters"):
        dlq.flush()


# --- a disk that fills; torn and unreadable lines ------------------------------------


class Reports(list[tuple[str, ErrorKind]]):
    """What a queue reported, as its `report` hook."""

    def __call__(self, message: str, kind: ErrorKind) -> None:
        self.append((message, kind))


def _raising(exc: OSError) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise exc

    return fail


def _on_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk = Disk()
    disk.patch_os_write(monkeypatch, tmp_path)
    return disk


def test_a_flush_that_runs_out_of_space_takes_its_letters_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _on_full_disk(tmp_path, monkeypatch)
    dlq = FileDeadLetterQueue(tmp_path / "j.jsonl")
    dlq.write(letters(0, 2))
    committed = dlq.flush()
    disk.fill(100)  # part of the next letter fits
    dlq.write(letters(2, 3))
    with pytest.raises(DeadLetterError, match="No space left on device"):
        dlq.flush()
    assert disk.refused == 1
    assert (tmp_path / "j.jsonl").stat().st_size == committed, "the torn write was taken back"
    disk.free()
    dlq.write(letters(2, 3))  # the batch again, after a restart
    dlq.flush()
    assert _positions(dlq) == [f"f.csv:{i}" for i in range(5)]
    assert dlq.unreadable == 0


def test_a_torn_tail_is_skipped_and_reported_once_then_cut_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The take-back itself fails (or a crash came first): the torn line stays until
    the queue settles; readers skip it, and it is reported once."""
    disk = _on_full_disk(tmp_path, monkeypatch)
    path = tmp_path / "j.jsonl"
    dlq = FileDeadLetterQueue(path)
    dlq.report = reports = Reports()
    dlq.write(letters(0, 2))
    committed = dlq.flush()
    disk.fill(100)
    monkeypatch.setattr(os, "ftruncate", _raising(OSError(errno.EIO, "Input/output error")))
    dlq.write(letters(2, 1))
    with pytest.raises(DeadLetterError):
        dlq.flush()
    assert path.stat().st_size == committed + 100 and not path.read_bytes().endswith(b"\n")
    for _ in range(3):  # listed again and again: one report
        assert _positions(dlq) == ["f.csv:0", "f.csv:1"]
    assert [d.doc["position"] for d in letters_to_replay(dlq)] == ["f.csv:0", "f.csv:1"]
    assert reports == [
        (f"dead letters: skipped a torn last line (100 bytes) in {path} at byte {committed}", IO)
    ]
    assert dlq.unreadable == 1
    assert "skipped a torn last line" in caplog.text
    monkeypatch.undo()  # space again, and truncation works
    dlq.write(letters(2, 1))
    dlq.flush()
    assert _positions(dlq) == ["f.csv:0", "f.csv:1", "f.csv:2"]
    assert reports[1] == (
        f"dead letters: cut a torn last line of 100 bytes from {path} (a write that was "
        "never committed)",
        IO,
    )


def test_settle_cuts_what_a_crash_left_and_says_the_committed_length(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    first = FileDeadLetterQueue(path)
    first.write(letters(0, 2))
    whole = first.flush()
    with open(path, "ab") as out:
        out.write(b'{"id": "torn", "job": "j", "payl')  # the crash
    dlq = FileDeadLetterQueue(path)
    dlq.report = reports = Reports()
    assert dlq.settle() == whole == path.stat().st_size
    assert [kind for _, kind in reports] == [IO]
    assert dlq.settle() == whole and len(reports) == 1


def test_a_line_that_is_not_a_dead_letter_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    dlq = FileDeadLetterQueue(path)
    dlq.report = reports = Reports()
    dlq.write(letters(0, 1))
    dlq.flush()
    with open(path, "ab") as out:
        out.write(b'not json\n[1, 2]\n{"no": "id"}\n\n')
    dlq.write(letters(1, 1))
    dlq.flush()
    page, nxt = dlq.read(0, 1)
    assert [d.doc["position"] for d in page] == ["f.csv:0"] and nxt == 1
    assert [d.doc["position"] for d in dlq.read(nxt, 10)[0]] == ["f.csv:1"]
    assert [kind for _, kind in reports] == [PARSE, PARSE, PARSE]
    assert "a line that is not a dead letter (9 bytes)" in reports[0][0]


IO, PARSE = ErrorKind.IO, ErrorKind.PARSE
