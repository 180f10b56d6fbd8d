"""Rows to CSV or JSON lines text with Arrow compute: no Python per row.

CSV (spec/SQL.md "Output formats"): a header row, columns in table order, NULL as an
empty field, floats in their shortest round-trip form (`2750.5`, `15025.0`, as Python
and DuckDB print them), strings quoted only when needed (a delimiter, quote or line
break inside, or the empty string, which must differ from NULL), timestamps ISO-8601.
JSON lines: one object per row, keys in column order, non-finite floats as null.
Values of rare types (nested, binary) are formatted one by one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

__all__ = ["csv_header", "encode_csv", "encode_jsonl"]

_MAX_ROWS = 1 << 18  # rows per formatted slice: keeps 32-bit string offsets safe
_PARALLEL_ROWS = 1 << 14  # a table this large is encoded on two threads at once
_PARTS = 4  # in this many parts, taken in turn (`_in_parts`)
_TEXTUAL_DELIMITERS = frozenset(",;\t|")  # cannot occur in numbers, booleans or times
_FRACTION = r"(?:(\.[0-9]*[1-9])0*|\.0+)?"
_JSON_SPECIAL = re.compile(rb'[\x00-\x1f"\\]')


@cache
def _lit(value: str) -> pa.Scalar:
    """`value` as a typed Arrow scalar: an untyped Python one passed to a kernel makes
    pyarrow try to import optional modules (dateutil) on every call, at ~1 ms each."""
    return pa.scalar(value, pa.string())


def csv_header(names: list[str], delimiter: str = ",") -> bytes:
    """The header line, names quoted only when needed."""
    cells, _ = _quote_where_needed(pa.array(names, pa.string()), delimiter)
    return (delimiter.join(cells.to_pylist()) + "\n").encode()


def encode_csv(table: pa.Table, delimiter: str = ",") -> Iterator[pa.Buffer]:
    """The table's rows as CSV lines (no header), in buffers to write in order."""
    if table.num_columns == 0:
        return
    yield from _in_parts(table, lambda part: _encode_csv(part, delimiter))


def encode_jsonl(table: pa.Table) -> Iterator[pa.Buffer]:
    """The table's rows as JSON lines, in buffers to write in order."""
    yield from _in_parts(table, _encode_jsonl)


