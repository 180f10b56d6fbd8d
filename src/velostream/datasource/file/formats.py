"""Decode blocks of whole lines (CSV or JSON lines) into Arrow tables, bad lines apart.

A block is parsed once by Arrow with the stream's fixed schema. Only when that parse
fails or its row count does not match the block's line count is the block taken
apart (a large JSON one as two halves, one on a worker thread): lines with invalid
UTF-8 are set aside, CSV lines with a wrong field count are cut out and the rest
re-parsed, each column that fails its type checked as text with vectorised compute
(see `csvlines`, `checks`), and JSON is re-parsed from just after each failing line
(see `jsonl`). Good rows keep their order; each bad line becomes one entry of the
block's `LineErrors` (see `bad_lines`).

Records are lines: a quoted CSV value may not contain a line break. A line whose
quote is still open at its end is a bad record on its own ("unterminated quoted
value") and the next line is the next record, so an open quote never swallows what
follows it. Empty lines are skipped; so are whitespace-only lines in JSON.

No line is longer than the decoder's `max_record_bytes` (the reader cuts longer ones
out, see `lines`), so Arrow never meets a record across two of its blocks: parallel
parses use blocks with room for the longest line, single-threaded ones read the whole
block as one (see `arrow_block_size`).
"""

from __future__ import annotations

import csv
import re
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.file.bad_lines import LineBounds, LineError, LineErrors, raw_lines
from velostream.datasource.file.checks import mask_at
from velostream.errors import ErrorKind

__all__ = [
    "Block",
    "Decoded",
    "Decoder",
    "LineError",
    "LineErrors",
    "arrow_block_size",
    "bad_raws",
    "has_bare_cr",
    "join_lines",
    "kept_lines",
    "open_quotes",
    "row_number",
    "screen_lines",
    "split_lines",
    "valid_utf8",
]

Block: TypeAlias = bytes | bytearray
_HALVES_FROM = 1 << 18  # bytes: a dirty block this large is taken apart in two halves
_ARROW_BLOCK = 1 << 20  # Arrow's default block size
_OPEN_QUOTE = "unterminated quoted value (a value may not contain a line break)"
# Typed scalars for kernels: an untyped Python one makes pyarrow try to import
# optional modules (dateutil) on every call.
_ONE = pa.scalar(1, pa.int64())
_BYTES_EMPTY = pa.scalar(b"", pa.binary())
_BYTES_NEWLINE = pa.scalar(b"\n", pa.binary())


@dataclass(slots=True)
class Decoded:
    """A block's good rows; `rows[i]` is the block line of row i (None: row i is line i).

    `lines` (the block split) or `bounds` (where its lines are), when the decoder had
    them, serve to find the bytes of bad lines.
    """

    table: pa.Table
    rows: pa.Array | None
    errors: LineErrors
    lines: pa.Array | None = None
    bounds: LineBounds | None = None

    def raws(self, block: Block, n_lines: int) -> pa.Array:
        """The bytes of the bad lines of `block` (`n_lines` lines), in `errors` order."""
        if self.bounds is None and self.lines is None:
            self.lines = split_lines(block, n_lines)
        return bad_raws(block, n_lines, self.errors.lines, self.bounds, self.lines)


def bad_raws(
    block: Block,
    n_lines: int,
    which: np.ndarray,
    bounds: LineBounds | None,
    lines: pa.Array | None,
) -> pa.Array:
    """The bytes of lines `which` of `block`, from `bounds` or `lines` if known (a
    `Decoded`'s; a function of its own so that a caller can keep these, not the table)."""
    if bounds is not None:
        return raw_lines(block, bounds, which)
    if lines is None:
        lines = split_lines(block, n_lines)
    raws: pa.Array = pc.take(lines, pa.array(which))
    return raws


