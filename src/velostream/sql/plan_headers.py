"""Kafka header functions: `HEADER`, `HAS_HEADER`, `HEADER_KEYS` and `SET_HEADER`.

Reading. A Kafka source gives each row its message's headers as the system column
`_headers` (a list of `{key, value}` structs, values as bytes, in message order).
`HEADER('k')`, `HAS_HEADER('k')` and `HEADER_KEYS()` are rewritten into DuckDB list
functions over it, so DuckDB evaluates them per row:

- `HEADER('k')`: the value of header `k` as text (VARCHAR), NULL if the message has no
  such header (or its value is null); of a key given twice, the last. A value that is
  not valid UTF-8 comes back in DuckDB's text form of bytes (`\\xFF`); `_headers` keeps
  the exact bytes.
- `HAS_HEADER('k')`: whether the message has header `k` (never NULL).
- `HEADER_KEYS()`: the header keys, comma-separated, each once, in message order
  (`''` without headers).

Writing. `SET_HEADER('k', value) [AS name]` is a SELECT item: the item's column holds
`value` (of its own type) and the output message gets header `k` with that value
(`SetHeader`; the engine makes the headers). Only a Kafka source has headers and only
a Kafka sink writes them: anything else is refused here.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from velostream.errors import PlanError
from velostream.sql.model import JobSpec

__all__ = ["HEADER_FUNCTIONS", "check_header_reads", "plan_set_headers", "rewrite_header_reads"]

HEADER_FUNCTIONS = frozenset({"header", "has_header", "header_keys", "set_header", "remove_header"})
_READS = ("header", "has_header", "header_keys")
_SOURCES = frozenset({"kafka_source"})
_SINKS = frozenset({"kafka_sink"})
_ARITY = {"header": 1, "has_header": 1, "header_keys": 0, "set_header": 2}
_SIGNATURE = {
    "header": "HEADER('key')",
    "has_header": "HAS_HEADER('key')",
    "header_keys": "HEADER_KEYS()",
    "set_header": "SET_HEADER('key', value)",
}


def _name(node: exp.Expr) -> str | None:
    """The header function `node` calls, lower case; None if it is none of them."""
    if isinstance(node, exp.Anonymous) and str(node.name).lower() in HEADER_FUNCTIONS:
        return str(node.name).lower()
    return None


def _key(call: exp.Anonymous, name: str) -> str | None:
    """The literal key of a header call (checking its arguments)."""
    args = call.expressions
    start = call.meta.get("start")
    if len(args) != _ARITY[name]:
        raise PlanError(
            f"{name.upper()} takes {_ARITY[name] or 'no'} argument(s): write {_SIGNATURE[name]}",
            start,
        )
    if not args:
        return None
    key = args[0]
    if not (isinstance(key, exp.Literal) and key.is_string and key.this):
        raise PlanError(
            f"the header key of {name.upper()} must be a non-empty string literal, "
            f"as in {_SIGNATURE[name]}",
            start,
        )
    return str(key.this)


def _header_calls(tree: exp.Expr) -> list[tuple[exp.Anonymous, str]]:
    return [
        (node, name) for node in tree.find_all(exp.Anonymous) if (name := _name(node)) is not None
    ]


def check_header_reads(tree: exp.Select, job: JobSpec, source: str) -> None:
    """PlanError at a header read whose source has no headers, or with bad arguments,
    or (in a GROUP BY query) neither a group key nor inside an aggregate."""
    keys = _group_keys(tree)
    for call, name in _header_calls(tree):
        if name == "set_header":
            continue
        if name == "remove_header":
            raise PlanError(
                "REMOVE_HEADER is not supported: select the headers to keep, as in "
                "list_filter(_headers, lambda h: h.key <> 'k') AS _headers",
                call.meta.get("start"),
            )
        _key(call, name)
        kind = next((s.type for s in job.sources if s.name == source), None)
        if kind not in _SOURCES:
            raise PlanError(
                f"{name.upper()} reads Kafka message headers, but '{source}' is a {kind} "
                "and has none: use it on a kafka_source",
                call.meta.get("start"),
            )
        if keys is not None and not _grouped(call, keys):
            text = _sql(call)
            raise PlanError(
                f"{text} in a GROUP BY query must be a group key (GROUP BY {text}) "
                "or inside an aggregate",
                call.meta.get("start"),
            )


def _sql(node: exp.Expr) -> str:
    return node.sql(dialect="duckdb")


def _group_keys(tree: exp.Select) -> set[str] | None:
    """The GROUP BY expressions as SQL (a SELECT alias as its expression); None when the
    query does not aggregate."""
    group = tree.args.get("group")
    aggregates = any(not isinstance(a.parent, exp.Window) for a in tree.find_all(exp.AggFunc))
    if group is None and not aggregates:
        return None
    aliases = {i.alias: i.this for i in tree.selects if isinstance(i, exp.Alias)}
    keys = set()
    for g in group.expressions if group is not None else []:
        if isinstance(g, exp.Column) and not g.table and g.name in aliases:
            g = aliases[g.name]
        keys.add(_sql(g))
    return keys


def _grouped(call: exp.Expr, keys: set[str]) -> bool:
    """Whether `call` is evaluated per group: in a key, an aggregate, or WHERE/GROUP BY."""
    node: exp.Expr | None = call
    while node is not None:
        if _sql(node) in keys or isinstance(node, exp.AggFunc | exp.Where | exp.Group):
            return True
        node = node.parent
    return False


def plan_set_headers(tree: exp.Select, job: JobSpec) -> list[tuple[str, str]]:
    """The (header key, output column) of each `SET_HEADER` item in SELECT order, the call
    replaced in `tree` by its value; PlanError where SET_HEADER cannot be honoured."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(list(tree.selects)):
        call = item.this if isinstance(item, exp.Alias) else item
        if not isinstance(call, exp.Anonymous) or _name(call) != "set_header":
            continue
        start = call.meta.get("start")
        key = _key(call, "set_header")
        assert key is not None
        if any(k == key for k, _ in out):
            raise PlanError(f"SET_HEADER('{key}', ...) appears twice: set each header once", start)
        others = [s for s in job.sinks if s.type not in _SINKS]
        if not job.sinks or others:
            what = f"'{others[0].name}' is a {others[0].type}" if others else "the job has no sink"
            raise PlanError(
                f"SET_HEADER writes a Kafka message header, but {what}: write to a kafka_sink",
                start,
            )
        value = call.expressions[1].copy()
        if isinstance(item, exp.Alias):
            column = item.alias
            call.replace(value)
        else:
            column = f"col{i}"
            call.replace(exp.alias_(value, column, quoted=True))
        out.append((key, column))
    for call, name in _header_calls(tree):
        if name == "set_header":
            raise PlanError(
                "SET_HEADER must be a whole SELECT item: write SET_HEADER('k', "
                "CASE ... END) AS k rather than put it inside another expression or clause",
                call.meta.get("start"),
            )
    return out


