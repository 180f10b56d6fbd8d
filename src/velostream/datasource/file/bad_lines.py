"""A block's bad lines as columns, and numpy passes that find them with no Python per line.

`LineErrors` holds the bad lines of one block in line order: their numbers and reasons
messages as parallel columns. A block with thousands of bad lines then becomes bad
records in a few C-level passes (see `FileSource._decode`), not a Python object built
and unpacked per line.

`line_bounds`, `line_fields`, `drop_lines` and `raw_lines` take apart a block of CSV
without quotes: where each line starts and ends, how many fields it holds, the block
without some of its lines, and the bytes of a few lines (each by Arrow or numpy
passes over the whole block).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.bad_records import Reason, coded
from velostream.errors import ErrorKind

__all__ = [
    "LineBounds",
    "LineError",
    "LineErrors",
    "drop_lines",
    "line_bounds",
    "line_fields",
    "raw_lines",
]

Block: TypeAlias = bytes | bytearray
_NEWLINE, _CR = 10, 13
_RUN_BYTES = 1 << 19  # the bytes of a run of `line_fields`, to the end of a line


class LineError(NamedTuple):
    """Line `line` (0-based, within its block) is a bad record."""

    line: int
    kind: ErrorKind
    message: str


@dataclass(slots=True, eq=False)
class LineErrors:
    """A block's bad lines in line order (each line at most once), as columns: each
    line's number, and its reason as a code, an index into `reasons`.

    Bad lines share a few reasons (one message for every line with two fields too
    few), so they are kept once: a block's thousands of bad lines are then merged,
    shifted and grouped by numpy passes over the codes, with no Python step per line.
    """

    lines: np.ndarray  # int64, ascending
    codes: np.ndarray  # intp, one per line
    reasons: list[Reason]  # may repeat a reason: groups are made of equal reasons

    @classmethod
    def none(cls) -> LineErrors:
        return cls(np.empty(0, np.int64), np.empty(0, np.intp), [])

    @classmethod
    def of(cls, errors: Iterable[LineError]) -> LineErrors:
        """From `LineError`s in any order (lines distinct)."""
        ordered = sorted(errors, key=itemgetter(0))
        if not ordered:
            return cls.none()
        lines, kinds, messages = zip(*ordered, strict=True)
        codes, reasons = coded(kinds, messages)
        return cls(np.array(lines, np.int64), codes, reasons)

    @classmethod
    def merged(cls, parts: Sequence[LineErrors]) -> LineErrors:
        """One `LineErrors` of `parts`, whose lines are disjoint, in line order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.none()
        if len(parts) == 1:
            return parts[0]
        lines = np.concatenate([p.lines for p in parts])
        offsets = np.cumsum([0] + [len(p.reasons) for p in parts[:-1]])
        codes = np.concatenate([p.codes + at for p, at in zip(parts, offsets, strict=True)])
        reasons = [r for p in parts for r in p.reasons]
        if not bool(np.all(lines[1:] > lines[:-1])):
            order = np.argsort(lines, kind="stable")
            lines, codes = lines[order], codes[order]
        return cls(lines, codes, reasons)

    def shifted(self, by: int) -> LineErrors:
        """The same errors, `by` lines further on (the second half of a block)."""
        return LineErrors(self.lines + by, self.codes, self.reasons)

    def __len__(self) -> int:
        return len(self.codes)

    def __iter__(self) -> Iterator[LineError]:
        reasons = self.reasons
        for line, code in zip(self.lines.tolist(), self.codes.tolist(), strict=True):
            yield LineError(line, *reasons[code])


class LineBounds(NamedTuple):
    """Each line's first byte and the end of its content (before `\\r\\n` or `\\n`)."""

    starts: np.ndarray
    ends: np.ndarray


def line_bounds(block: Block, n_lines: int) -> LineBounds | None:
    """Where the `n_lines` lines of `block` are; None if it does not hold that many.

    The last line may lack its line break. A carriage return ending a line is left out
    of it, as `split_lines` does.
    """
    data = np.frombuffer(block, np.uint8)
    breaks = np.flatnonzero(data == _NEWLINE)
    if len(breaks) == n_lines - 1 and n_lines and not block.endswith(b"\n"):
        breaks = np.append(breaks, len(block))
    elif len(breaks) != n_lines:
        return None
    starts = np.empty(n_lines, np.int64)
    if n_lines:
        starts[0] = 0
        starts[1:] = breaks[:-1] + 1
    ends = breaks.astype(np.int64)
    if b"\r" in block:
        nonempty = ends > starts
        ends[nonempty] -= data[ends[nonempty] - 1] == _CR
    return LineBounds(starts, ends)


