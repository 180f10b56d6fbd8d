"""The Kafka headers of output rows, from the query's `SET_HEADER` items.

Each `SET_HEADER('k', value) AS col` left `value` in the output column `col`; here the
output gets a `_headers` column (the Kafka sink writes it as the message's headers):
the headers the query selected as `_headers`, if any, less those of the keys it sets,
then one header per SET_HEADER in SELECT order. A value becomes bytes by its type:
text as UTF-8, bytes (BLOB) as they are, NULL as a header without a value, anything
else as Arrow casts it to text (`42`, `2.5`, `true`, `2024-10-27 14:30:45.000000`;
CAST the value in SQL for another form).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["with_headers"]

_HEADERS = "_headers"
_VALUES = "__header_values"


def _text(column: pa.ChunkedArray, con: duckdb.DuckDBPyConnection) -> pa.ChunkedArray:
    """A column as text: Arrow's cast, or DuckDB's for what Arrow cannot (lists, structs)."""
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        con.register(_VALUES, pa.table({"v": column}))
        try:
            return (
                con.sql(f"SELECT CAST(v AS VARCHAR) AS v FROM {_VALUES}").to_arrow_table().column(0)
            )
        finally:
            con.unregister(_VALUES)


def _as_bytes(column: pa.ChunkedArray, con: duckdb.DuckDBPyConnection) -> list[bytes | None]:
    """A column's values as header bytes (see the module docstring)."""
    t = column.type
    if pa.types.is_null(t):
        return [None] * len(column)
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            column = _text(column, con)
        column = column.cast(pa.binary())  # UTF-8 bytes, no copy
    values: list[bytes | None] = column.to_pylist()
    return values


def with_headers(
    table: pa.Table, set_headers: Sequence[tuple[str, str]], con: duckdb.DuckDBPyConnection
) -> pa.Table:
    """`table` with its `_headers` column made from `set_headers` (key, column); `con`
    (the job's DuckDB) casts to text what Arrow cannot."""
    if not set_headers or table.num_rows == 0:  # (an EMIT FINAL batch has no columns)
        return table
    # Kafka's codec (and its JSON) only for a query that sets headers: a file job never does.
    from velostream.datasource.kafka.codec import HEADERS_TYPE

    n = table.num_rows
    names = table.column_names
    keys = [key for key, _ in set_headers]
    values = [_as_bytes(table.column(column), con) for _, column in set_headers]
    base: list[Any] = [None] * n
    if _HEADERS in names and pa.types.is_list(table.schema.field(_HEADERS).type):
        base = table.column(_HEADERS).to_pylist()
    replaced = set(keys)
    rows = []
    for i in range(n):
        row = [(h["key"], h["value"]) for h in base[i] or () if h["key"] not in replaced]
        row.extend(zip(keys, (v[i] for v in values), strict=True))
        rows.append(row)
    headers = pa.array(rows, HEADERS_TYPE)
    if _HEADERS in names:
        return table.set_column(names.index(_HEADERS), _HEADERS, headers)
    return table.append_column(_HEADERS, headers)
