"""CSV lines with a fixed schema, bad lines apart (see `formats` for the error path).

A block is parsed once by Arrow, typed. When that fails, a block without quotes is
taken apart by numpy passes (`bad_lines`): lines with a wrong field count are cut out,
and the rest is parsed once more, the columns that failed their type as text, checked
by `checks`. A block with quotes, invalid UTF-8 or bare carriage returns takes the
careful path: every column as text, Arrow's handler skipping rows with a wrong field
count, and open quotes found by Python's CSV reader.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from velostream.datasource.file.bad_lines import (
    LineError,
    LineErrors,
    drop_lines,
    line_fields,
)
from velostream.datasource.file.checks import (
    check_column,
    check_known,
    inferred_type,
    majority_type,
    mask_at,
    type_messages,
)
from velostream.datasource.file.formats import (
    Block,
    Decoded,
    Decoder,
    arrow_block_size,
    has_bare_cr,
    join_lines,
    kept_lines,
    open_quotes,
    screen_lines,
    split_lines,
    valid_utf8,
)
from velostream.errors import ErrorKind

__all__ = ["CsvDecoder"]

_ZERO = pa.scalar(0, pa.int64())  # typed: an untyped scalar makes pyarrow import dateutil
# Inference is a function of the block, the names and the delimiter: `velo-sql run`
# infers each file's head when the job is checked and again when it starts.
_INFERRED: dict[tuple[bytes, tuple[str, ...] | None, str], pa.Schema | None] = {}
_INFERRED_MAX = 64
_INFERRED_LOCK = threading.Lock()
# The most distinct bad values of a column kept to look for in the next blocks.
_BAD_VALUES_MAX = 32


def _convert_options(
    schema: pa.Schema | None, *, as_text: bool = False, checked: bool = False
) -> pa_csv.ConvertOptions:
    """`checked`: the block is known to be valid UTF-8, so its values are not checked."""
    types = None
    if schema is not None:
        types = {f.name: (pa.string() if as_text else f.type) for f in schema}
    return pa_csv.ConvertOptions(
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        check_utf8=not (as_text or checked),
    )


def _names_key(names: list[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


class CsvDecoder(Decoder):
    """CSV lines with a fixed schema; see the module docstring for the error path."""

    # Two halves bring no speed here: the careful path's text parse calls back into
    # Python for every row with a wrong field count, and the halves then wait on each
    # other for the GIL (measured: the same wall time for a third more CPU, which the
    # job's thread needs). The unquoted path calls back for none, but its Python steps
    # still take turns: no faster either on two cores (measured on bench_engine case 5).
    halves = False

    def __init__(self, schema: pa.Schema, delimiter: str = ",") -> None:
        super().__init__(schema)
        self.delimiter = delimiter
        self._names = schema.names
        self._typed = _convert_options(schema, checked=True)  # after `valid_utf8`
        self._text = _convert_options(schema, as_text=True)
        self._failing: set[int] = set()  # columns with bad values in the last dirty block
        self._bad_values: dict[int, pa.Array] = {}  # their distinct bad values, if few
        self._mixed: dict[frozenset[int], pa_csv.ConvertOptions] = {}

    @classmethod
    def infer(
        cls, block: bytes, names: list[str] | None, delimiter: str = ","
    ) -> CsvDecoder | None:
        """Infer column types from `block`; None when it holds no row to infer from."""
        key = (hashlib.blake2b(block, digest_size=20).digest(), _names_key(names), delimiter)
        with _INFERRED_LOCK:
            seen = key in _INFERRED
            known = _INFERRED.get(key)
        if not seen:
            known = cls._infer_schema(block, names, delimiter)
            with _INFERRED_LOCK:
                if len(_INFERRED) >= _INFERRED_MAX:
                    del _INFERRED[next(iter(_INFERRED))]
                _INFERRED[key] = known
        return None if known is None else cls(known, delimiter)

    @staticmethod
    def _infer_schema(block: bytes, names: list[str] | None, delimiter: str) -> pa.Schema | None:
        n = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        if not valid_utf8(block) or has_bare_cr(block) or b'"' in block:
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
        return pa.schema(fields)

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
        if not valid_utf8(block) or has_bare_cr(block):
            return None
        # No invalid-row handler: a row with a wrong field count stops the parse at
        # once, where a handler would call back into Python for every such row.
        try:
            table = self._parse(block, self._typed, True, None)
        except pa.ArrowInvalid as exc:
            column = _failed_column(exc)
            if column is not None:
                self._failing.add(column)
            return None
        if table.num_rows != n_lines:
            return None
        return Decoded(table, None, LineErrors.none())

    def _decode_dirty(self, block: Block, n_lines: int) -> Decoded:
        plain = valid_utf8(block) and not has_bare_cr(block)
        if plain and b'"' not in block:
            unquoted = self._decode_unquoted(block, n_lines)
            if unquoted is not None:
                return unquoted
        errors: dict[int, LineError] = {}
        text: pa.Table | None = None
        row_lines: pa.Array | None = None
        lines = split_lines(block, n_lines)
        if plain:
            text, invalid = self._parse_text(block)
            row_lines = self._row_lines(text, invalid, lines, None, errors)
        else:
            screen_lines(block, lines, errors)
        for _ in range(3):
            if row_lines is not None and text is not None:
                found = LineErrors.of(errors.values())
                return self._typed_rows(text, row_lines, found, n_lines, lines)
            if text is not None and not open_quotes(lines, self.delimiter, errors):
                break
            kept = kept_lines(len(lines), errors) if errors else None
            body = block if kept is None else join_lines(pc.take(lines, kept))
            text, invalid = self._parse_text(body)
            row_lines = self._row_lines(text, invalid, lines, kept, errors)
        return self._decode_line_by_line(lines, errors)

    def _decode_unquoted(self, block: Block, n_lines: int) -> Decoded | None:
        """Without quotes, a line's fields are its delimiters plus one: lines with a
        wrong count are found and cut out by numpy passes over the block (see
        `bad_lines`), and the rest is parsed once on Arrow's threads, typed but for
        the columns that failed their type lately, which come as text for
        `check_column`. No row calls back into Python, so this runs beside a job
        thread that is busy in Python (a callback per bad row would wait for the GIL
        each time). None if the parse still meets a bad row.
        """
        split = line_fields(block, n_lines, self.delimiter)
        if split is None:
            return None
        bounds, fields = split
        width = len(self._names)
        nonempty = bounds.ends > bounds.starts
        right = fields == width
        wrong = np.flatnonzero(nonempty & ~right)
        row_lines = np.flatnonzero(nonempty & right)
        body = block if not len(wrong) else drop_lines(block, bounds, wrong)
        table = self._parse_mixed(body)
        if table is None or table.num_rows != len(row_lines):
            return None
        got, codes = np.unique(fields[wrong], return_inverse=True)
        reasons = [(ErrorKind.PARSE, f"expected {width} fields, got {n}") for n in got.tolist()]
        found = LineErrors(wrong, codes, reasons)
        decoded = self._typed_rows(table, row_lines, found, n_lines)
        decoded.bounds = bounds
        return decoded

    def _parse_mixed(self, body: Block | pa.Buffer) -> pa.Table | None:
        """Parse with the schema's types, the columns in `_failing` as text; a column
        that fails its type joins them and the parse runs again. None on another error.
        """
        while True:
            try:
                return self._parse(body, self._failing_as_text(), True, None)
            except pa.ArrowInvalid as exc:
                column = _failed_column(exc)
                if column is None or column in self._failing:
                    return None
                self._failing.add(column)

    def _failing_as_text(self) -> pa_csv.ConvertOptions:
        key = frozenset(self._failing)
        convert = self._mixed.get(key)
        if convert is None:
            types = [
                pa.field(f.name, pa.string() if j in key else f.type)
                for j, f in enumerate(self.schema)
            ]
            convert = self._mixed[key] = _convert_options(pa.schema(types))
        return convert

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
        found = LineErrors.of(errors.values())
        return self._typed_rows(text, pa.array(rows, pa.int64()), found, len(lines), lines)

    def _text_schema(self) -> pa.Schema:
        return pa.schema([(n, pa.string()) for n in self._names])

    def _typed_rows(
        self,
        text: pa.Table,
        row_lines: pa.Array | np.ndarray,
        errors: LineErrors,
        n_lines: int,
        lines: pa.Array | None = None,
    ) -> Decoded:
        """Check and convert each typed column of the text rows; drop rows that fail.

        `errors`: the lines found bad before; a row failing its type joins them.
        Columns already of their type pass as they are.
        """
        rows = _int64s(row_lines)
        bad: np.ndarray | None = None
        parts = [errors]
        columns = []
        for j, field in enumerate(self.schema):
            column = text.column(j)
            if column.type == field.type:
                columns.append(column)
                continue
            known = self._bad_values.get(j)
            checked = None if known is None else check_known(column, field.type, known)
            if checked is None:
                values, failed = check_column(
                    column, field.type, expect_failures=j in self._failing
                )
            else:
                values, failed = checked
            columns.append(values)
            if failed is None:
                self._failing.discard(j)
                continue
            self._failing.add(j)
            mask = _bools(failed)
            if checked is None:  # else the bad values are some of those known
                self._learn_bad_values(j, column, mask)
            new = mask if bad is None else mask & ~bad
            where = np.flatnonzero(new)
            if len(where):  # a row failing in two columns is reported for the first
                codes, messages = type_messages(field, pc.take(column, pa.array(where)))
                reasons = [(ErrorKind.TYPE, message) for message in messages]
                parts.append(LineErrors(rows[where], codes, reasons))
            bad = mask if bad is None else bad | mask
        if bad is not None:
            # column by column: a table's filter cuts every column where any is cut, and
            # the checked columns are chunked unlike the rest (1.8 times the time)
            good = ~bad
            keep = pa.array(good)
            columns = [column.filter(keep) for column in columns]
            rows = rows[good]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        identity = len(rows) == n_lines
        return Decoded(table, None if identity else pa.array(rows), LineErrors.merged(parts), lines)

    def _learn_bad_values(self, j: int, column: pa.ChunkedArray, failed: np.ndarray) -> None:
        """Keep the distinct values of column `j` that failed, when there are few."""
        distinct = pc.unique(pc.take(column, pa.array(np.flatnonzero(failed))))
        if len(distinct) <= _BAD_VALUES_MAX:
            self._bad_values[j] = (
                distinct.combine_chunks() if isinstance(distinct, pa.ChunkedArray) else distinct
            )
        else:
            self._bad_values.pop(j, None)


def _int64s(values: pa.Array | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.int64, copy=False)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


def _bools(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean mask as numpy, null as false."""
    filled = pc.fill_null(mask, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _failed_column(exc: Exception) -> int | None:
    match = re.match(r"In CSV column #(\d+): ", str(exc))
    return int(match.group(1)) if match else None


def _csv_message(exc: Exception) -> str:
    text = str(exc)
    text = re.sub(r"^CSV parse error: (Row #\d+: )?", "", text)
    return text.split("\n")[0]
