"""Small sqlglot helpers the planners share: SQL text, quoting, names, unqualifying, `*`."""

from __future__ import annotations

import re

from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.plan import SYSTEM_COLUMNS, Star
from velostream.sql.plan_headers import rewrite_header_reads

__all__ = [
    "blank",
    "check_engine_names",
    "check_stars",
    "output_name",
    "plan_star",
    "quote",
    "standard_functions",
    "start_of",
    "to_sql",
    "unalias",
    "unqualify",
]

_STAR_ITEMS = "list the columns, or use * [EXCLUDE (...)] [REPLACE (...)] [RENAME (...)]"


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


def start_of(node: exp.Expr) -> int | None:
    """Where `node` starts in the SQL text (its first token with a known place), if known."""
    starts = [n.meta["start"] for n in node.walk() if "start" in n.meta]
    return min(starts, default=None)


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
            column.replace(rest[-1])  # `src.* EXCLUDE (...)` keeps its EXCLUDE
            continue
        keys = ("this", "table", "db", "catalog")
        column.replace(exp.Column(**dict(zip(keys, reversed(rest), strict=False))))


def standard_functions(tree: exp.Expr) -> None:
    """Give SQL/JSON functions their standard meaning, in place.

    `JSON_VALUE(doc, path)` is the scalar at `path` as text (`buy`, not DuckDB's JSON
    text `"buy"`), NULL for an object, an array or no value; `JSON_QUERY(doc, path)` is
    the JSON fragment at `path` (DuckDB's `json_extract`). Kafka header reads become
    list functions over `_headers` (`plan_headers`).
    """
    rewrite_header_reads(tree)
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


def check_stars(tree: exp.Select) -> None:
    """PlanError unless every `*` is a SELECT item or COUNT's, and there is no COLUMNS(...).

    `*` stands for the source's own columns (never the system columns or the engine's
    helper columns); in any other place, and in COLUMNS(...), DuckDB would expand it
    over the engine's batch, helper columns included.
    """
    columns = tree.find(exp.Columns)
    if columns is not None:
        raise PlanError(
            f"{to_sql(columns)} is not supported in a job's SELECT: {_STAR_ITEMS}",
            columns.meta.get("start"),
        )
    for star in tree.find_all(exp.Star):
        parent = star.parent
        offset = star.meta.get("start")
        if star.args.get("ilike") is not None or isinstance(
            parent, exp.Like | exp.ILike | exp.SimilarTo | exp.Glob
        ):
            raise PlanError(
                f"* with a name pattern (LIKE, ILIKE, SIMILAR TO, GLOB) is not supported: "
                f"{_STAR_ITEMS}",
                offset,
            )
        if isinstance(parent, exp.Select) and star in tree.selects:
            continue
        if isinstance(parent, exp.AggFunc) and not any(star.args.values()):
            continue  # COUNT(*); the planners judge any other aggregate of *
        raise PlanError(
            "* is only allowed as an item of the SELECT list or in COUNT(*): "
            "name the columns it should stand for",
            offset,
        )


def check_engine_names(tree: exp.Select) -> None:
    """PlanError at a name that starts with `__`: the engine's own columns and its batch
    table are named so (`plan`), and a query never reads them."""
    for column in tree.find_all(exp.Column):
        for part in column.parts:
            if isinstance(part, exp.Identifier) and part.name.startswith("__"):
                raise PlanError(
                    f"{part.name}: names starting with __ are the engine's own "
                    "(rename the column in the source)",
                    start_of(column),
                )


def plan_star(star: exp.Star) -> Star:
    """The `Star` of a SELECT item `*`, with its EXCLUDE, REPLACE and RENAME."""
    replace = tuple((to_sql(unalias(a)), a.alias) for a in star.args.get("replace") or [])
    rename = tuple(
        (unalias(a).name if isinstance(unalias(a), exp.Column) else to_sql(unalias(a)), a.alias)
        for a in star.args.get("rename") or []
    )
    system = {name.lower() for name in SYSTEM_COLUMNS}
    for what, names in (("REPLACE", [n for _, n in replace]), ("RENAME", [n for n, _ in rename])):
        for name in names:
            if name.lower() in system or name.startswith("__"):
                raise PlanError(
                    f"* {what} ({name}): {name} is not one of the columns * stands for "
                    "(system columns are selected by name)"
                )
    exclude = tuple(
        c.name if isinstance(c, exp.Column) else to_sql(c) for c in star.args.get("except_") or []
    )
    return Star(exclude=exclude, replace=replace, rename=rename)
