"""Reading a file as blocks of whole lines, in bounded reads, over-long lines cut out.

A record is one line, and a line may hold at most the source's `max.record.bytes`
bytes (its newline not counted; a carriage return before it is). A longer line is
never held whole: each read is bounded (four times the limit, at least 4 MiB), and
once a line, or the unfinished line at the end of what has been read, passes the
limit, the reader keeps its first `PREFIX_BYTES` bytes and reads on in fixed chunks,
keeping nothing, to its newline (or to the end of a file that will not grow). The
block keeps an empty line in its place, so line numbers stay true and the decoders
skip it; the line comes back beside the block as a `LongLine` (where it is, its true
length, its first bytes) to become a bad record.

Offsets count every byte of the file, skipped ones too: a position after the line
resumes after it. While a followed file's over-long last line is still being written,
the reader keeps only how much of it it has passed; a position taken meanwhile points
at the line's start, and reading again from there skips the line again, just as bounded.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

from velostream.errors import SourceError

__all__ = ["PREFIX_BYTES", "LineBlock", "LineReader", "LongLine", "newlines", "source_error"]

log = logging.getLogger(__name__)

PREFIX_BYTES = 1024
"""Bytes of an over-long line kept as its bad record's payload."""

_BOM = b"\xef\xbb\xbf"
_MIN_READ = 1 << 16
_MAX_READ = 1 << 26
_SKIP_READ = 1 << 20  # chunk size while reading past an over-long line
_NUMPY_COUNT = 1 << 16  # bytes: from here on, newlines are counted by numpy
_COUNT_RUN = 1 << 18  # bytes numpy compares at a time, into one reused mask


class LongLine(NamedTuple):
    """A line over the limit, left out of its block (an empty line holds its place)."""

    line: int  # 0-based, within its block
    size: int  # its length in bytes, without its newline
    prefix: bytes  # its first PREFIX_BYTES bytes


class LineBlock(NamedTuple):
    """`n_lines` whole lines, `first` lines into the file, and the long lines cut out."""

    block: bytearray
    n_lines: int
    first: int
    long: list[LongLine]


class _Cut(NamedTuple):
    """A long line cut from the read buffer; its empty stand-in line ends at `at`."""

    at: int
    size: int
    ends: bool  # a newline ended it (else the end of the file did)
    prefix: bytes

    @property
    def skipped(self) -> int:
        """File bytes it stood for, beyond its stand-in's one."""
        return self.size + self.ends - 1


