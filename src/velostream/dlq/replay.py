"""Replay bookkeeping shared by every queue: which dead letters were sent through their
job again, so a second replay sends none of them twice."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from velostream.dlq.letter import DeadLetter
from velostream.dlq.queue import DeadLetterQueue
from velostream.errors import DeadLetterError

__all__ = ["ReplayLog", "letters_to_replay"]


class ReplayLog:
    """The ids of replayed dead letters: in memory, and appended to `path` if given.

    The file is read again on every `ids()`: another queue on the same path (the fresh
    processor that replays for an ended job) may have added to it.
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
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write("".join(f"{i}\n" for i in ids))
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise DeadLetterError(f"cannot record replayed letters: {exc}") from exc


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
