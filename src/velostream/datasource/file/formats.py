"""Decode blocks of whole lines (CSV or JSON lines) into Arrow tables, bad lines apart.

A block is parsed once by Arrow with the stream's fixed schema. Only when that parse
fails or its row count does not match the block's line count is the block taken
apart (a large JSON one as two halves, one on a worker thread): the lines are split by
Arrow, lines with invalid UTF-8 are set aside, CSV is re-parsed with every column as
text (rows with a wrong field count skipped by Arrow's handler) and each typed column
is checked with vectorised compute (see `checks`), and JSON is re-parsed from just
after each failing line (see `jsonl`). Good rows keep their order; each bad line
becomes one `LineError`.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from velostream.datasource.file.checks import (
    check_column,
    inferred_type,
    majority_type,
    mask_at,
    type_messages,
)
from velostream.errors import ErrorKind

__all__ = [
    "Block",
    "CsvDecoder",
    "Decoded",
    "Decoder",
    "LineError",
    "arrow_block_size",
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
_ZERO = pa.scalar(0, pa.int64())
_ONE = pa.scalar(1, pa.int64())
_BYTES_EMPTY = pa.scalar(b"", pa.binary())
_BYTES_NEWLINE = pa.scalar(b"\n", pa.binary())


class LineError(NamedTuple):
    """Line `line` (0-based, within its block) is a bad record."""

    line: int
    kind: ErrorKind
    message: str


@dataclass(slots=True)
class Decoded:
    """A block's good rows; `rows[i]` is the block line of row i (None: row i is line i)."""

    table: pa.Table
    rows: pa.Array | None
    errors: list[LineError]
    lines: pa.Array | None = None


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
        new = tuple.__new__  # a NamedTuple's own constructor costs more, per bad line
        errors = head.errors + [
            new(LineError, (line + first_lines, kind, message))
            for line, kind, message in tail.errors
        ]
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


def _has_bare_cr(data: Block) -> bool:
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
    if _has_bare_cr(data):
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


# -- CSV --------------------------------------------------------------------------


def _convert_options(schema: pa.Schema | None, *, as_text: bool = False) -> pa_csv.ConvertOptions:
    types = None
    if schema is not None:
        types = {f.name: (pa.string() if as_text else f.type) for f in schema}
    return pa_csv.ConvertOptions(
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        check_utf8=not as_text,
    )


