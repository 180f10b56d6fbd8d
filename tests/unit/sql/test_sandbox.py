"""Job SQL cannot touch the machine: rejected at validation, refused by the connection."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlglot

from velostream.engine import sandboxed_connection
from velostream.errors import PlanError, SandboxError
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.planner import plan_job
from velostream.sql.sandbox import FORBIDDEN_FUNCTIONS, check_sandbox


def job_of(sql: str) -> JobSpec:
    """A job reading the memory source `trades` with `sql`."""
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=None,
        sources=(ConnectorConfig("trades", "memory_source", {}),),
        sinks=(),
    )


def rejected(sql: str) -> str:
    with pytest.raises(PlanError) as caught:
        plan_job(job_of(sql))
    return str(caught.value)


NOT_ALLOWED = "is not allowed in job SQL: jobs read only their declared sources"

FILE_AND_ENVIRONMENT_FUNCTIONS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM READ_CSV_AUTO('/etc/passwd')",
    "SELECT * FROM read_csv(['/etc/passwd', '/etc/shadow'])",
    "SELECT * FROM read_json('/tmp/x.json')",
    "SELECT * FROM read_ndjson_objects('/tmp/x.json')",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "SELECT * FROM parquet_scan('/tmp/x.parquet')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sqlite_scan('/tmp/x.db', 't')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM pragma_version()",
    "SELECT * FROM trades, read_csv('/etc/passwd')",
    "SELECT getenv('HOME') AS home FROM trades",
    "SELECT id FROM trades WHERE sym = getenv('SYMBOL')",
    "SELECT current_setting('enable_external_access') FROM trades",
    "SELECT load_extension('httpfs') FROM trades",
    "SELECT id FROM trades WHERE id IN (SELECT id FROM read_csv('/etc/passwd'))",
]


@pytest.mark.parametrize("sql", FILE_AND_ENVIRONMENT_FUNCTIONS)
def test_file_network_and_environment_functions_are_rejected(sql: str) -> None:
    message = rejected(sql)
    assert "function " in message and NOT_ALLOWED in message
    assert "configure a file_source or kafka_source instead" in message


@pytest.mark.parametrize("path", ["/etc/passwd", "http://example.com/x.csv", "data.parquet"])
def test_a_file_or_url_in_from_is_rejected(path: str) -> None:
    assert f"FROM '{path}' reads a file or URL" in rejected(f"SELECT * FROM '{path}'")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM orders", "FROM orders: not a declared source (declared: trades)"),
        ("SELECT * FROM main.trades", "FROM main.trades is not allowed: name a declared source"),
        ("SELECT * FROM range(10)", "is not allowed: jobs read only their declared sources"),
        ("SELECT * FROM unnest([1, 2])", "is not allowed: jobs read only their declared sources"),
        ("SELECT 1", "a job's SELECT needs FROM <source>"),
    ],
)
def test_from_must_name_a_declared_source(sql: str, message: str) -> None:
    assert message in rejected(sql)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM (SELECT * FROM trades)", "subqueries in FROM are not supported"),
        ("SELECT id FROM trades WHERE id IN (SELECT id FROM trades)", "statement's stream"),
        ("SELECT id FROM trades WHERE id = (SELECT MAX(id) FROM trades)", "statement's stream"),
        ("SELECT id FROM trades WHERE EXISTS (SELECT 1 FROM quotes)", "neither a declared"),
    ],
)
def test_subqueries_read_only_tables(sql: str, message: str) -> None:
    assert message in rejected(sql)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT id FROM trades JOIN quotes ON trades.sym = quotes.sym", "neither a declared"),
        ("SELECT id FROM trades, quotes", "a comma or CROSS join is not supported"),
        ("SELECT id FROM trades CROSS JOIN quotes", "CROSS JOIN is not supported"),
        ("SELECT id FROM trades JOIN trades t2 ON trades.id = t2.id", "statement's stream"),
    ],
)
def test_joins_read_only_tables(sql: str, message: str) -> None:
    assert message in rejected(sql)


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("COPY trades TO '/tmp/out.csv'", "COPY"),
        ("COPY (SELECT 1) TO '/tmp/out.csv' (FORMAT csv)", "COPY"),
        ("ATTACH '/tmp/other.db' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("CALL pragma_version()", "CALL"),
        ("CREATE TABLE x AS SELECT * FROM trades", "CREATE"),
        ("INSERT INTO trades VALUES (1)", "INSERT"),
    ],
)
def test_statements_that_are_not_a_select_are_rejected(sql: str, statement: str) -> None:
    message = rejected(sql)
    assert message.startswith(f"{statement} is not allowed in job SQL")
    assert "a job is a single SELECT over its declared sources" in message


def test_several_statements_are_rejected() -> None:
    message = rejected("SELECT * FROM trades; COPY trades TO '/tmp/x.csv'")
    assert message == "a job's SQL is a single SELECT, not several statements"


def test_check_sandbox_returns_the_source() -> None:
    tree = sqlglot.parse_one("SELECT a FROM trades WHERE a IN (1, 2)", read="duckdb")
    assert check_sandbox(tree, {"trades", "quotes"}) == "trades"
    with pytest.raises(SandboxError, match="not a declared source"):
        check_sandbox(tree, {"quotes"})


def test_every_forbidden_function_is_rejected() -> None:
    for name in sorted(FORBIDDEN_FUNCTIONS):
        tree = sqlglot.parse_one(f"SELECT {name}('x') FROM trades", read="duckdb")
        with pytest.raises(SandboxError, match="is not allowed in job SQL"):
            check_sandbox(tree, {"trades"})


# --- the connection, should SQL get through validation ------------------------------------


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return sandboxed_connection()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    ],
)
def test_connection_refuses_to_read_files(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        con.sql(sql).fetchall()


def test_connection_refuses_to_write_files(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 42 AS x) TO '{target}'")
    assert not target.exists()


def test_connection_refuses_to_attach(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    target = tmp_path / "other.db"
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"ATTACH '{target}' AS other")
    assert not target.exists()


@pytest.mark.parametrize("sql", ["INSTALL httpfs", "LOAD httpfs"])
def test_connection_refuses_extensions(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.PermissionException):
        con.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "SET autoinstall_known_extensions = true",
        "SET allow_community_extensions = true",
        "SET memory_limit = '100GB'",
    ],
)
def test_connection_settings_are_locked(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.Error, match="the configuration has been locked"):
        con.execute(sql)
    assert con.sql("SELECT current_setting('enable_external_access')").fetchall() == [(False,)]


def test_connection_has_no_getenv(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT getenv('HOME')").fetchall()


def test_connection_still_runs_queries_over_registered_batches(
    con: duckdb.DuckDBPyConnection,
) -> None:
    import pyarrow as pa

    con.register("batch", pa.table({"x": [1, 2, 3]}))
    assert con.sql("SELECT SUM(x) AS s FROM batch").fetchall() == [(6,)]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT list_sum(range(0, 100000000)) AS s FROM trades", "100,000,000 elements"),
        ("SELECT range(100000000) AS s FROM trades", "100,000,000 elements"),
        ("SELECT generate_series(1, 10000000, 2) AS s FROM trades", "5,000,000 elements"),
        ("SELECT range(-5e8::BIGINT, 0) AS s FROM trades", "500,000,000 elements"),
        ("SELECT list_resize([1], 2 * 1000000) AS s FROM trades", "2,000,000 elements"),
        ("SELECT repeat([1, 2], 600000) AS s FROM trades", "1,200,000 elements"),
        ("SELECT repeat('ab', 10000000) AS s FROM trades", "20,000,000 characters"),
        ("SELECT lpad('a', 100000000, 'x') AS s FROM trades", "100,000,000 characters"),
        ("SELECT id FROM trades WHERE len(range(0, 100000000)) > id", "100,000,000 elements"),
    ],
)
def test_a_huge_constant_is_refused(sql: str, message: str) -> None:
    """DuckDB would build it while planning, where no interrupt or limit reaches."""
    assert f"builds a {'string' if 'characters' in message else 'list'} of {message}" in (
        rejected(sql)
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT range(0, 1000) AS s FROM trades",
        "SELECT range(0, id) AS s FROM trades",  # runs chunk by chunk, under the job's limits
        "SELECT generate_series(1, 1000000) AS s FROM trades",
        "SELECT lpad(sym, 10, ' ') AS s FROM trades",
        "SELECT range(TIMESTAMP '2024-01-01', TIMESTAMP '2025-01-01', INTERVAL 1 SECOND) AS s "
        "FROM trades",
    ],
)
def test_small_or_data_dependent_generators_pass(sql: str) -> None:
    plan_job(job_of(sql))


def test_the_connection_has_the_memory_limit_and_never_spills() -> None:
    con = sandboxed_connection(memory_limit=64 * 1024 * 1024)
    settings = con.sql(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchall()
    assert settings == [("64.0 MiB", "")]
    with pytest.raises(duckdb.OutOfMemoryException):
        con.sql(
            "SELECT string_agg(repeat('x', 1000 + i % 7), ',') FROM range(200000) t(i)"
        ).fetchall()
