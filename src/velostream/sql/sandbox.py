"""What job SQL may touch: only its declared source, never files, network or settings.

The DuckDB connection is also opened with external access off and its configuration
locked (defence in depth); this check gives the user a clear message at validation.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from velostream.errors import SandboxError

__all__ = [
    "FORBIDDEN_FUNCTIONS",
    "UNAVAILABLE_FUNCTIONS",
    "check_expression",
    "check_sandbox",
    "parse_condition",
]

# Table and scalar functions that read files, the network or the environment.
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "read_csv",
        "read_csv_auto",
        "read_json",
        "read_json_auto",
        "read_json_objects",
        "read_ndjson",
        "read_ndjson_auto",
        "read_ndjson_objects",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "read_text",
        "read_blob",
        "glob",
        "sniff_csv",
        "iceberg_scan",
        "delta_scan",
        "sqlite_scan",
        "postgres_scan",
        "mysql_scan",
        "getenv",
        "current_setting",
        "duckdb_settings",
        "duckdb_extensions",
        "duckdb_secrets",
        "load_extension",
        "query",
        "query_table",
        "http_get",
        "httpfs",
        "read_xlsx",
        "st_read",
    }
)


# Functions a sandboxed job has no use for, or that would only fail once rows flow:
# refused at validation, each with the reason.
UNAVAILABLE_FUNCTIONS = {
    "which_secret": "secrets are not available to job SQL",
    "checkpoint": "a job does not manage its database",
    "force_checkpoint": "a job does not manage its database",
    "nextval": "sequences are not available in job SQL (use ROW_NUMBER() or a key column)",
    "currval": "sequences are not available in job SQL (use ROW_NUMBER() or a key column)",
}


def _function_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower() if isinstance(node, exp.Func) else ""


def _statement_name(tree: exp.Expr) -> str:
    # sqlglot keeps statements it does not model (LOAD, CALL, ...) as a Command.
    if isinstance(tree, exp.Command) and isinstance(tree.this, str):
        return tree.this.upper()
    return str(tree.key).upper()


def check_sandbox(tree: exp.Expr, sources: set[str]) -> str:
    """Check `tree` reads from a declared source; return that source's name (the stream).

    Its JOINs and subqueries are the planner's to check (`plan_join`): each must read a
    table side, never a file, a table function or the stream.
    """
    if isinstance(tree, exp.Block):
        raise SandboxError("a job's SQL is a single SELECT, not several statements")
    if not isinstance(tree, exp.Select):
        raise SandboxError(
            f"{_statement_name(tree)} is not allowed in job SQL: a job is a single SELECT "
            "over its declared sources (sources and sinks do all I/O)"
        )
    check_expression(tree)
    from_ = tree.args.get("from_") or tree.args.get("from")
    if from_ is None:
        raise SandboxError("a job's SELECT needs FROM <source>")
    table = from_.this
    if isinstance(table, exp.Subquery | exp.Select):
        if isinstance(table.this, exp.Union):
            raise SandboxError(
                "a UNION ALL in FROM is not supported: write SELECT ... FROM a UNION ALL "
                "SELECT ... FROM b as the statement itself; to GROUP BY over it, write the "
                "union to a sink in one statement and GROUP BY in a second one that reads it"
            )
        raise SandboxError("subqueries in FROM are not supported")
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SandboxError(
            f"FROM {table.sql(dialect='duckdb')} is not allowed: jobs read only their "
            "declared sources"
        )
    if table.args.get("db") or table.args.get("catalog"):
        raise SandboxError(f"FROM {table.sql()} is not allowed: name a declared source")
    name = table.name
    if name not in sources and table.this.quoted and any(c in name for c in "/\\.:"):
        raise SandboxError(
            f"FROM '{name}' reads a file or URL: jobs read only their declared sources "
            "(configure a file_source instead)"
        )
    if name not in sources:
        valid = ", ".join(sorted(sources)) or "none declared"
        raise SandboxError(f"FROM {name}: not a declared source (declared: {valid})")
    return name


def check_expression(tree: exp.Expr) -> None:
    """Raise SandboxError if anything in `tree` reaches outside a job's rows.

    Functions that read files, the network, settings or the environment, statements
    (PRAGMA, SET, COPY, ATTACH, ...), functions a job cannot use, and Unicode escape
    strings (`U&'...'`, which DuckDB does not read as a string).
    """
    for node in tree.walk():
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in FORBIDDEN_FUNCTIONS or name.startswith(("read_", "pragma_")):
                raise SandboxError(
                    f"function {name}() is not allowed in job SQL: jobs read only their "
                    "declared sources (configure a file_source or kafka_source instead)"
                )
            if name in UNAVAILABLE_FUNCTIONS:
                raise SandboxError(
                    f"function {name}() is not allowed: {UNAVAILABLE_FUNCTIONS[name]}"
                )
            _check_constant_size(node, name)
        if isinstance(node, exp.Command | exp.Pragma | exp.Set | exp.Copy | exp.Attach):
            raise SandboxError(f"{node.key.upper()} is not allowed in job SQL")
        if (
            isinstance(node, exp.BitwiseAnd)
            and isinstance(node.this, exp.Column)
            and not node.this.table
            and node.this.name.upper() == "U"
            and isinstance(node.expression, exp.Literal)
            and node.expression.is_string
        ):
            raise SandboxError(
                "Unicode escape strings (U&'...') are not supported: write the characters "
                "themselves in an ordinary string"
            )


# DuckDB folds a call with constant arguments while it plans the query, building the
# whole value at once, and no interrupt reaches it there: `range(0, 100000000)` takes
# 7 GB and 30 s. Such calls are refused beyond these sizes; calls that depend on a
# column run chunk by chunk, under the job's limits (server/processors/limits.py).
MAX_CONSTANT_ELEMENTS = 1_000_000
MAX_CONSTANT_CHARACTERS = 16 * 1024 * 1024


def _number(node: exp.Expr | None) -> float | None:
    """The value of a constant numeric expression (literals, signs, casts, + - *)."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Paren | exp.Cast | exp.TryCast):
        return _number(node.this)
    if isinstance(node, exp.Neg):
        value = _number(node.this)
        return None if value is None else -value
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        left, right = _number(node.this), _number(node.expression)
        if left is None or right is None:
            return None
        if isinstance(node, exp.Add):
            return left + right
        return left - right if isinstance(node, exp.Sub) else left * right
    return None