def _lookup(key: str) -> exp.Expr:
    """The bytes of header `key` (the last one of that key), or NULL."""
    quoted = key.replace("'", "''")
    return sqlglot.parse_one(
        f"list_reverse(list_filter(_headers, lambda __h: __h.key = '{quoted}'))[1].value",
        read="duckdb",
    )


def _read(name: str, key: str | None) -> exp.Expr:
    keys = "list_transform(_headers, lambda __h: __h.key)"
    if name == "header":
        assert key is not None
        raw = _lookup(key).sql(dialect="duckdb")
        sql = f"COALESCE(TRY(decode({raw})), CAST({raw} AS VARCHAR))"
    elif name == "has_header":
        assert key is not None
        quoted = key.replace("'", "''")
        sql = f"COALESCE(list_contains({keys}, '{quoted}'), FALSE)"
    else:
        first = f"list_filter({keys}, lambda __k, __i: list_position({keys}, __k) = __i)"
        sql = f"COALESCE(array_to_string({first}, ','), '')"
    return sqlglot.parse_one(sql, read="duckdb")


def rewrite_header_reads(tree: exp.Expr) -> None:
    """Replace HEADER, HAS_HEADER and HEADER_KEYS in `tree` by DuckDB SQL over `_headers`."""
    for call, name in _header_calls(tree):
        if name in _READS:
            call.replace(_read(name, _key(call, name)))
