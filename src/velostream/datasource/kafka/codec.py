"""Message values to Arrow and back, a batch at a time.

Decoding JSON: the batch's values are joined with newlines and parsed once by Arrow's
JSON reader with the stream's schema (inferred from the first batch holding a JSON
object, then fixed). Only a batch that fails is taken apart (see
`velostream.datasource.file.jsonl`), so every bad message becomes a `BadValue` and
the good ones go on. A message with a raw line break in it (pretty-printed JSON) is
compacted first, one by one; a null value (a tombstone) is a row of nulls. `string`
values are checked for UTF-8 in one cast; `bytes` values are taken as they are.

Encoding: JSON values come from the file sink's vectorised JSON-lines encoder, split
at the line ends; keys are the key columns cast to text and joined with `|`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.file.encode import encode_jsonl
from velostream.datasource.file.jsonl import JsonDecoder
from velostream.datasource.kafka.options import VALUE_FORMATS
from velostream.errors import ConfigurationError, ErrorKind, SchemaError

__all__ = [
    "HEADERS_TYPE",
    "KEY_SEPARATOR",
    "SYSTEM_COLUMNS",
    "VALUE_COLUMN",
    "VALUE_FORMATS",
    "BadValue",
    "Decoded",
    "Encoded",
    "ValueDecoder",
    "encode",
    "headers_array",
    "keys_array",
    "value_decoder",
]

VALUE_COLUMN = "value"  # the one column of `string` and `bytes` values
KEY_SEPARATOR = "|"
SYSTEM_COLUMNS = ("_key", "_partition", "_offset", "_timestamp", "_headers")
HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
INFER_BYTES = 1 << 18  # the schema is inferred from at most this much of a batch

Values = Sequence[bytes | None]


@dataclass(frozen=True, slots=True, order=True)
class BadValue:
    """Message `index` (in its batch) could not be decoded: `kind` and `message`."""

    index: int
    kind: ErrorKind
    message: str


@dataclass(slots=True)
class Decoded:
    """Good rows, the message index of each row (None: row i is message i), bad ones."""

    table: pa.Table
    rows: pa.Array | None
    bad: list[BadValue]


class ValueDecoder(ABC):
    """Decodes a batch of message values with a schema fixed once known."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema | None:
        """The value columns' schema, once known."""

    @abstractmethod
    def decode(self, values: Values) -> Decoded:
        """Decode `values` (None is a tombstone); each message is a row or a BadValue."""


def value_decoder(value_format: str) -> ValueDecoder:
    if value_format == "json":
        return JsonValues()
    if value_format == "string":
        return StringValues()
    if value_format == "bytes":
        return BytesValues()
    raise ConfigurationError(
        f"unknown value.format '{value_format}'; valid values: {', '.join(VALUE_FORMATS)}"
    )


class BytesValues(ValueDecoder):
    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(VALUE_COLUMN, pa.binary())])

    def decode(self, values: Values) -> Decoded:
        return Decoded(pa.table({VALUE_COLUMN: pa.array(values, pa.binary())}), None, [])


class StringValues(ValueDecoder):
    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(VALUE_COLUMN, pa.string())])

    def decode(self, values: Values) -> Decoded:
        raw = pa.array(values, pa.binary())
        try:
            return Decoded(pa.table({VALUE_COLUMN: raw.cast(pa.string())}), None, [])
        except pa.ArrowInvalid:
            pass
        bad = [
            BadValue(i, ErrorKind.PARSE, f"invalid UTF-8 at byte {_utf8_error(v)}")
            for i, v in enumerate(values)
            if v is not None and _utf8_error(v) is not None
        ]
        keep = _without(len(values), [b.index for b in bad])
        table = pa.table({VALUE_COLUMN: pc.take(raw, keep).cast(pa.string())})
        return Decoded(table, keep, bad)


