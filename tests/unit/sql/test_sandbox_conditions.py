"""`@metric_condition` is one sandboxed SQL condition, and SQL that would only fail at run
time is refused at validation (issue 12, items 2 and 9)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp
from tests.helpers import RUN_TIME_FAILURES

from velostream.datasource.registry import connector_catalog
from velostream.datasource.validation import check_application
from velostream.errors import SandboxError, SqlValidationError
from velostream.sql.parser import parse_application
from velostream.sql.sandbox import parse_condition

SPLICE = "true GROUP BY 1; CREATE OR REPLACE MACRO m() AS 1; SELECT * FROM duckdb_settings() --"


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("price > 100", "price > 100"),
        ("side = 'buy' AND qty BETWEEN 1 AND 10", "side = 'buy' AND qty BETWEEN 1 AND 10"),
        ("symbol IN ('A', 'B') -- big ones", "symbol IN ('A', 'B')"),
        ("upper(symbol) LIKE 'A%'", "UPPER(symbol) LIKE 'A%'"),
    ],
)
def test_a_condition_is_parsed_and_written_out_again(text: str, sql: str) -> None:
    assert parse_condition(text) == sql


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (SPLICE, "not several statements"),
        ("true GROUP BY 1", "no other clause"),
        ("true ORDER BY 1", "no other clause"),
        ("true LIMIT 1", "no other clause"),
        ("getenv('HOME') IS NOT NULL", "getenv() is not allowed"),
        ("(SELECT count(*) FROM duckdb_settings()) > 0", "not allowed"),
        ("x IN (SELECT 1)", "subqueries"),
        ("nextval('seq') > 0", "sequences are not available"),
        ("U&'\\0041' = 'A'", "Unicode escape strings"),
        ("price >", "not a SQL condition"),
        ("", "not a SQL condition"),
    ],
)
def test_anything_but_one_sandboxed_condition_is_refused(text: str, reason: str) -> None:
    with pytest.raises(SandboxError) as caught:
        parse_condition(text)
    assert reason in str(caught.value)


def _metric_app(condition: str) -> str:
    return f"""-- @app: m
-- @metric: big_trades
-- @metric_condition: {condition}
CREATE STREAM out AS SELECT id, price FROM src EMIT CHANGES
WITH ('src.type' = 'memory_source', 'out.type' = 'memory_sink');
"""


def test_the_splice_is_a_validation_error_naming_the_annotation_and_line() -> None:
    with pytest.raises(SqlValidationError) as caught:
        parse_application(_metric_app(SPLICE), connectors=connector_catalog(), env={})
    (problem,) = caught.value.problems
    assert "3:" in problem and "@metric_condition" in problem and "big_trades" in problem


def test_an_accepted_condition_is_stored_as_written_out_again() -> None:
    app = parse_application(
        _metric_app("price > 100 -- cut"), connectors=connector_catalog(), env={}
    )
    assert app.jobs[0].metrics[0].condition == "price > 100"


# Pieces of SQL, joined: keywords, operators, quotes and comment starts mixed freely.
_SQLISH = st.lists(
    st.sampled_from(
        [
            *"abcxyz ()'\";,-*/=<>%&|\\\n1",
            "GROUP BY ",
            "SELECT ",
            "--",
            " AND ",
            "price",
            "getenv(",
            "U&",
            "/*",
            "*/",
            "duckdb_settings()",
        ]
    ),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_SQLISH)
def test_fuzzed_conditions_never_crash_and_never_escape(text: str) -> None:
    try:
        sql = parse_condition(text)
    except SandboxError:
        return
    # What would run is one SELECT whose only clause beyond FROM is this WHERE.
    statements = sqlglot.parse(f"SELECT 1 FROM __rows WHERE {sql}", read="duckdb")
    assert len(statements) == 1 and isinstance(statements[0], exp.Select)
    assert {k for k, v in statements[0].args.items() if v} <= {
        "expressions",
        "from_",
        "from",
        "where",
    }


@settings(max_examples=200, deadline=None)
@given(value=_SQLISH, condition=_SQLISH)
def test_fuzzed_with_values_and_conditions_only_ever_fail_validation(
    value: str, condition: str
) -> None:
    sql = f"""-- @app: fuzz
-- @metric: m
-- @metric_condition: {condition.replace(chr(10), " ")}
CREATE STREAM out AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'memory_source', 'src.rows' = '{value.replace("'", "''")}',
      'out.type' = 'memory_sink');
"""
    with contextlib.suppress(SqlValidationError):
        check_application(sql, base_dir=Path("."), source_name="fuzz", env={})


@pytest.mark.parametrize(
    ("select", "reason"),
    RUN_TIME_FAILURES,
)
def test_sql_that_would_only_fail_at_run_time_is_refused_at_validation(
    select: str, reason: str
) -> None:
    sql = f"""-- @app: late
CREATE STREAM out AS
{select}
EMIT CHANGES
WITH ('src.type' = 'memory_source', 'out.type' = 'memory_sink');
"""
    with pytest.raises(SqlValidationError) as caught:
        check_application(sql, base_dir=Path("."), source_name="late.sql")
    (problem,) = caught.value.problems
    assert reason in problem and "3:" in problem
