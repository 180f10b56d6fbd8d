"""DuckDB's bind errors read, put in our words, and placed in the user's SQL.

`read_problem` tells what a bind error is about (a column, a type, a function, the
types of an argument) and the name at fault; `UserSql` finds where that name is in the
SELECT the user wrote, so a message points at it with the user's own names.
`explain_binder_error` says an error in our words when all there is is the error and
the input's columns.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import TokenType

from velostream.errors import QueryExecutionError
from velostream.sql.plan import AggregateCall
from velostream.sql.plan_aggregate import extract_window_clause
from velostream.sql.plan_sql import blank, standard_functions, to_sql, unqualify

__all__ = [
    "MAX_LISTED",
    "Problem",
    "UserSql",
    "explain_binder_error",
    "query_error",
    "read_problem",
    "suggest",
    "type_names",
    "types_message",
    "without_internal_names",
]

MAX_LISTED = 20
_QUOTED = r'"((?:[^"]|"")+)"'
_PROBLEMS = (
    ("ambiguous", re.compile(rf"Ambiguous reference to column name {_QUOTED}")),
    (
        "member",
        re.compile(rf"(?:Table|Values list) {_QUOTED} does not have a column named {_QUOTED}"),
    ),
    ("column", re.compile(rf"Referenced column {_QUOTED} not found")),
    ("column", re.compile(rf"Column {_QUOTED} referenced that exists in the SELECT clause")),
    ("qualifier", re.compile(rf"Referenced table {_QUOTED} not found")),
    ("type", re.compile(r"Type with name (\S+) does not exist")),
    ("function", re.compile(r"Function with name (\S+) does not exist")),
    ("types", re.compile(r"No function matches the given name and argument types '(.+)'")),
    ("types", re.compile(r"(Cannot compare values of type \S+ and type \S+)")),
    ("types", re.compile(r"(Cannot mix values of type .+? in .+?) - ")),
)
_ERROR_PREFIX = re.compile(r"^[A-Z][A-Za-z ]* Error: ")
_ROWS_BUFFER = re.compile(r"\bROWS\s+WINDOW\s+BUFFER\s+(\d+)\s+ROWS\b", re.IGNORECASE)
_WINDOW = re.compile(r"\bWINDOW\s+(TUMBLING|SLIDING|SESSION)\s*\(", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Problem:
    """A DuckDB bind error, read: what is wrong (`what`), the name or signature at fault."""

    what: str
    name: str
    detail: str


def read_problem(error: BaseException) -> Problem:
    """What DuckDB's bind `error` is about, from its first line (its prefix dropped)."""
    first = _ERROR_PREFIX.sub("", str(error).split("\n", 1)[0]).strip()
    for what, pattern in _PROBLEMS:
        match = pattern.search(first)
        if match is not None:
            name = match.group(match.lastindex or 1).replace('""', '"')
            return Problem(what, name, first)
    return Problem("other", "", first.rstrip("!"))


def _human(signature: str) -> str:
    """`*(VARCHAR, INTEGER_LITERAL)` as the types a user wrote: `*(VARCHAR, INTEGER)`."""
    return re.sub(r"\b(\w+)_LITERAL\b", r"\1", signature).replace("STRING", "VARCHAR")


def types_message(detail: str, name: str) -> str:
    """A problem of argument types in our words: `no operator * takes (VARCHAR, INTEGER)`."""
    match = re.fullmatch(r"(.+?)\((.*)\)", _human(name))
    if name and match is not None:
        function, args = match.group(1).strip('"'), match.group(2)
        operator = "operator" if not function[:1].isalpha() else "function"
        return f"no {operator} {function} takes ({args})"
    said = _human(name or detail)
    return f"{said[:1].lower()}{said[1:]}: CAST them to one type"


@functools.cache
def type_names() -> tuple[str, ...]:
    """The type names DuckDB knows that a job may write, for suggestions."""
    with duckdb.connect() as con:
        rows = con.execute("SELECT DISTINCT type_name FROM duckdb_types()").fetchall()
    names = {str(name).upper() for (name,) in rows}
    return tuple(sorted(n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_ ]*", n)))


def suggest(name: str, names: Iterable[str], cutoff: float = 0.6) -> str:
    """` (did you mean a or b?)` with the `names` closest to `name`, or nothing."""
    by_lower = {n.lower(): n for n in names}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=cutoff)
    return f" (did you mean {' or '.join(by_lower[f] for f in found)}?)" if found else ""


def explain_binder_error(error: BaseException, columns: Sequence[str]) -> str | None:
    """A DuckDB bind error about a job's query in our words, or None if it is not one.

    `columns` are the job's input columns; names of the engine's own (`__...`) are
    never shown.
    """
    module = type(error).__module__ or ""
    if not module.startswith(("duckdb", "_duckdb")) or type(error).__name__ not in (
        "BinderException",
        "CatalogException",
    ):
        return None
    problem = read_problem(error)
    visible = [c for c in columns if not c.startswith("__")]
    if problem.what in ("column", "qualifier", "member", "ambiguous"):
        listed = ", ".join(visible[:MAX_LISTED]) + (", ..." if len(visible) > MAX_LISTED else "")
        hint = suggest(problem.name, visible)
        return f"unknown column {problem.name}{hint}: the input has {listed}"
    if problem.what == "type":
        return f"unknown type {problem.name}{suggest(problem.name, type_names())}"
    if problem.what == "function":
        return f"unknown function {problem.name}()"
    if problem.what == "types":
        return types_message(problem.detail, problem.name)
    return without_internal_names(problem.detail)


