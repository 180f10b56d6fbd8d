"""Casts as the original system (and Flink, Spark) make them, on DuckDB.

**Integer casts truncate toward zero.** `CAST(7258.53 AS INTEGER)` is 7258 in Velostream,
Flink and Spark; DuckDB rounds (7259). Every CAST / TRY_CAST / `::` to an integer type
T is rewritten, whatever its argument's type, which is not known when planning but is
when DuckDB binds: `typeof(x)` is folded then, so only one branch of this runs:

    CASE WHEN typeof(x) IN (<integer types>, 'BOOLEAN') THEN CAST(x AS T)
         WHEN typeof(x) IN ('DOUBLE', 'FLOAT') OR <a VARCHAR of at most 15 characters>
         THEN COALESCE(CAST(trunc(TRY_CAST(x AS DOUBLE)) AS T), CAST(x AS T))
         ELSE COALESCE(CAST(trunc(TRY_CAST(x AS DECIMAL(38, 18))) AS T), CAST(x AS T)) END

Integers pass as they are; a double, or a numeric string short enough to be exact in one
('7.5', '1e3'), is truncated as a DOUBLE (fast); anything else (DECIMAL, long strings)
through DECIMAL(38, 18), exact to 18 places; beyond ±10^20, a number written out in
digits is cut at its point as text. Out of range after truncation is still the row's
error. What has no numeric view (a string that is no number, NaN, hexadecimal, an
exponent beyond ±10^20) falls to the plain cast, which keeps DuckDB's answer and errors.
The first `CAST(x AS T)` is the user's own node: row isolation (`plan.casts`) re-runs it
as TRY_CAST to find failing rows as before; the engine's own casts are marked (`HELPER`)
and never taken for the user's. An argument with a window function is cast through the
decimal alone (`CAST(trunc(CAST(x AS DECIMAL(38, 18))) AS T)`), so the window is not
computed more than once.

**`TIMESTAMP(x)`** (the original's examples write `TIMESTAMP(order_timestamp) AS
event_time`) converts `x` to a TIMESTAMP: a TIMESTAMP or DATE as it is; a string in ISO
form ('2024-01-31 12:00:00[.fff]', 'T' or '/' separators, a date alone), with an offset
('...Z', '...+01:00') made UTC; a number, or a string of digits, as epoch milliseconds
(the original's convention for event times), fractions kept to the microsecond. NULL
gives NULL; anything else is the row's error. DuckDB's parser reads `TIMESTAMP(` as a
type, so the call is masked (`mask_timestamp_calls`) for its syntax check.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import TokenType

from velostream.errors import PlanError

__all__ = ["HELPER", "integer_casts", "mask_timestamp_calls", "timestamp_calls"]

#: Marks a cast the engine wrote (`node.meta`): not the user's, never isolated as one.
HELPER = "velo_helper"

_INTEGERS = tuple(t for t in exp.DataType.INTEGER_TYPES if t != exp.DataType.Type.BIT)
_PLACEHOLDER = "__velo_arg"
_DECIMAL = "DECIMAL(38, 18)"
# By the argument's type (DuckDB folds typeof() when binding: one branch runs): integers
# as they are; DOUBLE, and strings short enough to be exact in one, through DOUBLE;
# anything else (DECIMAL, long strings) through DECIMAL(38, 18). The THEN/ELSE are set
# in `_truncating`.
_INTEGER_TYPES = (
    "'TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'HUGEINT', 'UTINYINT', 'USMALLINT', "
    "'UINTEGER', 'UBIGINT', 'UHUGEINT', 'BOOLEAN'"
)
_INTEGER_SQL = (
    f"CASE WHEN typeof({{x}}) IN ({_INTEGER_TYPES}) THEN NULL "
    "WHEN typeof({x}) IN ('DOUBLE', 'FLOAT') OR (typeof({x}) = 'VARCHAR' "
    "AND length(CAST({x} AS VARCHAR)) <= 15) THEN NULL ELSE NULL END"
)
# The whole part of a number written out in digits ('-123456789012345678901.5'), else NULL.
_DIGITS_SQL = (
    "NULLIF(regexp_extract(CAST({x} AS VARCHAR), '^\\s*([-+]?[0-9]+)(\\.[0-9]*)?\\s*$', 1), '')"
)
_TIMESTAMP_SQL = (
    f"COALESCE(CAST(TRY_CAST({_PLACEHOLDER} AS TIMESTAMPTZ) AS TIMESTAMP), "
    f"make_timestamp(CAST(trunc(TRY_CAST({_PLACEHOLDER} AS DECIMAL(38, 3)) * 1000) AS BIGINT)), "
    f"CASE WHEN {_PLACEHOLDER} IS NOT NULL THEN error({{message}} || "
    f"CAST({_PLACEHOLDER} AS VARCHAR) || {{tail}}) END)"
)


def _helper(node: exp.Expr) -> exp.Expr:
    node.meta[HELPER] = True
    return node


def _truncating(cast: exp.Cast) -> exp.Expr:
    """`cast` (to an integer type) truncating toward zero; see the module docstring."""
    x, to = cast.this, cast.to
    kind = exp.TryCast if isinstance(cast, exp.TryCast) else exp.Cast

    def through(via: str, *more: exp.Expr) -> exp.Expr:
        """`x` as `via`, truncated, cast to `to`; else `more`; else the user's own cast."""
        exact = _helper(exp.TryCast(this=x.copy(), to=exp.DataType.build(via)))
        first = _helper(kind(this=exp.Anonymous(this="trunc", expressions=[exact]), to=to.copy()))
        return exp.Coalesce(this=first, expressions=[*more, _helper(cast.copy())])

    # Beyond DECIMAL(38, 18) (|x| >= 10^20), a number written out in digits is cut at its
    # point as text: DuckDB's own cast would round it.
    digits = sqlglot.parse_one(_DIGITS_SQL.format(x=_PLACEHOLDER), read="duckdb")
    for node in digits.find_all(exp.Cast):
        _helper(node)
    whole = _helper(exp.TryCast(this=digits, to=to.copy()))

    if x.find(exp.Window) is not None:
        exact = _helper(exp.Cast(this=x.copy(), to=exp.DataType.build(_DECIMAL)))
        return _helper(kind(this=exp.Anonymous(this="trunc", expressions=[exact]), to=to.copy()))
    sql = _INTEGER_SQL.format(x=_PLACEHOLDER)
    template = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(template, exp.Case)
    for node in template.find_all(exp.Cast):
        _helper(node)  # CAST(x AS VARCHAR), for length()
    ifs = template.args["ifs"]
    ifs[0].set("true", cast.copy())  # the user's cast: row isolation re-runs this one
    ifs[1].set("true", through("DOUBLE"))
    template.set("default", through(_DECIMAL, whole))
    for placeholder in list(template.find_all(exp.Column)):
        if placeholder.name == _PLACEHOLDER:
            placeholder.replace(x.copy())
    return template


