"""SELECT DISTINCT at validation: what is accepted, what is refused and how it names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.sql.conftest import Parse, Problems, StatementFactory

from velostream.datasource.registry import connector_catalog
from velostream.errors import PlanError, SqlValidationError
from velostream.sql.check import check_application
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.plan import PlanKind
from velostream.sql.plan_distinct import unbounded_source
from velostream.sql.planner import plan_job


def _job(sql: str, source_type: str = "memory_source", **props: str) -> JobSpec:
    return JobSpec(
        name="job",
        statement_name="out",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=None,
        sources=(ConnectorConfig("t", source_type, dict(props)),),
        sinks=(ConnectorConfig("out", "memory_sink", {}),),
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT DISTINCT ON (k) k, v FROM t", "SELECT DISTINCT ON (...) is not supported"),
        ("SELECT DISTINCT k, COUNT(*) AS n FROM t GROUP BY k", "drop DISTINCT"),
        ("SELECT DISTINCT COUNT(*) AS n FROM t", "cannot be combined with GROUP BY"),
        (
            "SELECT DISTINCT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(et, 1s)",
            "a time window",
        ),
        (
            "SELECT DISTINCT k, LAG(v) OVER (ROWS WINDOW BUFFER 2 ROWS) AS p FROM t",
            "window functions (OVER)",
        ),
    ],
)
def test_distinct_is_refused_where_it_cannot_be_honoured(sql: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_job(_job(sql))
    assert message in str(caught.value)
    assert caught.value.offset == sql.index("DISTINCT")


@pytest.mark.parametrize(
    ("source_type", "props", "unbounded"),
    [
        ("kafka_source", {"topic": "x"}, "t (kafka_source)"),
        ("file_source", {"watch": "true"}, "t (file_source, watched)"),
        ("file_source", {"watch": "false"}, None),
        ("file_source", {}, None),
        ("memory_source", {}, None),
        ("memory_source", {"bounded": "false"}, "t (memory_source)"),
        ("some_future_source", {}, "t (some_future_source)"),
    ],
)
def test_which_sources_never_end(
    source_type: str, props: dict[str, str], unbounded: str | None
) -> None:
    assert unbounded_source(_job("SELECT k FROM t", source_type, **props)) == unbounded


def test_an_unbounded_source_needs_a_ttl() -> None:
    sql = "SELECT DISTINCT k FROM t"
    with pytest.raises(PlanError) as caught:
        plan_job(_job(sql, "kafka_source", topic="x"))
    assert "set 'distinct.ttl' (such as '1h')" in str(caught.value)
    job = _job(sql, "kafka_source", topic="x")
    job.properties["distinct.ttl"] = "1h"
    assert plan_job(job).kind == PlanKind.DISTINCT


def test_distinct_plans_its_event_time() -> None:
    job = _job("SELECT DISTINCT k FROM t")
    assert plan_job(job).distinct_time_sql is None
    job.properties["event.time.field"] = "et"
    assert plan_job(job).distinct_time_sql == '"et"'


def test_validation_refuses_distinct_on_kafka_without_a_ttl(tmp_path: Path) -> None:
    text = (
        "CREATE STREAM out AS SELECT DISTINCT k FROM src WITH ("
        "'src.type' = 'kafka_source', 'src.topic' = 'x', 'src.bootstrap.servers' = 'h:1', "
        "'src.value.format' = 'json', 'out.type' = 'memory_sink');\n"
    )
    with pytest.raises(SqlValidationError) as caught:
        check_application(
            text, connectors=connector_catalog(), base_dir=tmp_path, source_name="app.sql", env={}
        )
    (problem,) = caught.value.problems
    assert "at 1:29: SELECT DISTINCT on source src (kafka_source)" in problem, problem
    assert "set 'distinct.ttl'" in problem


def test_validation_accepts_distinct_with_a_ttl(parse: Parse, statement: StatementFactory) -> None:
    app = parse(statement(select="SELECT DISTINCT * FROM src", props="'distinct.ttl' = '90'"))
    assert app.jobs[0].properties["distinct.ttl"] == "90ms"
    assert app.warnings == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "distinct.ttl 'soon' is not a duration"), ("0s", "distinct.ttl must be above zero")],
)
def test_distinct_ttl_must_be_a_positive_duration(
    problems: Problems, statement: StatementFactory, value: str, message: str
) -> None:
    found = problems(
        statement(select="SELECT DISTINCT * FROM src", props=f"'distinct.ttl' = '{value}'")
    )
    assert len(found) == 1 and message in found[0], found


def test_a_ttl_without_distinct_is_refused() -> None:
    job = _job("SELECT k FROM t")
    job.properties["distinct.ttl"] = "1h"
    with pytest.raises(PlanError, match=r"'distinct\.ttl' is set but the SELECT is not DISTINCT"):
        plan_job(job)