class JsonValues(ValueDecoder):
    """JSON objects; fields outside the schema are ignored, missing ones are null."""

    def __init__(self, schema: pa.Schema | None = None) -> None:
        self._decoder = JsonDecoder(schema) if schema is not None else None

    @property
    def schema(self) -> pa.Schema | None:
        return None if self._decoder is None else self._decoder.schema

    def decode(self, values: Values) -> Decoded:
        if not values:
            schema = self.schema
            return Decoded(pa.table({}) if schema is None else schema.empty_table(), None, [])
        block, lines, line_msg, bad = _one_line_each(values)
        if self._decoder is None:
            self._decoder = _infer(lines)
            if self._decoder is None:
                # No JSON object yet to learn the columns from: every message is bad.
                msg_of = range(len(lines)) if line_msg is None else line_msg
                bad += [_not_an_object(i, v) for i, v in zip(msg_of, lines, strict=True)]
                bad.sort()
                return Decoded(pa.table({}), pa.array([], pa.int64()), bad)
        decoded = self._decoder.decode(block, len(lines))
        if decoded.rows is None and not decoded.errors and line_msg is None:
            return Decoded(decoded.table, None, bad)
        rows = decoded.rows
        if rows is None:
            rows = pa.array(np.arange(decoded.table.num_rows, dtype=np.int64))
        msg = (lambda line: line) if line_msg is None else line_msg.__getitem__
        failed = {e.line for e in decoded.errors}
        bad += [
            BadValue(msg(e.line), e.kind, _about_message(e.message, lines[e.line]))
            for e in decoded.errors
        ]
        if len(rows) + len(failed) < len(lines):
            # Arrow skips whitespace-only lines: a message that is only blanks.
            used = failed | set(pc.cast(rows, pa.int64()).to_pylist())
            bad += [
                BadValue(msg(i), ErrorKind.PARSE, "empty message (no JSON value)")
                for i in range(len(lines))
                if i not in used
            ]
        if line_msg is not None:
            rows = pc.take(pa.array(line_msg, pa.int64()), rows)
        bad.sort()
        return Decoded(decoded.table, pc.cast(rows, pa.int64()), bad)


def _one_line_each(
    values: Values,
) -> tuple[bytes, list[bytes], list[int] | None, list[BadValue]]:
    """The values joined one per line: tombstones as `{}`, line breaks compacted.

    Returns the block, its lines, the message index of each line (None: line i is
    message i) and the messages set aside as bad.
    """
    lines: list[bytes] = list(values)  # type: ignore[arg-type]
    if None in lines:
        lines = [b"{}" if v is None else v for v in lines]
    # The closing newline joined in, not appended: `+` would copy the whole block again.
    block = b"\n".join([*lines, b""])
    # One scan in C: a line break inside a value makes more lines than values.
    if block.count(b"\n") == len(lines) and b"\r" not in block:
        return block, lines, None, []
    kept: list[bytes] = []
    line_msg: list[int] = []
    bad: list[BadValue] = []
    for i, v in enumerate(lines):
        if b"\n" in v or b"\r" in v:
            try:
                v = orjson.dumps(orjson.loads(v))
            except orjson.JSONDecodeError as exc:
                bad.append(BadValue(i, ErrorKind.PARSE, f"invalid JSON: {exc}"))
                continue
        kept.append(v)
        line_msg.append(i)
    return b"\n".join(kept) + b"\n", kept, line_msg, bad


def _infer(lines: list[bytes]) -> JsonDecoder | None:
    """A decoder for the columns of the JSON objects at the start of `lines`."""
    size, end = 0, 0
    while end < len(lines) and size < INFER_BYTES:
        size += len(lines[end]) + 1
        end += 1
    sample = [line for line in lines[:end] if line != b"{}"]
    if not sample:
        return None
    return JsonDecoder.infer(b"\n".join(sample) + b"\n")


def _not_an_object(index: int, raw: bytes) -> BadValue:
    if raw.strip() == b"":
        return BadValue(index, ErrorKind.PARSE, "empty message (no JSON value)")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return BadValue(index, ErrorKind.PARSE, f"invalid JSON: {exc}")
    if isinstance(value, dict):  # several objects, or one Arrow would not take as one
        return BadValue(index, ErrorKind.PARSE, "not exactly one JSON object")
    return BadValue(index, ErrorKind.PARSE, f"expected a JSON object, got {type(value).__name__}")


def _about_message(message: str, raw: bytes) -> str:
    """The line decoder's wording, said of a message: what exactly is wrong with it."""
    if message.startswith("not a JSON object"):
        return _not_an_object(0, raw).message
    return message.replace(" of the line", "")


def _utf8_error(value: bytes) -> int | None:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def _without(n: int, drop: list[int]) -> pa.Array:
    keep = np.ones(n, dtype=bool)
    keep[drop] = False
    return pa.array(np.flatnonzero(keep).astype(np.int64))


# -- system columns -----------------------------------------------------------------