def _in_parts(
    table: pa.Table, encode: Callable[[pa.Table], Iterator[pa.Buffer]]
) -> Iterator[pa.Buffer]:
    """Encode a large table in parts that this thread and a worker thread take in turn
    (Arrow's kernels release the GIL); the buffers come out in row order.

    Whichever thread is free takes the next part: with two fixed halves, this thread
    (its half done) waited for the worker's, which shares two cores with the source's
    read-ahead (case 6 of bench_engine: a tenth of the job thread's time).
    """
    if table.num_rows < _PARALLEL_ROWS:
        yield from encode(table)
        return
    size = -(-table.num_rows // _PARTS)
    parts = [table.slice(first, size) for first in range(0, table.num_rows, size)]
    done: list[list[pa.Buffer]] = [[] for _ in parts]
    order = iter(range(len(parts)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(order, None)
            if index is None:
                return
            done[index] = list(encode(parts[index]))

    helper = _worker().submit(work)
    try:
        work()
    finally:
        if not helper.cancel():  # still queued behind another job's table: not waited for
            helper.result()
    for buffers in done:
        yield from buffers


@cache
def _worker() -> ThreadPoolExecutor:
    """The thread that helps encode large tables (`_in_parts`); made on first use."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="velostream-encode")


def _encode_csv(table: pa.Table, delimiter: str) -> Iterator[pa.Buffer]:
    for batch in table.to_batches(max_chunksize=_MAX_ROWS):
        if batch.num_rows == 0:
            continue
        columns = [_csv_cells(col, delimiter) for col in batch.columns]
        cells = [text for text, _ in columns]
        if any(quoted for _, quoted in columns):
            yield _joined(cells, delimiter)
            continue
        # Cells with no quote, delimiter or line break (none needed quoting): Arrow's
        # CSV writer, told to quote nothing, lays them out in half the time of the joins.
        lines = pa.BufferOutputStream()
        names = [str(i) for i in range(len(cells))]
        pa_csv.write_csv(pa.record_batch(cells, names=names), lines, _plain_rows(delimiter))
        yield lines.getvalue()


@cache
def _plain_rows(delimiter: str) -> pa_csv.WriteOptions:
    return pa_csv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")


def _joined(cells: list[pa.Array], delimiter: str) -> pa.Buffer:
    """Lines of the cells joined by `delimiter`, whatever the cells hold."""
    # The newline goes on the last cell: cheaper than a pass over whole rows.
    last = pc.binary_join_element_wise(
        cells[-1], _lit("\n"), _lit(""), null_handling="replace", null_replacement=""
    )
    return _span(
        pc.binary_join_element_wise(
            *cells[:-1], last, _lit(delimiter), null_handling="replace", null_replacement=""
        )
    )


def _encode_jsonl(table: pa.Table) -> Iterator[pa.Buffer]:
    keys = [orjson.dumps(name).decode() + ":" for name in table.column_names]
    for batch in table.to_batches(max_chunksize=_MAX_ROWS):
        if batch.num_rows == 0:
            continue
        pairs = [
            pc.binary_join_element_wise(_lit(key), _json_values(col), _lit(""))
            for key, col in zip(keys, batch.columns, strict=True)
        ]
        body = (
            pc.binary_join_element_wise(*pairs, _lit(","))
            if pairs
            else pa.array([""] * len(batch), pa.string())
        )
        yield _span(pc.binary_join_element_wise(_lit("{"), body, _lit("}\n"), _lit("")))


def _span(lines: pa.Array) -> pa.Buffer:
    """The character data of a string array, from its first value to its last."""
    bounds = pa.Array.from_buffers(
        pa.int32(), len(lines) + 1, [None, lines.buffers()[1]], offset=lines.offset
    )
    return lines.buffers()[2][bounds[0].as_py() : bounds[-1].as_py()]


# -- one column to text -------------------------------------------------------------


def _csv_cells(col: pa.Array, delimiter: str) -> tuple[pa.Array, bool]:
    """The column's CSV fields, and whether one was quoted."""
    t = col.type
    if pa.types.is_dictionary(t):
        return _csv_cells(col.dictionary_decode(), delimiter)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _quote_where_needed(col.cast(pa.string()), delimiter)
    text = _plain_text(col)
    if text is None:
        return _quote_where_needed(_each(col, _csv_text), delimiter)
    if delimiter in _TEXTUAL_DELIMITERS:
        return text, False
    return _quote_where_needed(text, delimiter)


def _json_values(col: pa.Array) -> pa.Array:
    t = col.type
    if pa.types.is_dictionary(t):
        return _json_values(col.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = _json_strings(col.cast(pa.string()))
    elif pa.types.is_floating(t):
        finite = pc.is_finite(col)
        values = pc.if_else(finite, _floats(col), pa.scalar(None, pa.string()))
    elif pa.types.is_temporal(t) and not pa.types.is_duration(t):
        values = pc.binary_join_element_wise(_lit('"'), _plain_text(col), _lit('"'), _lit(""))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        values = pc.cast(col, pa.string())
    elif pa.types.is_null(t):
        values = pa.nulls(len(col), pa.string())
    else:
        values = _each(col, _json_text)
    return pc.fill_null(values, "null")


def _plain_text(col: pa.Array) -> pa.Array | None:
    """Numbers, booleans and times as text; None for types without a plain form."""
    t = col.type
    if pa.types.is_floating(t):
        return _floats(col)
    if pa.types.is_timestamp(t):
        text = _whole_seconds(col)
        if text is None:
            text = pc.replace_substring_regex(
                pc.cast(col, pa.string()), rf"^(\S+) ([0-9:]+){_FRACTION}", r"\1T\2\3"
            )
        if t.tz is not None and t.tz.upper() not in {"UTC", "Z", "+00:00"}:
            text = pc.replace_substring_regex(text, r"([+-][0-9]{2})([0-9]{2})$", r"\1:\2")
        return text
    if pa.types.is_time(t):
        return pc.replace_substring_regex(
            pc.cast(col, pa.string()), rf"^([0-9:]+){_FRACTION}$", r"\1\2"
        )
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string())
    if (
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date(t)
        or pa.types.is_decimal(t)
        or pa.types.is_duration(t)
    ):
        return pc.cast(col, pa.string())
    return None


def _whole_seconds(col: pa.Array) -> pa.Array | None:
    """Timestamps without a fraction of a second as ISO 8601 text, with no pattern pass
    (a fifth of a windowed job's thread went to one); None if any has a fraction."""
    t = col.type
    if t.unit != "s":
        try:  # safe: refused when a value has a fraction to lose
            col = pc.cast(col, pa.timestamp("s", t.tz), safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    return pc.replace_substring(pc.cast(col, pa.string()), " ", "T", max_replacements=1)


def _floats(col: pa.Array) -> pa.Array:
    """Shortest round-trip text, spelt as Python's repr: 15025.0, 1e-07, 1e+16."""
    if pa.types.is_float16(col.type):
        col = pc.cast(col, pa.float32())
    text = pc.cast(col, pa.string())
    # Arrow and Python agree on the digits; they differ on a trailing ".0" and on when
    # to use an exponent. Values whose notation may differ are rare: redo those.
    values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)  # NULL: NaN
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        integral = finite & (values == np.floor(values))
        redo = np.zeros(len(values), dtype=bool)
        if pa.types.is_float64(col.type):
            magnitude = np.abs(values)
            redo = finite & ((magnitude >= 1e16) | ((magnitude < 1e-4) & (values != 0)))
            if _has_any(text, (b"e",)):
                exponent = pc.fill_null(pc.match_substring(text, "e"), False)
                redo |= np.asarray(exponent.to_numpy(zero_copy_only=False), dtype=bool)
            integral &= ~redo
    count = int(integral.sum())
    if count and count > len(values) // 8:
        text = pc.binary_join_element_wise(text, _suffixes(integral, b".0"), _lit(""))
    elif count:  # a few whole numbers: Python spells them, with the rest to redo
        redo |= integral
    if redo.any():
        fixed = [repr(v) for v in values[redo].tolist()]
        text = pc.replace_with_mask(text, pa.array(redo), pa.array(fixed, pa.string()))
    return text


def _suffixes(where: np.ndarray, suffix: bytes) -> pa.Array:
    """`suffix` where `where` is true, else "": to append in one join, not a join of
    every value and a choice between it and the value (`if_else`) after."""
    offsets = np.zeros(len(where) + 1, dtype=np.int32)
    np.cumsum(where, out=offsets[1:])
    offsets *= len(suffix)
    data = suffix * int(offsets[-1] // len(suffix))
    return pa.Array.from_buffers(
        pa.string(), len(where), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _characters(text: pa.Array) -> bytes:
    """The character data of `text`'s own values: a slice's, not its whole buffer's."""
    if len(text) == 0 or text.buffers()[2] is None:
        return b""
    return bytes(_span(text))


def _has_any(text: pa.Array, needles: Iterable[bytes]) -> bool:
    """Whether the character data of `text` may hold one of `needles`. A copy searched
    with `in` per needle: a regex character class scans ~100x slower, holding the GIL
    that the other part's encoder (`_in_parts`) then waits for."""
    data = _characters(text)
    return any(needle in data for needle in needles)


def _quote_where_needed(text: pa.Array, delimiter: str) -> tuple[pa.Array, bool]:
    """Quote (RFC 4180) values holding the delimiter, a quote or a line break, and '';
    and whether any was."""
    needs = pc.equal(pc.binary_length(text), pa.scalar(0, pa.int32()))
    specials = {delimiter, '"', "\n", "\r"}
    if _has_any(text, [special.encode() for special in specials]):
        for special in specials:
            needs = pc.or_(needs, pc.match_substring(text, special))
    needs = pc.fill_null(needs, False)
    if not pc.any(needs).as_py():
        return text, False
    chosen = pc.filter(text, needs)
    escaped = pc.replace_substring(chosen, '"', '""')
    quoted = pc.binary_join_element_wise(_lit('"'), escaped, _lit('"'), _lit(""))
    return pc.replace_with_mask(text, needs, quoted), True


def _json_strings(text: pa.Array) -> pa.Array:
    quoted = pc.binary_join_element_wise(_lit('"'), text, _lit('"'), _lit(""))
    if not _JSON_SPECIAL.search(_characters(text)):
        return quoted
    special = pc.fill_null(pc.match_substring_regex(text, r'[\x00-\x1f"\\]'), False)
    escaped = [orjson.dumps(v).decode() for v in pc.filter(text, special).to_pylist()]
    return pc.replace_with_mask(quoted, special, pa.array(escaped, pa.string()))


def _csv_text(value: object) -> str:
    return value if isinstance(value, str) else _json_text(value)


def _json_text(value: object) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _each(col: pa.Array, fmt: Callable[[object], str]) -> pa.Array:
    """Format values one by one: only for types with no vectorised form."""
    values = col.to_pylist()
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        values = [None if v is None else v.decode("utf-8", "backslashreplace") for v in values]
    return pa.array([None if v is None else fmt(v) for v in values], pa.string())
