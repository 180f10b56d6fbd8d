"""JSON lines: one object per line, decoded by Arrow with the stream's fixed schema.

Arrow's JSON reader has no bad-row handler, but its error names the failing row. When
a block fails, parsing resumes just after each failing line until the rest parses;
then the good lines are parsed once. A block with k bad lines costs about three
parses plus k short ones (each stops at its error). A conversion error that names no
row is located by galloping search.
"""

from __future__ import annotations

import re

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from velostream.datasource.file.checks import inferred_type, mask_at
from velostream.datasource.file.formats import (
    Block,
    Decoded,
    Decoder,
    LineError,
    LineErrors,
    arrow_block_size,
    join_lines,
    row_number,
    screen_lines,
    split_lines,
    valid_utf8,
)
from velostream.errors import ErrorKind

__all__ = ["JsonDecoder"]

_CHANGED = re.compile(r"Column\((/?[^)]*)\) changed from (\w+) to (\w+)")
_TWICE = re.compile(r"Column\((/?[^)]*)\) was specified twice")
_NOT_AN_OBJECT = "not a JSON object (each line must hold exactly one object)"
_CONVERT = re.compile(r"Failed to convert JSON to ([^,]+), couldn't parse:(.*)$", re.S)


class JsonDecoder(Decoder):
    """JSON lines with a fixed schema; fields not in the schema are ignored."""

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__(schema)
        self._options = pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        )

    @classmethod
    def infer(cls, block: bytes) -> JsonDecoder | None:
        """Infer the schema from the JSON objects in `block`; None when it holds none."""
        n = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        lines = split_lines(block, n)
        errors: dict[int, LineError] = {}
        screen_lines(block, lines, errors)
        objects = []
        for i, raw in enumerate(lines.to_pylist()):
            if i in errors or not raw.strip():
                continue
            try:
                if isinstance(orjson.loads(raw), dict):
                    objects.append(raw)
            except orjson.JSONDecodeError:
                continue
        while objects:
            try:
                body = pa.py_buffer(b"\n".join(objects) + b"\n")
                size = arrow_block_size(body.size, False, 0)
                options = pa_json.ReadOptions(use_threads=False, block_size=size)
                table = pa_json.read_json(body, read_options=options)
                break
            except pa.ArrowInvalid as exc:
                bad = row_number(exc)
                if bad is None or bad >= len(objects):
                    return None
                del objects[bad]  # a later object disagreeing on a type: the first wins
        else:
            return None
        if table.num_columns == 0:
            return None
        fields = [pa.field(f.name, inferred_type(f.type, nested=True)) for f in table.schema]
        return cls(pa.schema(fields))

    def _read(self, data: Block | pa.Buffer, threads: bool) -> pa.Table:
        buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        # One block when single-threaded, so a row number in an error is segment-relative.
        size = arrow_block_size(buf.size, threads, self.max_record_bytes)
        options = pa_json.ReadOptions(use_threads=threads, block_size=size)
        return pa_json.read_json(buf, read_options=options, parse_options=self._options)

    def _decode_fast(self, block: Block, n_lines: int) -> Decoded | None:
        if not valid_utf8(block):
            return None
        try:
            table = self._read(block, True)
        except pa.ArrowInvalid:
            return None
        return Decoded(table, None, LineErrors.none()) if table.num_rows == n_lines else None

    def _decode_dirty(self, block: Block, n_lines: int) -> Decoded:
        lines = split_lines(block, n_lines)
        errors: dict[int, LineError] = {}
        screen_lines(block, lines, errors)
        # Whitespace-only lines are skipped, as Arrow skips them; any other line must
        # hold one object, so that rows and lines stay in step.
        trimmed = pc.ascii_trim_whitespace(lines.view(pa.string()))
        blank = pc.equal(pc.binary_length(trimmed), pa.scalar(0, pa.int32()))
        shaped = pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}"))
        for i in pc.indices_nonzero(pc.invert(pc.or_(blank, shaped))).to_pylist():
            errors.setdefault(i, LineError(i, ErrorKind.PARSE, _NOT_AN_OBJECT))
        skip = pc.or_(blank, mask_at(len(lines), errors))
        records = pc.indices_nonzero(pc.invert(skip))
        scan = _Scan(self, lines, records)
        scan.run()
        for position, (kind, message) in scan.bad.items():
            line = records[position].as_py()
            errors[line] = LineError(line, kind, message)
        dropped = mask_at(len(records), scan.bad)
        rows = pc.filter(records, pc.invert(dropped))
        table = pa.concat_tables(scan.pieces) if scan.pieces else self.schema.empty_table()
        identity = len(rows) == len(lines)
        return Decoded(table, None if identity else rows, LineErrors.of(errors.values()), lines)


