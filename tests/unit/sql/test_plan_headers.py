"""Kafka header functions at validation: what is planned, and every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql.check import check_application
from velostream.sql.model import ConnectorConfig, EmitMode, JobSpec, StatementKind
from velostream.sql.planner import PlanError, QueryPlan, plan_job


def job(
    sql: str,
    *,
    source: str = "kafka_source",
    sinks: tuple[str, ...] = ("kafka_sink",),
    emit: EmitMode | None = None,
) -> JobSpec:
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=emit,
        sources=(ConnectorConfig("orders", source, {}),),
        sinks=tuple(ConnectorConfig(f"out{i}", t, {}) for i, t in enumerate(sinks)),
    )


def plan(sql: str, **kwargs: object) -> QueryPlan:
    return plan_job(job(sql, **kwargs))  # type: ignore[arg-type]


def rejected(sql: str, **kwargs: object) -> str:
    with pytest.raises(PlanError) as caught:
        plan(sql, **kwargs)
    return str(caught.value)


def test_header_reads_become_list_functions_over_headers() -> None:
    p = plan(
        "SELECT HEADER('trace-id') AS t, HAS_HEADER('it''s') AS h, HEADER_KEYS() AS k "
        "FROM orders WHERE HAS_HEADER('trace-id')"
    )
    assert all("_headers" in item for item in p.select_sql)
    assert "'trace-id'" in p.select_sql[0] and "'it''s'" in p.select_sql[1]
    assert p.where_sql is not None and "_headers" in p.where_sql
    assert p.set_headers == []


def test_set_header_items_keep_their_value_and_name_the_header() -> None:
    p = plan(
        "SELECT id, SET_HEADER('x-id', id) AS xid, SET_HEADER('seen', HEADER('trace')), "
        "set_header('n', id + 1) n FROM orders"
    )
    assert p.set_headers == [("x-id", "xid"), ("seen", "col2"), ("n", "n")]
    assert p.select_sql[1] == 'id AS "xid"'
    assert p.select_sql[2].endswith('AS "col2"') and "_headers" in p.select_sql[2]
    assert p.select_sql[3] == 'id + 1 AS "n"'


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT HEADER('t') AS t, COUNT(*) AS n FROM orders GROUP BY HEADER('t')",
        "SELECT UPPER(HEADER('t')) AS t, COUNT(*) AS n FROM orders GROUP BY HEADER('t')",
        "SELECT HEADER('t') AS t, LISTAGG(HEADER('u'), ',') AS us FROM orders "
        "WHERE HAS_HEADER('v') GROUP BY t",
        "SELECT HEADER('t') AS t, COUNT(*) AS n FROM orders GROUP BY t "
        "HAVING HEADER('t') IS NOT NULL",
    ],
)
def test_header_reads_as_group_keys_and_in_aggregates(sql: str) -> None:
    plan(sql, emit=EmitMode.FINAL)


def test_set_header_in_a_group_by_query_is_over_the_groups_values() -> None:
    p = plan(
        "SELECT sym, SET_HEADER('count', COUNT(*)) AS c FROM orders GROUP BY sym",
        emit=EmitMode.CHANGES,
    )
    assert p.set_headers == [("count", "c")]
    assert p.select_sql[1] == '__agg0 AS "c"'


INVALID: list[tuple[str, dict[str, object], str]] = [
    (
        "SELECT HEADER('t') AS t FROM orders",
        {"source": "file_source"},
        "HEADER reads Kafka message headers, but 'orders' is a file_source and has none: "
        "use it on a kafka_source",
    ),
    (
        "SELECT id FROM orders WHERE HAS_HEADER('t')",
        {"source": "file_source"},
        "HAS_HEADER reads Kafka message headers, but 'orders' is a file_source",
    ),
    ("SELECT HEADER_KEYS() FROM orders", {"source": "memory_source"}, "is a memory_source"),
    (
        "SELECT id, SET_HEADER('k', id) AS k FROM orders",
        {"sinks": ("file_sink",)},
        "SET_HEADER writes a Kafka message header, but 'out0' is a file_sink: write to a "
        "kafka_sink",
    ),
    (
        "SELECT id, SET_HEADER('k', id) AS k FROM orders",
        {"sinks": ("kafka_sink", "stdout_sink")},
        "'out1' is a stdout_sink",
    ),
    ("SELECT SET_HEADER('k', id) AS k FROM orders", {"sinks": ()}, "the job has no sink"),
    ("SELECT HEADER(id) FROM orders", {}, "must be a non-empty string literal"),
    (
        "SELECT id, REMOVE_HEADER('ssn') AS r FROM orders",
        {},
        "REMOVE_HEADER is not supported: select the headers to keep, as in "
        "list_filter(_headers, lambda h: h.key <> 'k') AS _headers",
    ),
    (
        "SELECT sym, HEADER('t') AS t FROM orders GROUP BY sym",
        {},
        "HEADER('t') in a GROUP BY query must be a group key (GROUP BY HEADER('t')) or inside "
        "an aggregate",
    ),
    ("SELECT HEADER_KEYS() AS k, COUNT(*) FROM orders", {}, "HEADER_KEYS() in a GROUP BY"),
    ("SELECT HEADER('') FROM orders", {}, "must be a non-empty string literal"),
    ("SELECT HEADER('a', 'b') FROM orders", {}, "HEADER takes 1 argument(s): write HEADER('key')"),
    ("SELECT HEADER_KEYS('a') FROM orders", {}, "HEADER_KEYS takes no argument(s)"),
    ("SELECT SET_HEADER('k') FROM orders", {}, "write SET_HEADER('key', value)"),
    ("SELECT SET_HEADER(id, id) FROM orders", {}, "must be a non-empty string literal"),
    (
        "SELECT UPPER(SET_HEADER('k', sym)) AS k FROM orders",
        {},
        "SET_HEADER must be a whole SELECT item",
    ),
    (
        "SELECT CASE WHEN id > 1 THEN SET_HEADER('k', 'a') ELSE SET_HEADER('k', 'b') END "
        "FROM orders",
        {},
        "SET_HEADER must be a whole SELECT item",
    ),
    ("SELECT id FROM orders WHERE SET_HEADER('k', id) = 1", {}, "whole SELECT item"),
    (
        "SELECT SET_HEADER('k', id) AS a, SET_HEADER('k', sym) AS b FROM orders",
        {},
        "SET_HEADER('k', ...) appears twice: set each header once",
    ),
]


@pytest.mark.parametrize(("sql", "kwargs", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_refused(sql: str, kwargs: dict[str, object], message: str) -> None:
    assert message in rejected(sql, **kwargs)


def test_refusal_is_placed_at_the_call_when_validating_an_application() -> None:
    text = (
        "CREATE STREAM out AS SELECT id, HEADER('t') AS t FROM src EMIT CHANGES WITH (\n"
        "  'src.type' = 'file_source', 'src.path' = 'in.csv', 'src.format' = 'csv',\n"
        "  'out.type' = 'kafka_sink', 'out.topic' = 'o', 'out.bootstrap.servers' = 'x:1');"
    )
    with pytest.raises(SqlValidationError) as caught:
        check_application(
            text, connectors=connector_catalog(), env={}, base_dir=Path.cwd(), source_name="app.sql"
        )
    (problem,) = caught.value.problems
    column = text.index("HEADER('t')") + 1
    assert problem.startswith(f"statement 1 (out) at 1:{column}: HEADER reads Kafka message")


def test_a_kafka_to_kafka_application_with_headers_validates() -> None:
    text = (
        "CREATE STREAM out AS SELECT id, HEADER('t') AS t, SET_HEADER('seen', 'yes') AS s "
        "FROM src WHERE HAS_HEADER('t') EMIT CHANGES WITH (\n"
        "  'src.type' = 'kafka_source', 'src.topic' = 'i', 'src.bootstrap.servers' = 'x:1',\n"
        "  'out.type' = 'kafka_sink', 'out.topic' = 'o', 'out.bootstrap.servers' = 'x:1');"
    )
    app = check_application(
        text, connectors=connector_catalog(), env={}, base_dir=Path.cwd(), source_name="app.sql"
    )
    assert [j.name for j in app.jobs] == ["out"]