def integer_casts(tree: exp.Expr) -> None:
    """Make every cast to an integer type truncate toward zero, in place."""
    for cast in reversed(list(tree.find_all(exp.Cast))):
        if cast.meta.get(HELPER) or not cast.to.is_type(*_INTEGERS):
            continue
        x = cast.this
        if isinstance(x, exp.Literal) and not x.is_string and str(x.this).lstrip("-").isdigit():
            continue  # an integer literal: nothing to truncate
        cast.replace(_truncating(cast))


def mask_timestamp_calls(sql: str) -> str:
    """`sql` with each `TIMESTAMP(` call written `COALESCE (` (same length), for DuckDB's
    syntax check; PlanError for `TIMESTAMP()` without an argument."""
    try:
        tokens = sqlglot.tokenize(sql, read="duckdb")
    except TokenError:
        return sql
    out = sql
    for before, token, after in zip([None, *tokens], tokens, [*tokens[1:], None], strict=False):
        if token.token_type == TokenType.IDENTIFIER or token.text.upper() != "TIMESTAMP":
            continue  # "TIMESTAMP" quoted is a column
        if after is None:
            continue
        if after.token_type != TokenType.L_PAREN:
            continue
        if before is not None and before.token_type in (TokenType.ALIAS, TokenType.DCOLON):
            continue  # a type: CAST(x AS TIMESTAMP(3)), x::TIMESTAMP(3)
        if sql[after.end + 1 :].lstrip().startswith(")"):
            raise PlanError(
                "TIMESTAMP() (the original system's record time) is not supported: use "
                "_timestamp (a Kafka message's time) or NOW() (processing time), or "
                "TIMESTAMP(<column>) to convert a column",
                token.start,
            )
        start, end = token.start, after.end + 1
        out = out[:start] + "COALESCE" + " " * (end - start - 9) + "(" + out[end:]
    return out


def timestamp_calls(tree: exp.Expr) -> None:
    """Rewrite each `TIMESTAMP(x)` (sqlglot's `exp.Timestamp`) as its conversion, in place."""
    for call in reversed(list(tree.find_all(exp.Timestamp))):
        x = call.this
        if x is None or call.args.get("zone") is not None or call.args.get("with_tz"):
            raise PlanError(
                "TIMESTAMP(x) takes exactly one argument (a timestamp, an ISO string or "
                "epoch milliseconds)",
                call.meta.get("start"),
            )
        label = exp.Literal.string(f"TIMESTAMP({x.sql(dialect='duckdb')}): '").sql("duckdb")
        tail = exp.Literal.string("' is neither a timestamp nor epoch milliseconds").sql("duckdb")
        sql = _TIMESTAMP_SQL.format(message=label, tail=tail)
        template = sqlglot.parse_one(sql, read="duckdb")
        for node in template.find_all(exp.Cast):
            _helper(node)
        for placeholder in list(template.find_all(exp.Column)):
            if placeholder.name == _PLACEHOLDER:
                placeholder.replace(x.copy())
        call.replace(template)