class _Scan:
    """Error-driven scan over a block's record lines (positions index `records`)."""

    def __init__(self, decoder: JsonDecoder, lines: pa.Array, records: pa.Array) -> None:
        self.decoder = decoder
        self.lines = pc.take(lines, records)
        self.body = join_lines(self.lines)
        lengths = pc.add(pc.binary_length(self.lines), pa.scalar(1, pa.int64()))
        ends = pc.cumulative_sum(lengths).to_pylist() if len(records) else []
        self.offsets = [0, *ends]
        self.pieces: list[pa.Table] = []
        self.bad: dict[int, tuple[ErrorKind, str]] = {}

    def _segment(self, start: int, end: int) -> pa.Buffer:
        return self.body.slice(self.offsets[start], self.offsets[end] - self.offsets[start])

    def run(self) -> None:
        if not self._find_bad() or not self._parse_good():
            # Rows and lines did not line up (say, two objects on one line).
            self.bad.clear()
            self.pieces.clear()
            self._line_by_line(0, len(self.lines))

    def _find_bad(self) -> bool:
        """Each failed parse names one bad line; resume just after it."""
        start, end = 0, len(self.lines)
        while start < end:
            try:
                table = self.decoder._read(self._segment(start, end), False)
            except pa.ArrowInvalid as exc:
                found = self._locate(start, end, exc)
                if found is None:
                    return False
                bad, error = found
                self.bad[bad] = _classify(error, self.lines[bad].as_py(), self.decoder.schema)
                start = bad + 1
                continue
            return bool(table.num_rows == end - start)
        return True

    def _parse_good(self) -> bool:
        """One parse of every line not found bad."""
        if not self.bad:
            body = self.body
        else:
            dropped = mask_at(len(self.lines), self.bad)
            body = join_lines(pc.filter(self.lines, pc.invert(dropped)))
        try:
            table = self.decoder._read(body, True)
        except pa.ArrowInvalid:
            return False
        if table.num_rows != len(self.lines) - len(self.bad):
            return False
        self.pieces = [table]
        return True

    def _locate(self, start: int, end: int, exc: pa.ArrowInvalid) -> tuple[int, Exception] | None:
        """The first failing line of [start, end) and its error."""
        row = row_number(exc)
        if row is not None:
            return (start + row, exc) if start + row < end else None
        good, size = 0, 1  # galloping: prefix `good` parses, prefix `bad` fails
        failure: Exception | None = None
        while failure is None:
            size = min(size, end - start)
            try:
                self.decoder._read(self._segment(start, start + size), False)
            except pa.ArrowInvalid as err:
                failure, bad = err, size
                break
            if size == end - start:
                return None
            good, size = size, size * 2
        while bad - good > 1:
            mid = (good + bad) // 2
            try:
                self.decoder._read(self._segment(start, start + mid), False)
                good = mid
            except pa.ArrowInvalid as err:
                failure, bad = err, mid
        return start + bad - 1, failure

    def _line_by_line(self, start: int, end: int) -> None:
        """Last resort: one parse per line, each line exactly one object or bad."""
        for i in range(start, end):
            raw = self.lines[i].as_py()
            try:
                table = self.decoder._read(raw + b"\n", False)
            except pa.ArrowInvalid as exc:
                self.bad[i] = _classify(exc, raw, self.decoder.schema)
                continue
            if table.num_rows != 1:
                self.bad[i] = (ErrorKind.PARSE, _NOT_AN_OBJECT)
                continue
            self.pieces.append(table)


def _classify(exc: Exception, raw: bytes, schema: pa.Schema) -> tuple[ErrorKind, str]:
    text = str(exc)
    changed = _CHANGED.search(text)
    if changed:
        path, expected, got = changed.groups()
        if not path.strip("/"):
            return ErrorKind.PARSE, f"expected a JSON object, got {got}"
        column = path.strip("/").replace("/", ".")
        return ErrorKind.TYPE, f"column '{column}': expected {expected}, got {got}"
    twice = _TWICE.search(text)
    if twice:
        return ErrorKind.PARSE, f"key '{twice.group(1).strip('/')}' appears twice"
    convert = _CONVERT.search(text)
    if convert:
        target, value = convert.group(1), convert.group(2)[:80]
        column = _failing_column(raw, schema)
        where = f"column '{column}': " if column else ""
        return ErrorKind.TYPE, f"{where}{value!r} is not a valid {target}"
    text = re.sub(r"^JSON parse error: ", "", text)
    text = re.sub(r" in row \d+$", "", text)
    return ErrorKind.PARSE, f"invalid JSON: {text}"


def _failing_column(raw: bytes, schema: pa.Schema) -> str | None:
    """The first column of `raw` whose value does not convert to the schema's type."""
    try:
        table = pa_json.read_json(pa.py_buffer(raw + b"\n"))
    except pa.ArrowInvalid:
        return None
    for field in schema:
        if field.name not in table.column_names:
            continue
        try:
            pc.cast(table.column(field.name), field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return str(field.name)
    return None
