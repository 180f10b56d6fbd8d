"""Small sqlglot helpers the planners share: SQL text, quoting, names, unqualifying."""

from __future__ import annotations

import re

from sqlglot import exp

__all__ = ["blank", "output_name", "quote", "to_sql", "unalias", "unqualify"]


def to_sql(node: exp.Expr) -> str:
    """`node` as DuckDB SQL text."""
    return node.sql(dialect="duckdb")


def quote(name: str) -> str:
    """`name` as a double-quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def unalias(node: exp.Expr) -> exp.Expr:
    """The expression under an `AS alias`, or `node` itself."""
    return node.this if isinstance(node, exp.Alias) else node


def output_name(node: exp.Expr, position: int) -> str:
    """The output column name of SELECT item number `position` (DuckDB's `colN` if unnamed)."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    return f"col{position}"


def blank(text: str) -> str:
    """`text` as spaces, line breaks kept: offsets after it still point into the SELECT."""
    return re.sub(r"[^\n]", " ", text)


def unqualify(tree: exp.Select, source: str) -> None:
    """Drop a leading `src.` / `alias.` from column references: the batch is the only table.

    Any other dotted name (`payload.price`) is left alone: DuckDB reads it as a struct
    field.
    """
    from_ = tree.args.get("from_")
    names = {source}
    if from_ is not None and isinstance(from_.this, exp.Table) and from_.this.alias:
        names.add(from_.this.alias)
    for column in list(tree.find_all(exp.Column)):
        parts = column.parts
        if len(parts) < 2 or parts[0].name not in names:
            continue
        rest = parts[1:]
        if isinstance(rest[-1], exp.Star):
            column.replace(exp.Star())
            continue
        keys = ("this", "table", "db", "catalog")
        column.replace(exp.Column(**dict(zip(keys, reversed(rest), strict=False))))
