"""Steps DuckDB would only copy: columns picked from a batch, SELECTs that only rename.

A pre-query with no WHERE whose items are all bare column names cannot fail on a row
and computes nothing; taking the batch's columns directly saves a DuckDB round trip
per batch. Names resolve as DuckDB resolves them (case-insensitively, quoted or not).
"""

from __future__ import annotations

import re

import pyarrow as pa

__all__ = ["column_of", "picked_columns", "renames"]

_IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|"((?:[^"]|"")+)"')
_RENAME = re.compile(r'(__k\d+|__agg\d+) AS "((?:[^"]|"")*)"')


def column_of(expr: str, names: list[str]) -> str | None:
    """The column a bare identifier `expr` names among `names`, if exactly one."""
    match = _IDENTIFIER.fullmatch(expr)
    if match is None:
        return None
    name = match.group(1).replace('""', '"') if match.group(1) else expr
    same = [n for n in names if n.lower() == name.lower()]
    return same[0] if len(same) == 1 else None


def picked_columns(table: pa.Table, items: list[tuple[str, str]]) -> pa.Table | None:
    """`SELECT expr AS alias, ... FROM table` when every expr is a bare column, else None."""
    names = table.column_names
    columns = []
    for expr, _ in items:
        name = column_of(expr, names)
        if name is None:
            return None
        columns.append(table.column(name))
    return pa.Table.from_arrays(columns, names=[alias for _, alias in items])


def renames(select_sql: list[str]) -> list[tuple[str, str]] | None:
    """(column, output name) when every SELECT item only renames a key or an aggregate."""
    pairs = []
    for item in select_sql:
        match = _RENAME.fullmatch(item)
        if match is None:
            return None
        pairs.append((match.group(1), match.group(2).replace('""', '"')))
    return pairs
