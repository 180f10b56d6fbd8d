"""Replay bookkeeping: every queue marks replayed letters the same way, and a file
keeps them across queues and restarts — whole ids only, on a full disk or after a crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fulldisk import Disk
from tests.unit.dlq.letters import letters as make_letters
from velostream.dlq import (
    DeadLetterQueue,
    FileDeadLetterQueue,
    MemoryDeadLetterQueue,
    ReplayLog,
    letters_to_replay,
)
from velostream.errors import DeadLetterError


def _file(tmp_path: Path) -> DeadLetterQueue:
    return FileDeadLetterQueue(tmp_path / "j.jsonl")


def _memory(tmp_path: Path) -> DeadLetterQueue:
    return MemoryDeadLetterQueue()


@pytest.mark.parametrize("make", [_file, _memory])
def test_a_queue_marks_the_letters_it_was_told_were_replayed(
    make: Callable[[Path], DeadLetterQueue], tmp_path: Path
) -> None:
    queue = make(tmp_path)
    letters = make_letters(0, 3)
    queue.write(letters)
    queue.flush()
    assert [d.doc["replayed"] for d in queue.read()[0]] == [False, False, False]
    queue.mark_replayed([letters[0].id, letters[2].id])
    assert [d.doc["replayed"] for d in queue.read()[0]] == [True, False, True]


def test_a_file_log_is_shared_by_every_queue_on_its_path(tmp_path: Path) -> None:
    path = tmp_path / "dlq" / "j.kafka.replayed"
    first, second = ReplayLog(path), ReplayLog(path)
    first.add(["a", "b"])
    assert second.ids() == {"a", "b"}
    second.add(["c"])
    assert first.ids() == {"a", "b", "c"}
    assert path.read_text().split() == ["a", "b", "c"]


def test_a_log_without_a_file_remembers_in_memory(tmp_path: Path) -> None:
    log = ReplayLog()
    log.add(["a"])
    assert log.ids() == {"a"}
    assert not list(tmp_path.iterdir())


def test_a_log_that_cannot_write_its_file_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(DeadLetterError, match="cannot record replayed letters"):
        ReplayLog(blocker / "j.replayed").add(["a"])


def test_letters_to_replay_are_the_unreplayed_ones_in_order_across_pages() -> None:
    queue = MemoryDeadLetterQueue()
    queue.write(make_letters(0, 7))
    queue.flush()
    every = [letter.id for letter in letters_to_replay(queue, page=3)]
    assert len(every) == 7
    queue.mark_replayed(every[1:3])
    assert [x.id for x in letters_to_replay(queue, page=2)] == [every[0], *every[3:]]
    assert [x.id for x in letters_to_replay(queue, [every[2], every[5]])] == [every[5]]


def test_a_torn_id_never_swallows_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl.replayed"
    path.write_text("a\nb\ntor")  # a crash tore the last append
    log = ReplayLog(path)
    log.add(["c"])
    assert path.read_text() == "a\nb\ntor\nc\n"
    assert "c" in ReplayLog(path).ids()


def test_an_append_that_runs_out_of_space_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.jsonl.replayed"
    disk = Disk()
    disk.patch_os_write(monkeypatch, tmp_path)
    log = ReplayLog(path)
    log.add(["a"])
    disk.fill(3)
    with pytest.raises(DeadLetterError, match="No space left"):
        log.add(["bcdef", "ghijk"])
    assert path.read_text() == "a\n"
    disk.free()
    log.add(["bcdef"])
    assert ReplayLog(path).ids() == {"a", "bcdef"}