def line_fields(block: Block, n_lines: int, delimiter: str) -> tuple[LineBounds, np.ndarray] | None:
    """`line_bounds` of a block without quotes, and how many fields each line holds.

    A line's fields are its delimiters plus one (a delimiter is never a line break, see
    `parse_delimiter`), summed from its start to the next line's. The block goes in
    runs of whole lines of some hundred kilobytes, each run's masks made in one buffer
    and used while they are in the cache: over a whole block of megabytes at once the
    passes took several times the CPU in a busy job (bench_engine case 5).
    """
    data = np.frombuffer(block, np.uint8)
    size = len(data)
    mask = np.empty(min(size, _RUN_BYTES) + 1, bool)
    code = ord(delimiter)
    starts: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    at = 0
    while at < size:
        end = block.find(b"\n", at + _RUN_BYTES - 1) + 1 if at + _RUN_BYTES < size else size
        end = end or size
        if end - at > len(mask):
            mask = np.empty(end - at, bool)
        run = mask[: end - at]
        breaks = np.flatnonzero(np.equal(data[at:end], _NEWLINE, out=run))
        if not len(breaks) or breaks[-1] != end - at - 1:  # the last line, unbroken
            breaks = np.append(breaks, end - at)
        firsts = np.empty(len(breaks), np.int64)
        firsts[0] = 0
        firsts[1:] = breaks[:-1] + 1
        # Narrow sums run faster: int32 three times int64, a byte twice int32. A line
        # holds fewer delimiters than bytes, so a run of lines under 256 bytes sums in
        # bytes; a line is far shorter than 2**31.
        delimiters = np.equal(data[at:end], code, out=run).view(np.uint8)
        narrow = int((breaks - firsts).max()) < 256
        sums = np.add.reduceat(delimiters, firsts, dtype=np.uint8 if narrow else np.int32)
        counts.append(sums)
        starts.append(firsts + at)
        at = end
    if sum(map(len, starts)) != n_lines:
        return None
    if not n_lines:
        return LineBounds(np.empty(0, np.int64), np.empty(0, np.int64)), np.empty(0, np.int64)
    first = np.concatenate(starts)
    ends = np.empty(n_lines, np.int64)
    ends[:-1] = first[1:] - 1
    ends[-1] = size - 1 if data[-1] == _NEWLINE else size
    if b"\r" in block:
        nonempty = ends > first
        ends[nonempty] -= data[ends[nonempty] - 1] == _CR
    fields: np.ndarray = np.concatenate(counts).astype(np.int64) + 1
    return LineBounds(first, ends), fields


def drop_lines(block: Block, bounds: LineBounds, drop: np.ndarray) -> pa.Buffer:
    """`block` without lines `drop` (ascending), the rest joined by one Arrow take.

    The block is cut into runs of kept lines, each followed by a dropped line; taking
    the runs copies them back to back in C, with no Python step per line and the GIL
    released (a list of slices joined by Python held it for 20,000 steps a block).
    The copy comes from Arrow's default pool, which `velo-sql` makes jemalloc's
    (`cli.startup.choose_arrow_pool`): mimalloc gave its megabytes fresh pages.
    """
    resume = _next_starts(block, bounds, drop)
    offsets = np.empty(2 * len(drop) + 2, np.int64)
    offsets[0], offsets[-1] = 0, len(block)
    offsets[1:-1:2] = bounds.starts[drop]
    offsets[2:-1:2] = resume
    taken = pa.array(np.arange(0, len(offsets) - 1, 2))
    runs = pc.take(_spans(block, offsets), taken)
    kept = len(block) - int((resume - bounds.starts[drop]).sum())
    data: pa.Buffer = runs.buffers()[2]
    return data[:kept] if data is not None else pa.py_buffer(b"")


def raw_lines(block: Block, bounds: LineBounds, which: np.ndarray) -> pa.Array:
    """The bytes of lines `which` (ascending), without their line breaks, as binary.

    One Arrow array over the block, its values alternately a line and the bytes up to
    the next one, gives them all at once, without copying the block.
    """
    if not len(which):
        return pa.array([], pa.large_binary())
    offsets = np.empty(2 * len(which), np.int64)
    offsets[0::2] = bounds.starts[which]
    offsets[1::2] = bounds.ends[which]
    return pc.take(_spans(block, offsets), pa.array(np.arange(0, len(offsets), 2)))


def _next_starts(block: Block, bounds: LineBounds, lines: np.ndarray) -> np.ndarray:
    """Where the line after each of `lines` starts (the block's end after the last)."""
    after = lines + 1
    last = len(bounds.starts)
    starts: np.ndarray = bounds.starts[np.minimum(after, last - 1)]
    starts[after == last] = len(block)
    return starts


def _spans(block: Block, offsets: np.ndarray) -> pa.Array:
    """`block` cut at `offsets` (ascending) into `len(offsets) - 1` binary values."""
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, buffers)
