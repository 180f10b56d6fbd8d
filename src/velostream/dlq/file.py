"""The file dead-letter queue: JSON lines under `<data_dir>/dlq/<job>.jsonl` (or
`dlq.path`); replayed letters are remembered in a `.replayed` file next to it.

The file queue rolls by size the way a Kafka log does: the live file is sealed as a
segment named by its base offset (`<job>.jsonl.<base>`, the bytes of all letters before
it) and a new live file begins (segments are kept; with `backups`, the oldest beyond
it are deleted, with a warning). An offset is a position in the whole log, so a
commit's offset stays valid across a roll, and rolling back to it — an abort, or a
restart after a crash — reopens the segment that holds it and drops everything after
it.

Nothing torn is left for a reader. Every committed offset ends a line: a flush
appends its letters in one write and, when that fails part-way (a full disk), cuts
the file back to where the write began before raising. A torn last line that only a
crash can leave was therefore never committed: `settle` (and the first flush) cuts
it, with a warning. Reading skips any line that is not a whole dead letter — a torn
tail, or a line that does not parse — and reports each once: logged, counted in
`unreadable` and passed to `report` (the job's committer records it as a `dlq`
error); it is never an exception for the reader.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from velostream.dlq.letter import DeadLetter
from velostream.dlq.replay import ReplayLog
from velostream.errors import DeadLetterError, ErrorKind
from velostream.fsutil import fsync_directory, write_all

__all__ = ["FileDeadLetterQueue"]

_log = logging.getLogger("velostream.dlq")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Sealed segments are kept until someone deletes them: dead letters are data. A queue
# made with `backups` deletes the oldest beyond it, and logs what it deleted.
DEFAULT_BACKUPS: int | None = None
_TAIL_CHUNK = 64 * 1024

#: Told of a line that cannot be read back or was cut: the message and its kind.
Report = Callable[[str, ErrorKind], object]


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
        self._settled = False  # whether the live file is known to end a line
        self._reported: set[tuple[str, int]] = set()  # (file, byte) of lines skipped
        #: Lines skipped (or cut) so far, each counted once.
        self.unreadable = 0
        #: Where a skipped or cut line is reported, besides the log (the job's errors).
        self.report: Report | None = None

    def write(self, letters: list[DeadLetter]) -> None:
        with self._lock:
            line = orjson.OPT_APPEND_NEWLINE  # no second copy of each line to end it
            self._pending.extend(orjson.dumps(letter.doc, option=line) for letter in letters)

    def flush(self) -> int:
        """Make pending letters durable; return the committed offset (in the whole log).

        A write that fails is taken back (the file cut to where it began) before
        DeadLetterError is raised, so no torn letter is left behind.
        """
        with self._lock:
            pending, self._pending = self._pending, []
            try:
                self._settle()
                base = self._base()
                if not pending:  # a job without dead letters leaves no file behind
                    return base + self._size()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._size() >= self.max_bytes:
                    base = self._roll(base)
                return base + self._append(b"".join(pending))
            except OSError as exc:
                raise DeadLetterError(
                    f"cannot write dead letters to {self.path}: {exc.strerror or exc}"
                ) from exc

    def settle(self) -> int:
        """Cut a torn last line a crash left; return the committed length of the log."""
        with self._lock:
            try:
                self._settle()
                return self._base() + self._size()
            except OSError as exc:
                raise DeadLetterError(
                    f"cannot settle dead letters in {self.path}: {exc.strerror or exc}"
                ) from exc

    def truncate(self, offset: int | None) -> None:
        """Drop pending letters and anything past `offset` (an abort, a restart)."""
        with self._lock:
            self._pending.clear()
            if offset is None:
                return
            try:
                self._roll_back(offset)
            except OSError as exc:
                self._settled = False
                raise DeadLetterError(
                    f"cannot roll {self.path} back to offset {offset}: {exc.strerror or exc}"
                ) from exc

    def _append(self, data: bytes) -> int:
        """Append `data` to the live file durably; return the file's new length. A
        failed write is cut back off before the error is raised."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                write_all(fd, data)
            except OSError:
                self._take_back(fd, start)
                raise
        finally:
            os.close(fd)
        if created:  # the new file's name (and a roll's renames) must survive too
            fsync_directory(self.path.parent)
        return start + len(data)

    def _take_back(self, fd: int, length: int) -> None:
        """Cut a failed write off; if even that fails, the next flush or settle cuts it."""
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        except OSError as exc:
            self._settled = False
            _log.warning(
                "dead letters: cannot take a failed write back from %s: %s", self.path, exc
            )

    def _settle(self) -> None:
        """Cut the live file back to its last line end, once per queue (see the module)."""
        if self._settled or not self.path.is_file():
            return  # not a file (a directory): the flush says what is wrong
        size = self._size()
        if size:
            with open(self.path, "r+b") as live:
                end = _line_end(live, size)
                if end < size:
                    live.truncate(end)
                    os.fsync(live.fileno())
                    self._reported.clear()
                    self._tell(
                        f"dead letters: cut a torn last line of {size - end} bytes from "
                        f"{self.path} (a write that was never committed)",
                        ErrorKind.IO,
                    )
        self._settled = True

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
            self._reported.clear()
            self._settled = True  # a committed offset ends a line

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

    def _open_all(self) -> list[tuple[Path, BinaryIO, int]]:
        """Every file, opened under the lock with the length a reader may read: a flush
        in flight is not seen half-written, and a roll after this does not matter."""
        opened: list[tuple[Path, BinaryIO, int]] = []
        with self._lock:
            try:
                for path in self._files():
                    try:
                        src: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by _iter
                    except FileNotFoundError:  # an old segment deleted meanwhile
                        continue
                    opened.append((path, src, os.fstat(src.fileno()).st_size))
            except BaseException:
                for _, src, _ in opened:
                    src.close()
                raise
        return opened

    def _iter(self) -> Generator[DeadLetter, None, None]:
        files = self._open_all()
        try:
            for path, src, size in files:
                yield from self._letters(path, src, size)
        finally:
            for _, src, _ in files:
                src.close()

    def _letters(self, path: Path, src: BinaryIO, size: int) -> Iterator[DeadLetter]:
        """The whole letters in the first `size` bytes of `src`; others are skipped."""
        at = 0
        while at < size:
            line = src.readline(size - at)
            if not line:
                break
            doc = _parse(line)
            ended = line.endswith(b"\n")
            if doc is not None and ended:
                yield DeadLetter(doc)
            elif line.strip():
                self._skip(path, at, len(line), torn=not ended)
            at += len(line)

    def _skip(self, path: Path, at: int, length: int, *, torn: bool) -> None:
        """Report a line that is not a whole dead letter, once per file and position."""
        key = (str(path), at)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        what = "a torn last line" if torn else "a line that is not a dead letter"
        self._tell(
            f"dead letters: skipped {what} ({length} bytes) in {path} at byte {at}",
            ErrorKind.IO if torn else ErrorKind.PARSE,
        )

    def _tell(self, message: str, kind: ErrorKind) -> None:
        self.unreadable += 1
        _log.warning("%s", message)
        if self.report is not None:
            self.report(message, kind)

    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]:
        """A page of dead letters, oldest first, each with `replayed`; and the next offset.

        A line that is not a whole dead letter is skipped and reported (see the module).
        """
        replayed = self._replayed.ids()
        page: list[DeadLetter] = []
        letters = self._iter()
        try:
            for index, letter in enumerate(letters):
                if index < offset:
                    continue
                if len(page) == limit:
                    return page, index
                page.append(letter.with_replayed(letter.id in replayed))
        finally:
            letters.close()
        return page, None

    def mark_replayed(self, ids: list[str]) -> None:
        self._replayed.add(ids)

    def close(self) -> None:
        pass


def _parse(line: bytes) -> dict[str, Any] | None:
    """The dead letter on `line`, or None if it is not one (torn, or not a letter)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "id" in doc else None


def _line_end(src: BinaryIO, size: int) -> int:
    """The length of `src`'s first `size` bytes up to and with their last line break."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        src.seek(start)
        chunk = src.read(end - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