class Decoder(ABC):
    """Turns a block of complete lines into a `Decoded`, with a fixed schema."""

    #: Whether a large dirty block is taken apart as two halves at once.
    halves = True
    #: The longest line a block may hold (the source's `max.record.bytes`).
    max_record_bytes = _ARROW_BLOCK

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._skip_fast = 0
        self._backoff = 0

    def decode(self, block: Block, n_lines: int) -> Decoded:
        """Decode `block`, which holds exactly `n_lines` lines.

        One optimistic Arrow parse first; after blocks with bad lines that parse is
        skipped for a while (up to 64 blocks), since it would fail again.
        """
        if self._skip_fast > 0:
            self._skip_fast -= 1
        else:
            fast = self._decode_fast(block, n_lines)
            if fast is not None:
                self._backoff = 0
                return fast
        decoded = self._decode_halves(block, n_lines)
        self._backoff = min(max(1, self._backoff * 2), 64) if decoded.errors else 0
        self._skip_fast = self._backoff
        return decoded

    def isolate(self, block: Block, n_lines: int) -> Decoded:
        """The careful path only, leaving the stream's adaptive state alone (for replays)."""
        return self._decode_halves(block, n_lines)

    def _decode_halves(self, block: Block, n_lines: int) -> Decoded:
        """The dirty path on two halves of a large block at once (one on a worker)."""
        large = self.halves and len(block) >= _HALVES_FROM
        middle = block.find(b"\n", len(block) // 2) + 1 if large else 0
        if not 0 < middle < len(block):
            return self._decode_dirty(block, n_lines)
        first_lines = block.count(b"\n", 0, middle)
        second = _background().submit(self._decode_dirty, block[middle:], n_lines - first_lines)
        head = self._decode_dirty(block[:middle], first_lines)
        tail = second.result()
        rows = None
        if head.rows is not None or tail.rows is not None:
            head_rows = _positions(head.table.num_rows) if head.rows is None else head.rows
            tail_rows = _positions(tail.table.num_rows) if tail.rows is None else tail.rows
            shifted = pc.add(pc.cast(tail_rows, pa.int64()), pa.scalar(first_lines, pa.int64()))
            rows = pa.chunked_array([pc.cast(head_rows, pa.int64()), shifted]).combine_chunks()
        errors = LineErrors.merged([head.errors, tail.errors.shifted(first_lines)])
        lines = None
        if head.lines is not None and tail.lines is not None:
            lines = pa.chunked_array([head.lines, tail.lines]).combine_chunks()
        table = pa.concat_tables([head.table, tail.table])
        return Decoded(table, rows, errors, lines)

    @abstractmethod
    def _decode_fast(self, block: Block, n_lines: int) -> Decoded | None:
        """One parse with the schema; None unless every line became exactly one row."""

    @abstractmethod
    def _decode_dirty(self, block: Block, n_lines: int) -> Decoded:
        """Take the block apart: every bad line becomes a `LineError`."""


# -- lines ------------------------------------------------------------------------


def split_lines(block: Block, n_lines: int) -> pa.Array:
    """The block's `n_lines` lines (split at `\\n`, without `\\r\\n`), as binary."""
    buf = pa.py_buffer(block)
    offsets = pa.array([0, buf.size], pa.int32()).buffers()[1]
    whole = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, buf])
    lines = pc.list_flatten(pc.split_pattern(whole, b"\n")).slice(0, n_lines)
    if b"\r" in block:
        crlf = pc.ends_with(lines.view(pa.string()), "\r")
        lines = pc.if_else(crlf, pc.binary_slice(lines, 0, -1), lines)
    return lines


def join_lines(lines: pa.Array) -> pa.Buffer:
    """Lines joined with `\\n` terminators, as one buffer (no per-line Python)."""
    if len(lines) == 0:
        return pa.py_buffer(b"")
    joined = pc.binary_join_element_wise(lines, _BYTES_EMPTY, _BYTES_NEWLINE)
    bounds = pa.Array.from_buffers(
        pa.int32(), len(joined) + 1, [None, joined.buffers()[1]], offset=joined.offset
    )
    return joined.buffers()[2][bounds[0].as_py() : bounds[-1].as_py()]


def arrow_block_size(size: int, threads: bool, max_record_bytes: int) -> int:
    """Arrow's block size for parsing `size` bytes of lines.

    Single-threaded: the whole buffer as one block, so a quote left open cannot run
    past a block boundary ("parser got out of sync"). Parallel: room for the longest
    line with its line break ("straddling object"), or Arrow's default if larger.
    """
    if threads:
        return min((1 << 31) - 1, max(_ARROW_BLOCK, max_record_bytes + 64))
    return min((1 << 31) - 1, max(1 << 16, size + 1))


@cache
def _background() -> ThreadPoolExecutor:
    """A worker thread for the second half of a dirty block; made on first use."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="velostream-decode")


def _positions(n: int) -> pa.Array:
    """0, 1, ..., n - 1."""
    return pc.indices_nonzero(pc.invert(mask_at(n, ())))


def has_bare_cr(data: Block) -> bool:
    return b"\r" in data and data.count(b"\r") != data.count(b"\r\n")


def valid_utf8(data: Block) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def screen_lines(data: Block, lines: pa.Array, errors: dict[int, LineError]) -> None:
    """Set aside lines with invalid UTF-8 or a carriage return inside them."""
    if not valid_utf8(data):
        where = pc.indices_nonzero(pc.invert(pc.string_is_ascii(lines.view(pa.string()))))
        for i, raw in zip(where.to_pylist(), pc.take(lines, where).to_pylist(), strict=True):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                msg = f"invalid UTF-8 at byte {exc.start} of the line"
                errors[i] = LineError(i, ErrorKind.PARSE, msg)
    if has_bare_cr(data):
        has_cr = pc.match_substring(lines.view(pa.string()), "\r")
        for i in pc.indices_nonzero(has_cr).to_pylist():
            errors.setdefault(i, LineError(i, ErrorKind.PARSE, "carriage return inside a line"))


def open_quotes(lines: pa.Array, delimiter: str, errors: dict[int, LineError]) -> bool:
    """Set aside lines whose quoted value is still open at the line's end.

    Only lines with an odd number of quotes can be such; each is read by Python's CSV
    reader, which quotes as Arrow does (a quote opens a value only at its start).
    """
    quotes = pc.count_substring(lines.view(pa.string()), '"')
    odd = pc.equal(pc.bit_wise_and(quotes, _ONE), _ONE)
    found = False
    for i in pc.indices_nonzero(odd).to_pylist():
        if i in errors:
            continue
        text = lines[i].as_py().decode("utf-8", errors="replace")
        try:
            next(csv.reader([text], delimiter=delimiter, strict=True), None)
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                errors[i] = LineError(i, ErrorKind.PARSE, _OPEN_QUOTE)
                found = True
    return found


def kept_lines(n: int, errors: dict[int, LineError]) -> pa.Array:
    """Indices of the lines not yet set aside as errors."""
    return pc.indices_nonzero(pc.invert(mask_at(n, errors)))


def row_number(exc: Exception) -> int | None:
    match = re.search(r" in row (\d+)$", str(exc))
    return int(match.group(1)) if match else None