def keys_array(keys: Sequence[bytes | None], key_format: str) -> pa.Array:
    """Message keys as `string` (invalid UTF-8 escaped with backslashes) or `binary`."""
    raw = pa.array(keys, pa.binary())
    if key_format == "bytes":
        return raw
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        text = [None if k is None else k.decode("utf-8", "backslashreplace") for k in keys]
        return pa.array(text, pa.string())


def headers_array(headers: Sequence[list[tuple[str, bytes | None]] | None]) -> pa.Array:
    """Headers as a list of (key, value) structs per message, in their order."""
    return pa.array(headers, HEADERS_TYPE)


# -- encoding -----------------------------------------------------------------------


@dataclass(slots=True)
class Encoded:
    """What to produce for each row: values, and keys/headers/timestamps when given."""

    values: list[bytes | None]
    keys: list[str | bytes | None] | None = None
    headers: list[Any] | None = None  # per message: [(key, value), ...] or None
    timestamps: list[int | None] | None = None

    def __len__(self) -> int:
        return len(self.values)


def encode(table: pa.Table, value_format: str, key_columns: Sequence[str] = ()) -> Encoded:
    """The rows of `table` as messages.

    The value holds every column but the system columns (`_key`, `_partition`,
    `_offset`, `_timestamp`, `_headers`); the key is the key columns joined with
    `|`, else the `_key` column; `_headers` become headers and `_timestamp` the
    message timestamp.
    """
    names = table.column_names
    value_table = table.drop_columns([c for c in SYSTEM_COLUMNS if c in names])
    if value_format == "json":
        values = _json_values(value_table)
    else:
        values = _single_values(value_table, value_format)
    out = Encoded(values)
    if key_columns:
        missing = [c for c in key_columns if c not in names]
        if missing:
            raise SchemaError(
                f"key column(s) {', '.join(missing)} not in the output ({', '.join(names)})"
            )
        out.keys = _key_strings(table, key_columns)
    elif "_key" in names:
        out.keys = table.column("_key").to_pylist()
    if "_headers" in names and pa.types.is_list(table.schema.field("_headers").type):
        column = table.column("_headers")
        if column.null_count < len(column):
            out.headers = [
                None if h is None else [(p["key"], p["value"]) for p in h]
                for h in column.to_pylist()
            ]
    if "_timestamp" in names:
        column = table.column("_timestamp")
        if pa.types.is_timestamp(column.type):
            column = pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64())
        if pa.types.is_integer(column.type):
            out.timestamps = column.to_pylist()
    return out


def _json_values(table: pa.Table) -> list[bytes | None]:
    if table.num_rows == 0:
        return []
    if table.num_columns == 0:
        return [b"{}"] * table.num_rows
    values: list[bytes | None] = []
    for buffer in encode_jsonl(table):
        # Every line ends in "\n" and JSON escapes every other line break, so the
        # newlines are the row boundaries: value i is line i without its newline.
        ends = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == 10)
        offsets = np.concatenate(([0], ends + 1)).astype(np.int32)
        lines = pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), buffer])
        values.extend(pc.binary_slice(lines, 0, -1).to_pylist())
    return values


def _single_values(table: pa.Table, value_format: str) -> list[bytes | None]:
    if table.num_columns != 1:
        raise SchemaError(
            f"value.format '{value_format}' writes one column, but the output has "
            f"{table.num_columns}: {', '.join(table.column_names)}"
        )
    column = table.column(0)
    if value_format == "string" and not (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        column = pc.cast(column, pa.string())
    elif value_format == "bytes" and not pa.types.is_binary(column.type):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.cast(pa.binary())
        else:
            raise SchemaError(
                f"value.format 'bytes' needs a binary or text column, "
                f"not {column.type} ('{table.column_names[0]}')"
            )
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.binary())
    values: list[bytes | None] = column.to_pylist()
    return values


def _key_strings(table: pa.Table, key_columns: Sequence[str]) -> list[str | bytes | None]:
    parts = []
    for name in key_columns:
        column = table.column(name)
        if _is_text_or_binary(column.type):
            parts.append(column)
        else:
            parts.append(pc.cast(column, pa.string()))
    if len(parts) == 1:
        single: list[str | bytes | None] = parts[0].to_pylist()  # a null key stays null
        return single
    joined = pc.binary_join_element_wise(
        *parts, KEY_SEPARATOR, null_handling="replace", null_replacement=""
    )
    keys: list[str | bytes | None] = joined.to_pylist()
    return keys


def _is_text_or_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )
