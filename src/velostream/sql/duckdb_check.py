"""DuckDB as the authority on a SELECT's syntax and on the functions it may call.

One in-memory DuckDB per process, set up like the engine's, parses (syntax errors come
back with DuckDB's own position) and binds, and every function a job calls (as written,
and in the SQL the planner generates) must be one DuckDB has, else the error names it
and suggests close names.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenType

from velostream.errors import PlanError
from velostream.sql.plan_headers import HEADER_FUNCTIONS
from velostream.sql.sandbox import FORBIDDEN_FUNCTIONS

__all__ = [
    "binding_connection",
    "check_functions",
    "check_planned_sql",
    "check_syntax",
    "checking_connection",
    "open_early",
    "sqlglot_offset",
]


# Functions of the dialect that the planner rewrites; DuckDB never sees them.
_OWN_FUNCTIONS = frozenset({"tumble_start", "tumble_end"})
# Standard names the planner rewrites to DuckDB's (plan_sql.standard_functions).
_REWRITTEN_FUNCTIONS = frozenset({"json_query"}) | HEADER_FUNCTIONS
# A ',' directly before one of these leaves an empty item, which sqlglot (and DuckDB's
# friendly SQL) silently drop: `SELECT id, FROM src` has lost a column, or had one too many.
_AFTER_LAST_ITEM = {
    TokenType.FROM: "FROM",
    TokenType.WHERE: "WHERE",
    TokenType.GROUP_BY: "GROUP BY",
    TokenType.HAVING: "HAVING",
    TokenType.ORDER_BY: "ORDER BY",
    TokenType.LIMIT: "LIMIT",
    TokenType.QUALIFY: "QUALIFY",
    TokenType.WINDOW: "WINDOW",
    TokenType.R_PAREN: "')'",
    TokenType.R_BRACKET: "']'",
    TokenType.R_BRACE: "'}'",
}
# Guards the checking database's own connection: parsing and probing run on it, and
# each binding connection is a cursor made from it.
_LOCK = threading.Lock()


def checking_connection(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB set up like the engine's (no files, network or extensions),
    for checking SQL; `threads` None: DuckDB's default."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    }
    if threads is not None:
        config["threads"] = threads
    return duckdb.connect(config=config)


# The checking DuckDB being opened by `open_early`, until `_database` takes it.
_EARLY: list[Future[duckdb.DuckDBPyConnection]] = []


def open_early() -> None:
    """Start opening the checking DuckDB on another thread; its first use waits for it.

    Opening a DuckDB takes ~20 ms outside the GIL: `velo-sql run` and `validate` call
    this before importing the rest of what they need, which hides it. An error opening
    it is raised at its first use, as it would have been without this.
    """
    if _EARLY or _database.cache_info().currsize:
        return
    future: Future[duckdb.DuckDBPyConnection] = Future()

    def open_() -> None:
        try:
            future.set_result(checking_connection(threads=1))
        except Exception as exc:  # raised where it is used
            future.set_exception(exc)

    threading.Thread(target=open_, name="duckdb-check-open", daemon=True).start()
    _EARLY.append(future)


@functools.cache
def _database() -> duckdb.DuckDBPyConnection:
    """One checking DuckDB per process (single-threaded), for parsing, probing function
    names and binding: starting a database costs ~20 ms, a cursor to it next to nothing."""
    if _EARLY:
        return _EARLY.pop().result()
    return checking_connection(threads=1)


def binding_connection() -> duckdb.DuckDBPyConnection:
    """A connection of its own to the checking DuckDB, for binding queries over
    registered empty tables. What it registers no other connection sees. Close it when
    done."""
    with _LOCK:
        return _database().cursor()


@functools.cache
def _function_names() -> frozenset[str]:
    """Every function (and macro) name the engine's DuckDB knows, asked once per process.

    Listing them costs 20-70 ms, so only a name `_has_function` cannot settle, and a
    hint for an unknown one, asks for it.
    """
    with _LOCK:
        rows = _database().execute("SELECT DISTINCT function_name FROM duckdb_functions()")
        return frozenset(str(name).lower() for (name,) in rows.fetchall())


# Errors of binding `name()` that say DuckDB has a function `name`, if not one callable
# so (no arguments, a window function outside OVER, a table function in SELECT).
_FOUND_ERRORS = (duckdb.BinderException, duckdb.InvalidInputException)
_has: dict[str, bool] = {}


def _has_function(name: str) -> bool:
    """Whether DuckDB has a function or macro `name` (lower case), as `_function_names`
    tells, but from binding a call to it (~0.3 ms) when that settles it: DuckDB binds
    it, or finds it and rejects the call. Any other answer (the catalog has no scalar
    function of that name: unknown, or only a PRAGMA) goes to the full list."""
    known = _has.get(name)
    if known is None:
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            with _LOCK:
                _database().execute(f"EXPLAIN SELECT {quoted}()")
            known = True
        except _FOUND_ERRORS:
            known = True
        except duckdb.Error:
            known = name in _function_names()
        _has[name] = known
    return known


@functools.cache
def _suggestable_names() -> tuple[str, ...]:
    """Function names worth suggesting: plain identifiers a job may call."""
    return tuple(
        sorted(
            name
            for name in _function_names()
            if re.fullmatch(r"[a-z][a-z0-9_]*", name)
            and name not in FORBIDDEN_FUNCTIONS
            and not name.startswith(("read_", "pragma_"))
        )
    )


def _duckdb_parse(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of `sql` as JSON: `json_serialize_sql` parses without binding.

    Unlike `extract_statements`, it reports where a syntax error is (a UTF-8 byte
    offset) and gives each function call its name and place.
    """
    try:
        with _LOCK:
            row = _database().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error as exc:
        raise PlanError(f"DuckDB cannot parse the SELECT: {exc}") from exc
    result: dict[str, Any] = json.loads(row[0]) if row is not None else {}
    return result


def _char_offset(sql: str, byte_offset: int) -> int:
    return len(sql.encode()[:byte_offset].decode(errors="ignore"))


def check_syntax(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of `sql`; PlanError at the place DuckDB's parser stops.

    Also at a ',' that leaves an item empty, which sqlglot would silently drop.
    """
    parsed = _duckdb_parse(sql)
    # Errors other than the parser's (not a SELECT, say) are the sandbox's to explain.
    if parsed.get("error") and parsed.get("error_type") == "parser":
        message = str(parsed.get("error_message", "invalid SQL"))
        position = str(parsed.get("position"))
        offset = _char_offset(sql, int(position)) if position.isdigit() else None
        if message.startswith("syntax error"):
            raise PlanError(f"SQL {message}", offset)
        if "without selection list" in message:
            raise PlanError("the SELECT list is empty: name the columns to emit, or *", offset)
        raise PlanError(f"SQL syntax error: {message}", offset)
    try:
        tokens = sqlglot.tokenize(sql, read="duckdb")
    except TokenError:
        return parsed  # DuckDB read it; sqlglot's parse reports what it cannot
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        if token.token_type != TokenType.COMMA:
            continue
        if following is None:
            what = "the end of the SELECT"
        elif following.token_type in _AFTER_LAST_ITEM:
            what = _AFTER_LAST_ITEM[following.token_type]
        else:
            continue
        raise PlanError(
            f"',' before {what} leaves an empty item: remove the ',' or add the missing item",
            token.start,
        )
    return parsed


def sqlglot_offset(sql: str, error: dict[str, Any]) -> int | None:
    """Where a sqlglot parse error is: its line and column mark the end of the token."""
    line, column = error.get("line"), error.get("col")
    if not isinstance(line, int) or not isinstance(column, int) or line < 1:
        return None
    lines = sql.split("\n")
    if line > len(lines):
        return None
    start = sum(len(text) + 1 for text in lines[: line - 1])
    return max(start + column - len(str(error.get("highlight") or " ")), start)


def _called_functions(node: Any) -> Iterator[tuple[str, int | None]]:
    """(name, byte offset) of every function call in a DuckDB JSON parse tree."""
    if isinstance(node, dict):
        if node.get("class") in ("FUNCTION", "WINDOW") and "function_name" in node:
            location = node.get("query_location")
            yield (
                str(node["function_name"]).lower(),
                location if isinstance(location, int) else None,
            )
        for value in node.values():
            yield from _called_functions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _called_functions(value)


def _unknown_function(written: str, offset: int | None) -> PlanError:
    matches = difflib.get_close_matches(written.lower(), _suggestable_names(), n=3, cutoff=0.7)
    hint = f" (did you mean {' or '.join(matches)}?)" if matches else ""
    return PlanError(f"unknown function {written}(){hint}", offset)


def check_functions(tree: exp.Select, parsed: dict[str, Any]) -> None:
    """PlanError at the first call of a function that neither DuckDB nor the planner knows.

    A name sqlglot recognises may still be fine under another name (sqlglot writes the
    DuckDB spelling): only calls sqlglot passes through verbatim are judged here, and
    the planned SQL is judged as a whole by `check_planned_sql`.
    """
    called = {name for name, _ in _called_functions(parsed)}
    unknown = {
        name for name in called - _OWN_FUNCTIONS - _REWRITTEN_FUNCTIONS if not _has_function(name)
    }
    if not unknown:
        return
    calls = sorted(tree.find_all(exp.Anonymous), key=lambda n: n.meta.get("start", 0))
    for call in calls:
        if str(call.name).lower() in unknown:
            raise _unknown_function(str(call.name), call.meta.get("start"))


def check_planned_sql(planned: str, tree: exp.Select) -> None:
    """The SQL the engine will run must parse in DuckDB and call only DuckDB's functions."""
    parsed = _duckdb_parse(planned)
    if parsed.get("error"):
        raise PlanError(
            f"the planned query does not parse in DuckDB: {parsed.get('error_message')}"
        )
    for name, _ in _called_functions(parsed):
        if _has_function(name):
            continue
        # The planned SQL is sqlglot's: find the user's call by the name sqlglot wrote.
        start = next(
            (
                f.meta.get("start")
                for f in tree.find_all(exp.Func)
                if f.sql(dialect="duckdb").lower().startswith(f"{name}(")
            ),
            None,
        )
        if name in _OWN_FUNCTIONS:
            raise PlanError(
                f"{name.upper()} needs a WINDOW TUMBLING, SLIDING or SESSION clause", start
            )
        raise _unknown_function(name, start)