def without_internal_names(text: str) -> str:
    """`text` with the engine's own names (`__rn`, `__k0`, ...) left out."""
    return re.sub(r'"?\b__\w+"?', "(internal)", text)


class UserSql:
    """The user's SELECT as sqlglot reads it, to find where a name is in it."""

    def __init__(self, select_sql: str, source: str, *, qualified: bool = False) -> None:
        """`qualified`: the planner kept the source's qualifiers (a join, a subquery)."""
        self.text = select_sql
        sql, _, self.window_args = extract_window_clause(select_sql)
        sql = _ROWS_BUFFER.sub(lambda m: blank(m.group()), sql)
        try:
            tree = sqlglot.parse_one(sql, read="duckdb")
        except (ParseError, TokenError):
            tree = None
        self.tree = tree if isinstance(tree, exp.Select) else None
        if self.tree is not None:  # as the planner sees it: same SQL text for each node
            if not qualified:
                unqualify(self.tree, source)
            standard_functions(self.tree)
        window = _WINDOW.search(select_sql)
        self.window_at = window.start() if window is not None else None

    @staticmethod
    def offset(node: exp.Expr | None) -> int | None:
        if node is None:
            return None
        starts = [n.meta["start"] for n in node.walk() if "start" in n.meta]
        return min(starts) if starts else None

    def _in_order(self, nodes: Iterable[exp.Expr]) -> exp.Expr | None:
        placed = [(at, i, n) for i, n in enumerate(nodes) if (at := self.offset(n)) is not None]
        return min(placed, key=lambda p: (p[0], p[1]))[2] if placed else None

    def node_of(self, sql: str | None) -> exp.Expr | None:
        """The first node of the user's SELECT that reads as `sql`."""
        if self.tree is None or sql is None:
            return None
        return self._in_order(n for n in self.tree.walk() if to_sql(n) == sql)

    def select(self, index: int) -> exp.Expr | None:
        if self.tree is None or index >= len(self.tree.selects):
            return None
        return self.tree.selects[index]

    def clause(self, key: str) -> exp.Expr | None:
        return None if self.tree is None else self.tree.args.get(key)

    def windows(self) -> list[exp.Window]:
        return [] if self.tree is None else list(self.tree.find_all(exp.Window))

    def aggregate(self, call: AggregateCall) -> exp.Expr | None:
        """The user's call of aggregate `call` (outside any OVER)."""
        if self.tree is None:
            return None
        for node in self.tree.find_all(exp.AggFunc):
            arg = node.this
            if isinstance(arg, exp.Distinct) and arg.expressions:
                arg = arg.expressions[0]
            star = arg is None or isinstance(arg, exp.Star)
            if not isinstance(node.parent, exp.Window) and (
                (call.arg is None and star) or (arg is not None and to_sql(arg) == call.arg)
            ):
                return node
        return self.node_of(call.arg)

    def aliases(self) -> set[str]:
        if self.tree is None:
            return set()
        return {s.alias.lower() for s in self.tree.selects if isinstance(s, exp.Alias)}

    def column_at(self, name: str, within: exp.Expr | None) -> int | None:
        """Where column (or struct) `name` is used: within `within` if there, else anywhere."""
        for scope in (within, self.tree):
            if scope is None:
                continue
            found = self._in_order(
                c
                for c in scope.find_all(exp.Column)
                if name.lower() in (c.name.lower(), c.parts[0].name.lower())
            )
            if found is not None:
                return self.offset(found)
        return None

    def type_at(self, name: str) -> int | None:
        """Where type `name` is written (after AS or ::)."""
        try:
            tokens = sqlglot.tokenize(self.text, read="duckdb")
        except TokenError:
            return None
        for before, token in itertools.pairwise(tokens):
            if token.text.upper() == name.upper() and before.token_type in (
                TokenType.ALIAS,
                TokenType.DCOLON,
            ):
                return token.start
        return None

    def call_at(self, name: str) -> int | None:
        if self.tree is None:
            return None
        calls = (
            f
            for f in self.tree.find_all(exp.Func)
            if to_sql(f).lower().startswith(f"{name.lower()}(")
        )
        return self.offset(self._in_order(calls))

    def column_names(self) -> list[str]:
        """Every name the SELECT reads a column (or a struct) by."""
        if self.tree is None:
            return []
        names = {c.parts[0].name.lower(): c.parts[0].name for c in self.tree.find_all(exp.Column)}
        return list(names.values())


def query_error(exc: BaseException, columns: Sequence[str]) -> QueryExecutionError | None:
    """A DuckDB bind error at run time (a source whose columns validation could not
    sample) as a QueryExecutionError in the user's names, or None if it is not one."""
    cause: BaseException | None = exc
    while cause is not None:
        said = explain_binder_error(cause, columns)
        if said is not None:
            return QueryExecutionError(said)
        cause = cause.__cause__
    return None
