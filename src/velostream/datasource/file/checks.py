"""Vectorised checks of text values against a column type, as Arrow's CSV reader converts.

Arrow's CSV conversion stops at the first bad value; to find every bad value of a
column at once we cast the whole column and, only when that fails, mark values with a
pattern that every valid value matches (a superset check, kernels only), then confirm
the remaining values by casting, bisecting only if a value slipped past the pattern.

Also here: the type most values of an inferred text column have (`majority_type`) and
the messages for values that fail their type (`type_messages`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "FALSE_VALUES",
    "TRUE_VALUES",
    "check_column",
    "check_known",
    "inferred_type",
    "majority_type",
    "mask_at",
    "type_messages",
]

TRUE_VALUES = ["1", "True", "TRUE", "true"]
FALSE_VALUES = ["0", "False", "FALSE", "false"]
_BOOL_VALUES = pa.array(TRUE_VALUES + FALSE_VALUES)
_TRUE = pa.array(TRUE_VALUES)
# typed: an untyped Python scalar makes pyarrow try optional imports on every call
_ZERO = pa.scalar(0, pa.int64())
_ZERO_U8 = pa.scalar(0, pa.uint8())

# Every value Arrow accepts matches these (after trimming spaces and tabs for numbers
# and dates, as Arrow does); a few they match are still rejected by the cast.
_INTEGER = r"^-?(?:[0-9]+|0[xX][0-9a-fA-F]+)$"
_FLOAT = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIMESTAMP = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:\.[0-9]{1,9})?)?)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)

Column: TypeAlias = pa.Array | pa.ChunkedArray


def inferred_type(t: pa.DataType, *, nested: bool = False) -> pa.DataType:
    """Narrow an Arrow-inferred type to the stream's types; unknown and null become text."""
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_boolean(t) or pa.types.is_timestamp(t) or pa.types.is_date32(t):
        return t
    if nested and (pa.types.is_struct(t) or pa.types.is_list(t)):
        return t
    return pa.string()


def mask_at(n: int, positions: Iterable[int]) -> pa.Array:
    """A boolean array of length `n`, true at `positions` (no Python per row)."""
    flags = bytearray(n)
    for i in positions:
        flags[i] = 1
    flagged = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(flags)])
    return pc.not_equal(flagged, _ZERO_U8)


def check_known(
    column: Column, t: pa.DataType, known_bad: pa.Array
) -> tuple[Column, Column] | None:
    """`check_column`'s answer when the values of `column` that fail `t` are all in
    `known_bad`, values that failed `t` before (a placeholder such as `n/a`): one lookup
    finds them, with no pattern run over the column. None when another value fails, or
    for text and boolean columns, which `check_column` does at once.
    """
    if pa.types.is_string(t) or pa.types.is_boolean(t) or not len(known_bad):
        return None
    # A value that failed `t` fails it again: if the rest converts, that is all.
    failed = pc.is_in(column, value_set=known_bad)
    try:
        return pc.cast(_null_where(column, failed), t), failed
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def check_column(
    column: Column, t: pa.DataType, *, expect_failures: bool = False
) -> tuple[Column, Column | None]:
    """The column converted to `t` (null where a value fails) and the failure mask.

    The mask is None when every value converts. `expect_failures` skips the first,
    optimistic cast of the whole column.
    """
    if pa.types.is_string(t):
        return column, None
    if pa.types.is_boolean(t):
        known = pc.is_in(column, value_set=_BOOL_VALUES)
        failed = pc.and_(pc.is_valid(column), pc.invert(known))
        values = pc.if_else(known, pc.is_in(column, value_set=_TRUE), pa.scalar(None, t))
        return values, failed if pc.any(failed).as_py() else None
    if not expect_failures:
        try:
            return pc.cast(column, t), None  # a value that parses untrimmed parses the same
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    prepared = _prepare(column, t)
    failed = _pattern_failures(prepared, t)
    for exact in (True, False):
        try:
            return pc.cast(_null_where(prepared, failed), t), failed
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if exact:  # the first pass let an odd value through ("--5"): full pattern
                failed = pc.or_(failed, _pattern_failures(prepared, t, exact=True))
    # A value matched the pattern but still does not convert (overflow, 30 February).
    masked = _null_where(prepared, failed)
    failed = pc.or_(failed, mask_at(len(masked), _failing(masked, t, 0)))
    return pc.cast(_null_where(prepared, failed), t), failed


def _null_where(column: Column, mask: Column) -> Column:
    return pc.if_else(mask, pa.scalar(None, column.type), column)


