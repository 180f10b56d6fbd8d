"""Replay bookkeeping shared by every queue: which dead letters were sent through their
job again, so a second replay sends none of them twice."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from velostream.dlq.letter import DeadLetter
from velostream.dlq.queue import DeadLetterQueue
from velostream.errors import DeadLetterError, ReplayError
from velostream.fsutil import write_all

__all__ = ["ReplayLog", "letters_to_replay", "refuse_truncated"]


class ReplayLog:
    """The ids of replayed dead letters: in memory, and appended to `path` if given.

    The file is read again on every `ids()`: another queue on the same path (the fresh
    processor that replays for an ended job) may have added to it. An append that fails
    (a full disk) is cut back off; one a crash tore is ended by the next append's line
    break, so a torn id never swallows the next one (it matches no letter).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def ids(self) -> set[str]:
        """Every id marked replayed so far."""
        with self._lock:
            if self.path is not None and self.path.exists():
                self._ids |= set(self.path.read_text().split())
            return set(self._ids)

    def add(self, ids: list[str]) -> None:
        """Mark `ids` replayed; durably (fsynced) when the log has a file."""
        with self._lock:
            self._ids.update(ids)
            if self.path is None:
                return
            data = "".join(f"{i}\n" for i in ids).encode("utf-8")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _append_lines(self.path, data)
            except OSError as exc:
                raise DeadLetterError(f"cannot record replayed letters: {exc}") from exc


def _append_lines(path: Path, data: bytes) -> None:
    """Append whole lines to `path` durably, on a line of their own; cut back on failure."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # a crash tore the last id
        try:
            write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):  # the error raised is the write's
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def letters_to_replay(
    queue: DeadLetterQueue, ids: list[str] | None = None, page: int = 1000
) -> list[DeadLetter]:
    """The queue's letters not replayed yet, in order; only those of `ids` if given."""
    wanted = set(ids) if ids else None
    letters: list[DeadLetter] = []
    offset: int | None = 0
    while offset is not None:
        batch, offset = queue.read(offset, page)
        letters += [
            letter
            for letter in batch
            if not letter.doc.get("replayed") and (wanted is None or letter.id in wanted)
        ]
    return letters


def refuse_truncated(letters: list[DeadLetter], job: str) -> None:
    """ReplayError if a letter holds only the start of its record (`truncated`: it was
    over max.record.bytes): replaying it would write a row of the start alone."""
    cut = [letter for letter in letters if letter.doc.get("truncated")]
    if cut:
        raise ReplayError(
            f"{len(cut)} of {len(letters)} dead letters hold only the start of their record "
            f"(over max.record.bytes), e.g. {cut[0].doc.get('position')}; none was replayed",
            failures=[],
            job=job,
        )