class LineReader:
    """Reads one file in blocks of whole lines from a byte offset; see the module doc."""

    def __init__(
        self,
        path: str,
        offset: int,
        line: int,
        skip_header: bool,
        *,
        limit: int,
        avg: float = 64.0,
    ) -> None:
        self.path = path
        self.offset = offset  # file offset of `_pending[0]`
        self.line = line  # lines before `offset`
        self.limit = limit
        self.header: bytes | None = None
        self._skip_header = skip_header
        self._started = offset > 0
        self._pending = b""
        self._pending_lines = 0
        self._cuts: list[_Cut] = []  # long lines cut from `_pending`
        self._skipping: tuple[int, bytes] | None = None  # long line being passed: size, prefix
        self._avg = avg  # mean line length, to size reads
        self.end: int | None = None  # read nothing at or past this offset (a pipe's commit)
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
            self._file.seek(offset)
        except OSError as exc:
            raise source_error(path, exc) from exc

    def close(self) -> None:
        self._file.close()

    def read_block(self, max_lines: int, final: bool) -> LineBlock | None:
        """Up to `max_lines` whole lines; None when no line is complete yet.

        `final`: the file will not grow, so a last line without a newline counts.
        """
        if not self._started and not self._start(final):
            return None
        buf, have, cuts = self._fill(max_lines, final)
        if have >= max_lines:
            cut, n, rest = _after_line(buf, max_lines, have), max_lines, have - max_lines
        elif final and buf:
            cut, n, rest = len(buf), have + (0 if buf.endswith(b"\n") else 1), 0
        elif have:
            cut, n, rest = buf.rfind(b"\n") + 1, have, 0
        else:
            self._keep(buf, 0, [])
            if not final:
                self._check_shrunk()
            return None
        self._pending, self._pending_lines = bytes(buf[cut:]), rest
        self._cuts = [c._replace(at=c.at - cut) for c in cuts if c.at >= cut]
        mine = [c for c in cuts if c.at < cut]
        del buf[cut:]
        first = self.line
        self.offset += cut + sum(c.skipped for c in mine)
        self.line += n
        self._avg = 0.5 * self._avg + 0.5 * (cut / n)
        long = [LongLine(buf.count(b"\n", 0, c.at), c.size, c.prefix) for c in mine]
        return LineBlock(buf, n, first, long)

    def head(self, limit: int) -> bytes:
        """Up to `limit` bytes of whole data lines from the start (long lines left empty)."""
        if not self._started and not self._start(True):
            return b""
        buf, _, _ = self._fill(1 << 62, True, max_bytes=limit)
        data = bytes(buf)
        if len(data) >= limit and b"\n" in data[:limit]:
            data = data[: data.rfind(b"\n", 0, limit) + 1]
        return data

    def _keep(self, buf: bytearray, lines: int, cuts: list[_Cut]) -> None:
        self._pending, self._pending_lines, self._cuts = bytes(buf), lines, cuts

    def _start(self, final: bool) -> bool:
        """At offset 0: skip a UTF-8 BOM and read the header line, once complete."""
        buf, have, cuts = self._fill(1, final)
        if len(buf) < len(_BOM) and _BOM.startswith(buf) and not final:
            self._keep(buf, have, cuts)
            return False
        skip = len(_BOM) if buf.startswith(_BOM) else 0
        if self._skip_header and buf:
            end = buf.find(b"\n", skip)
            if end < 0 and not final:
                self._keep(buf, have, cuts)
                return False
            if cuts and cuts[0].at == end:
                raise SourceError(
                    f"the header line of {self.path} has {cuts[0].size} bytes, more than "
                    f"max.record.bytes ({self.limit})",
                    position=f"{self.path}:1",
                )
            end = len(buf) if end < 0 else end + 1
            self.header = bytes(buf[skip:end]).rstrip(b"\r\n")
            self.line, skip, have = 1, end, max(0, have - 1)
        self._keep(buf[skip:], have, [c._replace(at=c.at - skip) for c in cuts])
        self.offset = skip
        self._started = True
        return True

    def _fill(
        self, max_lines: int, final: bool, max_bytes: int | None = None
    ) -> tuple[bytearray, int, list[_Cut]]:
        """Pending bytes plus reads until they hold `max_lines` newlines (or `max_bytes`
        bytes) or the file ends, long lines cut out as they are met.

        Returns the buffer, its newline count and its cuts. A long line still being
        written (not `final`) ends the buffer; `_skipping` then remembers it.
        """
        buf, have, cuts = bytearray(self._pending), self._pending_lines, self._cuts
        self._pending, self._pending_lines, self._cuts = b"", 0, []
        scanned = buf.rfind(b"\n") + 1  # the lines before were checked when read
        if self._skipping is not None:
            added = self._skip_rest(buf, cuts, final)
            if added is None:
                return buf, have, cuts
            have, scanned = have + added, cuts[-1].at + 1
        while True:
            tail = _cut_long(buf, scanned, self.limit, cuts)
            if len(buf) - tail > self.limit:  # the unfinished last line is too long already
                self._skipping = (len(buf) - tail, bytes(buf[tail : tail + PREFIX_BYTES]))
                del buf[tail:]
                added = self._skip_rest(buf, cuts, final)
                if added is None:
                    break
                have, scanned = have + added, tail + 1
                continue
            scanned = tail
            if have >= max_lines or (max_bytes is not None and len(buf) >= max_bytes):
                break
            want = int((max_lines - have) * self._avg * 1.02) + 1024
            if max_bytes is not None:
                want = min(want, max_bytes - len(buf))
            buf, got = self._read(buf, min(max(want, _MIN_READ), _MAX_READ))
            if not got:
                break
            have += newlines(buf, len(buf) - got)
        return buf, have, cuts

    def _read(self, buf: bytearray, want: int) -> tuple[bytearray, int]:
        """Append up to `want` bytes; straight into a new buffer when little is pending."""
        start = len(buf)
        try:
            at = self._file.tell()
            if self.end is not None:
                want = min(want, self.end - at)
                if want <= 0:
                    return buf, 0
            else:  # no zeroed buffer larger than what is left (it may still grow)
                want = min(want, max(os.fstat(self._file.fileno()).st_size - at, _MIN_READ))
            if start * 4 <= want:  # no copy of the data read, only of the few bytes pending
                grown = bytearray(start + want)
                grown[:start] = buf
                got = self._file.readinto(memoryview(grown)[start:]) or 0
                del grown[start + got :]
                return grown, got
            chunk = bytearray(want)
            got = self._file.readinto(chunk) or 0
        except OSError as exc:
            raise source_error(self.path, exc) from exc
        buf += memoryview(chunk)[:got]
        return buf, got

    def _skip_rest(self, buf: bytearray, cuts: list[_Cut], final: bool) -> int | None:
        """Read past the rest of the long line being skipped, keeping nothing of it.

        At its end, append its empty stand-in and whatever followed it in the last
        chunk; returns the newlines appended, or None if the line goes on past the end
        of a file that may still grow.
        """
        assert self._skipping is not None
        size, prefix = self._skipping
        chunk = bytearray(_SKIP_READ)
        rest: bytes | bytearray = b""
        while True:
            try:
                if self.end is not None:
                    room = max(0, self.end - self._file.tell())
                    got = self._file.readinto(memoryview(chunk)[:room]) or 0 if room else 0
                else:
                    got = self._file.readinto(chunk) or 0
            except OSError as exc:
                raise source_error(self.path, exc) from exc
            if not got:
                if not final:
                    self._skipping = (size, prefix)
                    return None
                ends = False
                break
            newline = chunk.find(b"\n", 0, got)
            if len(prefix) < PREFIX_BYTES:  # a limit below PREFIX_BYTES: fill it up
                prefix += chunk[: min(got if newline < 0 else newline, PREFIX_BYTES - len(prefix))]
            if newline >= 0:
                size, ends, rest = size + newline, True, chunk[newline + 1 : got]
                break
            size += got
        self._skipping = None
        cuts.append(_Cut(len(buf), size, ends, _whole_chars(prefix)))
        buf += b"\n"
        buf += rest
        return 1 + rest.count(b"\n")

    def _check_shrunk(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        passed = self._skipping[0] if self._skipping is not None else 0
        if size < self.offset + len(self._pending) + passed:
            log.warning("file_source: %s shrank; reading it again from the start", self.path)
            self._file.seek(0)
            self.offset = self.line = 0
            self._keep(bytearray(), 0, [])
            self._skipping = None
            self._started = False


def _cut_long(buf: bytearray, begin: int, limit: int, cuts: list[_Cut]) -> int:
    """Cut the complete lines longer than `limit` from `buf[begin:]`, where `begin`
    starts a line; returns where the unfinished last line starts, after the cuts.

    Each step starts at a line start and jumps past the last newline in the next
    `limit + 1` bytes; only a line longer than `limit` leaves them without one, and
    only then is its end searched for. A clean buffer costs one short backward search
    per `limit` bytes, no Python per line.
    """
    width = limit + 1
    tail = buf.rfind(b"\n", begin) + 1 or begin
    found = []
    pos = begin  # always a line start
    while pos + width <= tail:
        newline = buf.rfind(b"\n", pos, pos + width)
        if newline >= 0:
            pos = newline + 1
            continue
        end = buf.find(b"\n", pos + width)  # the line at `pos` is too long
        found.append((pos, end))
        pos = end + 1
    removed = 0
    for start, end in found:
        prefix = _whole_chars(bytes(buf[start : min(end, start + PREFIX_BYTES)]))
        cuts.append(_Cut(start - removed, end - start, True, prefix))
        removed += end - start
    for start, end in reversed(found):
        del buf[start:end]
    return tail - removed


def _whole_chars(prefix: bytes) -> bytes:
    """`prefix` without a UTF-8 character cut in two at its end (the payload stays text)."""
    for back in range(1, min(4, len(prefix)) + 1):
        byte = prefix[-back]
        if byte < 0x80:
            return prefix
        if byte >= 0xC0:  # the lead byte of the last character
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return prefix[:-back] if size > back else prefix
    return prefix


def _after_line(buf: bytearray, n: int, total: int) -> int:
    """Byte offset just after the `n`-th newline of `buf`, which holds `total`.

    Guesses the spot from the mean line length, counts newlines on the short side of
    the guess, then steps line by line over the (small) difference.
    """
    size = len(buf)
    if n <= total - n:
        guess = min(size, size * n // total)
        seen = newlines(buf, 0, guess)  # newlines before the guess
    else:
        guess = max(0, size - size * (total - n) // total)
        seen = total - newlines(buf, guess)
    if seen >= n:
        pos = guess
        for _ in range(seen - n + 1):
            pos = buf.rfind(b"\n", 0, pos)
    else:
        pos = guess - 1
        for _ in range(n - seen):
            pos = buf.find(b"\n", pos + 1)
    return pos + 1


def source_error(path: str, exc: OSError) -> SourceError:
    """An OS error reading `path`, as a `SourceError` naming the file."""
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"no such file: {path}", position=path)
    if isinstance(exc, PermissionError):
        return SourceError(f"permission denied: {path}", position=path)
    if isinstance(exc, IsADirectoryError):
        return SourceError(f"not a file: {path}", position=path)
    return SourceError(f"cannot read {path}: {exc.strerror or exc}", position=path)


def newlines(buf: bytearray | bytes, start: int = 0, end: int | None = None) -> int:
    """The newlines in `buf[start:end]`.

    `bytes.count` holds the GIL for the whole count (milliseconds on a block of
    megabytes), and the job's thread waits for it; numpy compares with the GIL
    released and holds it only to count the (fast) mask.
    """
    stop = len(buf) if end is None else min(end, len(buf))
    if stop - start < _NUMPY_COUNT:
        return buf.count(b"\n", start, stop)
    view = np.frombuffer(buf, np.uint8, stop - start, start)
    mask = np.empty(min(len(view), _COUNT_RUN), np.bool_)  # reused: it stays in the cache
    found = 0
    for at in range(0, len(view), _COUNT_RUN):
        run = view[at : at + _COUNT_RUN]
        found += int(np.count_nonzero(np.equal(run, 10, out=mask[: len(run)])))
    del view, run  # a bytearray with a view on it cannot be resized
    return found