def _prepare(column: Column, t: pa.DataType) -> Column:
    """Trim spaces and tabs where Arrow does (numbers, dates), if there are any."""
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_date(t)):
        return column
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        data = chunk.buffers()[2]
        raw = b"" if data is None else data.to_pybytes()
        if b" " in raw or b"\t" in raw:
            return pc.ascii_trim(column, " \t")
    return column


def _pattern_failures(prepared: Column, t: pa.DataType, *, exact: bool = False) -> Column:
    """True where a value cannot be valid for `t`; false for null.

    Numbers get a cheap first pass and the pattern only on the values it flags; with
    `exact`, the pattern runs on every value.
    """
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        pattern = _INTEGER if pa.types.is_integer(t) else _FLOAT
        if exact:
            return pc.fill_null(pc.invert(pc.match_substring_regex(prepared, pattern)), False)
        if pa.types.is_integer(t):
            suspect = pc.invert(pc.ascii_is_decimal(pc.ascii_ltrim(prepared, "-")))
        else:
            # Something after the sign, then only digits and points.
            head = pc.ascii_ltrim(prepared, "+-.")
            rest = pc.ascii_ltrim(head, "0123456789.")
            simple = pc.and_(
                pc.greater(pc.binary_length(head), _ZERO), pc.equal(pc.binary_length(rest), _ZERO)
            )
            suspect = pc.invert(simple)
        suspect = pc.fill_null(suspect, False)
        suspects = pc.take(prepared, pc.indices_nonzero(suspect))
        invalid = pc.invert(pc.match_substring_regex(suspects, pattern))
        return pc.replace_with_mask(_flat(suspect), _flat(suspect), _flat(invalid))
    shape = _DATE if pa.types.is_date(t) else _TIMESTAMP if pa.types.is_timestamp(t) else None
    if shape is None:
        return pc.is_null(prepared)  # everything else is confirmed by casting
    return pc.fill_null(pc.invert(pc.match_substring_regex(prepared, shape)), False)


def _failing(values: Column, t: pa.DataType, offset: int) -> list[int]:
    """Positions of the values that do not cast, by bisection (they are expected rare)."""
    if len(values) == 0:
        return []
    try:
        pc.cast(values, t)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(values) == 1:
            return [offset]
    mid = len(values) // 2
    left = _failing(values.slice(0, mid), t, offset)
    return left + _failing(values.slice(mid), t, offset + mid)


def _flat(column: Column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


# A text column whose values are almost all of one type gets that type: the few that
# are not become record errors, instead of one bad value turning a column into text.
MAJORITY = 0.8
_TYPE_PATTERNS: tuple[tuple[str, pa.DataType], ...] = (
    (r"^\s*[-+]?\d{1,18}\s*$", pa.int64()),
    (r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$", pa.float64()),
    (r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$", pa.timestamp("us")),
)


def majority_type(column: pa.ChunkedArray) -> pa.DataType | None:
    """The type at least MAJORITY of a text column's non-empty values have, if any."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return None
    values = pc.drop_null(column)
    values = values.filter(pc.not_equal(values, pa.scalar("", values.type)))
    total = len(values)
    if total < 2:
        return None
    # Each distinct value is matched once, weighed by how often it comes: a column of
    # names repeats a few hundred of them (the patterns took 11 ms of a 1BRC start-up).
    counts = pc.value_counts(values)
    distinct, weights = counts.field("values"), counts.field("counts")
    for pattern, data_type in _TYPE_PATTERNS:
        hits = pc.match_substring_regex(distinct, pattern)
        matched = pc.sum(pc.filter(weights, hits)).as_py() or 0
        if matched < total and matched >= MAJORITY * total:
            return data_type
    return None


def _label(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return f"integer ({t})"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t):
        return f"timestamp ({t})"
    if pa.types.is_date(t):
        return "date"
    return str(t)


def type_messages(field: pa.Field, values: Column) -> tuple[np.ndarray, list[str]]:
    """`column 'x': 'value' is not a valid <type>` for each distinct value (cut past 80
    characters), and each value's index among them.

    Bad values repeat (one placeholder in many rows): each distinct value's message is
    made once, found by two kernels, with no Python step per value.
    """
    flat = _flat(values)
    distinct = pc.unique(flat)
    where = pc.index_in(flat, value_set=distinct, skip_nulls=False).to_numpy(zero_copy_only=False)
    prefix = f"column '{field.name}': '"
    suffix = f"' is not a valid {_label(field.type)}"
    said = [f"{prefix}{_shown(str(v))}{suffix}" for v in distinct.to_pylist()]
    return where.astype(np.intp, copy=False), said


def _shown(value: str) -> str:
    return value if len(value) <= 80 else value[:77] + "..."
