"""Small sqlglot helpers the planners share: SQL text, quoting, names, unqualifying."""

from __future__ import annotations

import re

from sqlglot import exp

__all__ = [
    "blank",
    "output_name",
    "quote",
    "standard_functions",
    "to_sql",
    "unalias",
    "unqualify",
]


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


def standard_functions(tree: exp.Expr) -> None:
    """Give SQL/JSON functions their standard meaning, in place.

    `JSON_VALUE(doc, path)` is the scalar at `path` as text (`buy`, not DuckDB's JSON
    text `"buy"`), NULL for an object, an array or no value; `JSON_QUERY(doc, path)` is
    the JSON fragment at `path` (DuckDB's `json_extract`).
    """
    for call in list(tree.find_all(exp.Anonymous)):
        name = str(call.name).lower()
        if name == "json_value" and len(call.expressions) == 2:
            scalar = exp.Anonymous(
                this="json_value", expressions=[e.copy() for e in call.expressions]
            )
            call.replace(
                exp.Anonymous(
                    this="json_extract_string", expressions=[scalar, exp.Literal.string("$")]
                )
            )
        elif name == "json_query" and len(call.expressions) == 2:
            call.replace(
                exp.Anonymous(this="json_extract", expressions=[e.copy() for e in call.expressions])
            )