class CsvDecoder(Decoder):
    """CSV lines with a fixed schema; see the module docstring for the error path."""

    # Two halves bring no speed here: the text parse calls back into Python for every
    # row with a wrong field count, and the halves then wait on each other for the GIL
    # (measured: the same wall time for a third more CPU, which the job's thread needs).
    halves = False

    def __init__(self, schema: pa.Schema, delimiter: str = ",") -> None:
        super().__init__(schema)
        self.delimiter = delimiter
        self._names = schema.names
        self._typed = _convert_options(schema)
        self._text = _convert_options(schema, as_text=True)
        self._failing: set[int] = set()  # columns with bad values in the last dirty block

    @classmethod
    def infer(
        cls, block: bytes, names: list[str] | None, delimiter: str = ","
    ) -> CsvDecoder | None:
        """Infer column types from `block`; None when it holds no row to infer from."""
        n = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        if not valid_utf8(block) or _has_bare_cr(block) or b'"' in block:
            lines = split_lines(block, n)
            errors: dict[int, LineError] = {}
            screen_lines(block, lines, errors)
            if b'"' in block:
                open_quotes(lines, delimiter, errors)
            if errors:
                block = join_lines(pc.take(lines, kept_lines(n, errors))).to_pybytes()
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=pa_csv.ReadOptions(
                    column_names=names,
                    autogenerate_column_names=names is None,
                    use_threads=False,
                    block_size=arrow_block_size(len(block), False, 0),
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=delimiter, invalid_row_handler=lambda row: "skip"
                ),
                convert_options=_convert_options(None),
            )
        except pa.ArrowInvalid:
            return None  # nothing parseable (say, every line set aside)
        if names is None:
            if table.num_columns == 0 or table.num_rows == 0:
                return None
            names = [f"column{i}" for i in range(table.num_columns)]
        types = [
            majority_type(table.column(i)) or inferred_type(t)
            for i, t in enumerate(table.schema.types)
        ]
        fields = [pa.field(name, t) for name, t in zip(names, types, strict=True)]
        return cls(pa.schema(fields), delimiter)

    def _parse(
        self,
        data: Block | pa.Buffer,
        convert: pa_csv.ConvertOptions,
        threads: bool,
        handler: Callable[[pa_csv.InvalidRow], str] | None,
    ) -> pa.Table:
        buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        size = arrow_block_size(buf.size, threads, self.max_record_bytes)
        try:
            return pa_csv.read_csv(
                buf,
                read_options=pa_csv.ReadOptions(
                    column_names=self._names, use_threads=threads, block_size=size
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter, invalid_row_handler=handler
                ),
                convert_options=convert,
            )
        except pa.ArrowInvalid as exc:
            if not str(exc).startswith("Empty CSV file"):
                raise
            types = convert.column_types
            return pa.schema([(n, types.get(n, pa.string())) for n in self._names]).empty_table()

    def _decode_fast(self, block: Block, n_lines: int) -> Decoded | None:
        if not valid_utf8(block) or _has_bare_cr(block):
            return None
        invalid: list[int] = []

        def count(row: pa_csv.InvalidRow) -> str:
            invalid.append(1)
            return "skip"

        try:
            table = self._parse(block, self._typed, True, count)
        except pa.ArrowInvalid as exc:
            column = _failed_column(exc)
            if column is not None:
                self._failing.add(column)
            return None
        if table.num_rows != n_lines or invalid:
            return None
        return Decoded(table, None, [])

    def _decode_dirty(self, block: Block, n_lines: int) -> Decoded:
        errors: dict[int, LineError] = {}
        text: pa.Table | None = None
        row_lines: pa.Array | None = None
        lines = split_lines(block, n_lines)
        plain = valid_utf8(block) and not _has_bare_cr(block)
        if plain and b'"' not in block:
            unquoted = self._decode_unquoted(block, lines)
            if unquoted is not None:
                return unquoted
        if plain:
            text, invalid = self._parse_text(block)
            row_lines = self._row_lines(text, invalid, lines, None, errors)
        else:
            screen_lines(block, lines, errors)
        for _ in range(3):
            if row_lines is not None and text is not None:
                return self._typed_rows(text, row_lines, lines, errors)
            if text is not None and not open_quotes(lines, self.delimiter, errors):
                break
            kept = kept_lines(len(lines), errors) if errors else None
            body = block if kept is None else join_lines(pc.take(lines, kept))
            text, invalid = self._parse_text(body)
            row_lines = self._row_lines(text, invalid, lines, kept, errors)
        return self._decode_line_by_line(lines, errors)

    def _decode_unquoted(self, block: Block, lines: pa.Array) -> Decoded | None:
        """Without quotes, a line's fields are its delimiters plus one: lines with a
        wrong count are found by kernels, and the rest is parsed as text on Arrow's
        threads. No row calls back into Python, so this runs beside a job thread that
        is busy in Python (a callback per bad row would wait for the GIL each time).
        None if the parse still meets a bad row.
        """
        width = len(self._names)
        fields = pc.add(pc.count_substring(lines, self.delimiter), _ONE)
        nonempty = pc.greater(pc.binary_length(lines), _ZERO)
        wrong = pc.and_(nonempty, pc.not_equal(fields, pa.scalar(width, pa.int64())))
        errors: dict[int, LineError] = {}
        where = pc.indices_nonzero(wrong)
        if len(where):
            new = tuple.__new__
            messages: dict[int, str] = {}
            counts = pc.take(fields, where).to_pylist()
            for line, got in zip(where.to_pylist(), counts, strict=True):
                message = messages.get(got) or messages.setdefault(
                    got, f"expected {width} fields, got {got}"
                )
                errors[line] = new(LineError, (line, ErrorKind.PARSE, message))
        row_lines = pc.indices_nonzero(pc.and_(nonempty, pc.invert(wrong)))
        body = block if len(row_lines) == len(lines) else join_lines(pc.take(lines, row_lines))
        try:
            text = self._parse(body, self._text, True, None)
        except pa.ArrowInvalid:
            return None
        if text.num_rows != len(row_lines):
            return None
        return self._typed_rows(text, row_lines, lines, errors)

    def _parse_text(self, body: Block | pa.Buffer) -> tuple[pa.Table, list[tuple[int, int]]]:
        """Every column as text; rows with a wrong field count as (position, fields).

        Single-threaded: invalid rows then come with their positions among the
        non-empty lines, and it beats Arrow's threads calling back into Python.
        """
        invalid: list[tuple[int, int]] = []

        def collect(row: pa_csv.InvalidRow) -> str:
            invalid.append((row.number - 1, row.actual_columns))
            return "skip"

        buf = body if isinstance(body, pa.Buffer) else pa.py_buffer(body)
        return self._parse(buf, self._text, False, collect), invalid

    def _row_lines(
        self,
        text: pa.Table,
        invalid: list[tuple[int, int]],
        lines: pa.Array,
        kept: pa.Array | None,
        errors: dict[int, LineError],
    ) -> pa.Array | None:
        """The line of each text row; None when rows and lines do not match up."""
        rows = text.num_rows + len(invalid)
        if kept is None and rows == len(lines):
            nonempty = None  # every line is a row: no empty lines, nothing joined
        else:
            candidates = lines if kept is None else pc.take(lines, kept)
            nonempty = pc.indices_nonzero(pc.greater(pc.binary_length(candidates), _ZERO))
            if kept is not None:
                nonempty = pc.take(kept, nonempty)
            if rows != len(nonempty):
                return None  # a quote ran across lines
        positions = [p for p, _ in invalid]
        dropped = mask_at(rows, positions)
        if nonempty is None:
            row_lines = pc.indices_nonzero(pc.invert(dropped))
            invalid_lines = positions
        else:
            row_lines = pc.filter(nonempty, pc.invert(dropped))
            invalid_lines = pc.take(nonempty, pa.array(positions, pa.int64())).to_pylist()
        width = len(self._names)
        new = tuple.__new__
        messages: dict[int, str] = {}
        for line, (_, got) in zip(invalid_lines, invalid, strict=True):
            msg = messages.get(got) or messages.setdefault(
                got, f"expected {width} fields, got {got}"
            )
            errors[line] = new(LineError, (line, ErrorKind.PARSE, msg))
        return row_lines

    def _decode_line_by_line(self, lines: pa.Array, errors: dict[int, LineError]) -> Decoded:
        """Last resort when rows and lines cannot be matched up: one parse per line."""
        rows: list[int] = []
        pieces: list[pa.Table] = []
        for i, raw in enumerate(lines.to_pylist()):
            if i in errors or not raw:
                continue
            try:
                one = self._parse(raw + b"\n", self._text, False, lambda row: "error")
            except pa.ArrowInvalid as exc:
                errors[i] = LineError(i, ErrorKind.PARSE, _csv_message(exc))
                continue
            if one.num_rows != 1:
                errors[i] = LineError(i, ErrorKind.PARSE, "not a single CSV record")
                continue
            rows.append(i)
            pieces.append(one)
        text = pa.concat_tables(pieces) if pieces else self._text_schema().empty_table()
        return self._typed_rows(text, pa.array(rows, pa.int64()), lines, errors)

    def _text_schema(self) -> pa.Schema:
        return pa.schema([(n, pa.string()) for n in self._names])

    def _typed_rows(
        self, text: pa.Table, row_lines: pa.Array, lines: pa.Array, errors: dict[int, LineError]
    ) -> Decoded:
        """Check and convert each typed column of the text rows; drop rows that fail."""
        bad: pa.Array | None = None
        columns = []
        for j, field in enumerate(self.schema):
            column = text.column(j)
            if column.type == field.type:
                columns.append(column)
                continue
            values, failed = check_column(column, field.type, expect_failures=j in self._failing)
            columns.append(values)
            if failed is None:
                self._failing.discard(j)
                continue
            self._failing.add(j)
            where = pc.indices_nonzero(failed)
            messages = type_messages(field, pc.take(column, where))
            new, kind = tuple.__new__, ErrorKind.TYPE
            for line, msg in zip(pc.take(row_lines, where).to_pylist(), messages, strict=True):
                if line not in errors:
                    errors[line] = new(LineError, (line, kind, msg))
            bad = failed if bad is None else pc.or_(bad, failed)
        if bad is not None:
            good = pc.invert(bad)
            columns = [pc.filter(c, good) for c in columns]
            row_lines = pc.filter(row_lines, good)
        table = pa.Table.from_arrays(columns, schema=self.schema)
        ordered = [errors[line] for line in sorted(errors)]
        identity = len(row_lines) == len(lines)
        return Decoded(table, None if identity else row_lines, ordered, lines)


def _failed_column(exc: Exception) -> int | None:
    match = re.match(r"In CSV column #(\d+): ", str(exc))
    return int(match.group(1)) if match else None


def _csv_message(exc: Exception) -> str:
    text = str(exc)
    text = re.sub(r"^CSV parse error: (Row #\d+: )?", "", text)
    return text.split("\n")[0]
