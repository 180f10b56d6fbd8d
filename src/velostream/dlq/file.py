"""The file dead-letter queue: JSON lines under `<data_dir>/dlq/<job>.jsonl` (or
`dlq.path`); replayed letters are remembered in a `.replayed` file next to it.

The file queue rolls by size the way a Kafka log does: the live file is sealed as a
segment named by its base offset (`<job>.jsonl.<base>`, the bytes of all letters before
it) and a new live file begins (segments are kept; with `backups`, the oldest beyond
it are deleted, with a warning). An offset is a position in the whole log, so a
commit's offset stays valid across a roll, and rolling back to it — an abort, or a
restart after a crash — reopens the segment that holds it and drops everything after
it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson

from velostream.dlq.letter import DeadLetter
from velostream.dlq.replay import ReplayLog
from velostream.errors import DeadLetterError
from velostream.fsutil import fsync_directory

__all__ = ["FileDeadLetterQueue"]

_log = logging.getLogger("velostream.dlq")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Sealed segments are kept until someone deletes them: dead letters are data. A queue
# made with `backups` deletes the oldest beyond it, and logs what it deleted.
DEFAULT_BACKUPS: int | None = None


class FileDeadLetterQueue:
    """JSON-lines dead letters for one job, in size-rolled segments, fsynced on flush."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int | None = DEFAULT_BACKUPS,
    ) -> None:
        if backups is not None and backups < 1:
            raise ValueError("a dead-letter queue keeps at least one sealed segment")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._replayed = ReplayLog(path.with_name(path.name + ".replayed"))

    def write(self, letters: list[DeadLetter]) -> None:
        with self._lock:
            self._pending.extend(orjson.dumps(letter.doc) + b"\n" for letter in letters)

    def flush(self) -> int:
        """Make pending letters durable; return the committed offset (in the whole log)."""
        with self._lock:
            pending, self._pending = self._pending, []
            try:
                base = self._base()
                if not pending:  # a job without dead letters leaves no file behind
                    return base + self._size()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._size() >= self.max_bytes:
                    base = self._roll(base)
                created = not self.path.exists()
                with open(self.path, "ab") as out:
                    out.write(b"".join(pending))
                    out.flush()
                    os.fsync(out.fileno())
                    end = base + out.tell()
                if created:  # the new file's name (and a roll's renames) must survive too
                    fsync_directory(self.path.parent)
                return end
            except OSError as exc:
                raise DeadLetterError(
                    f"cannot write dead letters to {self.path}: {exc.strerror or exc}"
                ) from exc

    def truncate(self, offset: int | None) -> None:
        """Drop pending letters and anything past `offset` (an aborted transaction)."""
        with self._lock:
            self._pending.clear()
            if offset is None:
                return
            try:
                self._roll_back(offset)
            except OSError as exc:
                raise DeadLetterError(
                    f"cannot roll {self.path} back to offset {offset}: {exc.strerror or exc}"
                ) from exc

    def _roll_back(self, offset: int) -> None:
        base = self._base()
        if offset < base:
            # Rolled after the commit: the segment holding `offset` becomes live again,
            # and what was written after it (all uncommitted) goes.
            holding = [(b, p) for b, p in self._segments() if b <= offset]
            if not holding:
                raise DeadLetterError(
                    f"cannot roll {self.path} back to offset {offset}: the segment holding "
                    "it was deleted (raise the backups)"
                )
            seg_base, segment = holding[-1]
            for b, later in self._segments():
                if b > seg_base:
                    later.unlink()
            os.replace(segment, self.path)
            fsync_directory(self.path.parent)
            base = seg_base
        if self._size() > offset - base:
            with open(self.path, "r+b") as out:
                out.truncate(offset - base)
                os.fsync(out.fileno())

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _segments(self) -> list[tuple[int, Path]]:
        """The sealed segments, oldest first, with their base offsets."""
        prefix = self.path.name + "."
        found = []
        for entry in self.path.parent.glob(prefix + "*"):
            suffix = entry.name[len(prefix) :]
            if suffix.isdigit():
                found.append((int(suffix), entry))
        return sorted(found)

    def _base(self) -> int:
        """The live file's base offset: the end of the newest segment (0 without one)."""
        segments = self._segments()
        if not segments:
            return 0
        base, newest = segments[-1]
        return base + newest.stat().st_size

    def _roll(self, base: int) -> int:
        """Seal the live file as a segment; delete the oldest beyond `backups`; return
        the base offset of the next live file."""
        size = self._size()
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{base:020d}"))
        if self.backups is not None:
            segments = self._segments()
            for _, old in segments[: max(0, len(segments) - self.backups)]:
                _log.warning("dead letters: deleting %s (keeping %d segments)", old, self.backups)
                old.unlink()
        return base + size

    def _files(self) -> list[Path]:
        return [p for _, p in self._segments()] + ([self.path] if self.path.exists() else [])

    def _iter(self) -> Iterator[DeadLetter]:
        for path in self._files():
            with open(path, "rb") as src:
                for line in src:
                    if line.strip():
                        yield DeadLetter(orjson.loads(line))

    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]:
        """A page of dead letters, oldest first, each with `replayed`; and the next offset."""
        replayed = self._replayed.ids()
        page: list[DeadLetter] = []
        for index, letter in enumerate(self._iter()):
            if index < offset:
                continue
            if len(page) == limit:
                return page, index
            page.append(letter.with_replayed(letter.id in replayed))
        return page, None

    def mark_replayed(self, ids: list[str]) -> None:
        self._replayed.add(ids)

    def close(self) -> None:
        pass