def _check_constant_size(node: exp.Expr, name: str) -> None:
    """Refuse a constant generator call whose value is too large to fold (see above)."""
    elements: float | None = None
    characters: float | None = None
    if isinstance(node, exp.GenerateSeries):
        start, end = _number(node.args.get("start")), _number(node.args.get("end"))
        step = _number(node.args.get("step")) if node.args.get("step") else 1.0
        if start is not None and end is not None and step:
            elements = (end - start) / step
    elif isinstance(node, exp.Repeat):
        times = _number(node.args.get("times"))
        value = node.this
        if times is not None and isinstance(value, exp.Literal) and value.is_string:
            characters = times * len(value.this)
        elif times is not None and isinstance(value, exp.Array):
            elements = times * len(value.expressions)
    elif isinstance(node, exp.Pad):
        characters = _number(node.args.get("expression"))
    elif name in ("list_resize", "array_resize") and len(node.expressions) > 1:
        elements = _number(node.expressions[1])
    sql = node.sql(dialect="duckdb")
    if elements is not None and elements > MAX_CONSTANT_ELEMENTS:
        raise SandboxError(
            f"{sql} builds a list of {elements:,.0f} elements while the query is planned, "
            f"beyond the limit of {MAX_CONSTANT_ELEMENTS:,} for a constant list"
        )
    if characters is not None and characters > MAX_CONSTANT_CHARACTERS:
        raise SandboxError(
            f"{sql} builds a string of {characters:,.0f} characters while the query is "
            f"planned, beyond the limit of {MAX_CONSTANT_CHARACTERS:,} for a constant string"
        )


def _no_subqueries(tree: exp.Expr) -> None:
    for sub in tree.find_all(exp.Subquery, exp.Exists, exp.In):
        if isinstance(sub, exp.In) and sub.args.get("query") is None:
            continue
        raise SandboxError("subqueries are not supported yet")


# The clauses a metric condition may fill in its probe query: nothing else.
_CONDITION_CLAUSES = frozenset({"expressions", "from", "from_", "where"})


def parse_condition(text: str) -> str:
    """`text` as one sandboxed SQL condition, in the SQL that will run; else SandboxError.

    It is parsed as the WHERE of a probe query, which must then be that query and
    nothing else (no second statement, no GROUP BY), and checked like job SQL. What
    runs is the condition as parsed, written out again without comments, so no text
    of the annotation is ever spliced into SQL.
    """
    try:
        statements = sqlglot.parse(f"SELECT 1 FROM __rows WHERE {text}", read="duckdb")
    except (ParseError, TokenError) as exc:
        raise SandboxError(f"not a SQL condition: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise SandboxError("must be a single SQL condition, not several statements")
    probe = statements[0]
    extra = sorted(k for k, v in probe.args.items() if v and k not in _CONDITION_CLAUSES)
    where = probe.args.get("where")
    if extra or where is None:
        raise SandboxError("must be a single SQL condition, with no other clause")
    check_expression(where.this)
    _no_subqueries(where.this)
    return str(where.this.sql(dialect="duckdb", comments=False))
