"""Annotations: application header, job annotations, defaults and metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from velostream.sql import Application, FailureStrategy, JobMode, MetricSpec

Parse = Callable[..., Application]
Problems = Callable[..., list[str]]
StatementFactory = Callable[..., str]


def test_application_annotations(parse: Parse, statement: StatementFactory) -> None:
    app = parse(
        '-- @app: risk\n-- @version: 2.0.1\n-- @description: "Risk checks"\n\n' + statement()
    )
    assert (app.name, app.version, app.description) == ("risk", "2.0.1", "Risk checks")
    assert app.jobs[0].version == "2.0.1"
    assert app.annotations == {"app": "risk", "version": "2.0.1", "description": "Risk checks"}
    assert app.jobs[0].annotations == {}
    assert app.warnings == ()


def test_header_defaults_apply_to_every_job(parse: Parse, statement: StatementFactory) -> None:
    header = (
        "-- @app: a\n-- @job_mode: transactional\n-- @batch_size: 250\n"
        "-- @failure_strategy: FailBatch\n-- @observability.metrics.enabled: false\n\n"
    )
    app = parse(header + statement("one") + statement("two"))
    for job in app.jobs:
        assert job.job_mode is JobMode.TRANSACTIONAL
        assert job.batch_size == 250
        assert job.failure_strategy is FailureStrategy.FAIL_BATCH
        assert job.metrics_enabled is False


def test_job_annotations_override_the_header_and_with_overrides_both(
    parse: Parse, statement: StatementFactory
) -> None:
    text = (
        "-- @app: a\n-- @batch_size: 250\n-- @failure_strategy: FailBatch\n\n"
        "-- @name: first_job\n-- @job_mode: transactional\n-- @batch_size: 10\n"
        "-- @failure_strategy: SendToDLQ\n-- @observability.metrics.enabled: false\n"
        + statement("one")
        + "-- @failure_strategy: LogAndContinue\n-- @batch_size: 20\n"
        + statement("two", props="'failure_strategy' = 'RetryWithBackoff', 'batch.size' = '30'")
        + statement("three")
    )
    one, two, three = parse(text).jobs
    assert (one.name, one.statement_name) == ("first_job", "one")
    assert one.job_mode is JobMode.TRANSACTIONAL
    assert (one.batch_size, one.failure_strategy) == (10, FailureStrategy.SEND_TO_DLQ)
    assert one.metrics_enabled is False
    assert one.annotations == {
        "name": "first_job",
        "job_mode": "transactional",
        "batch_size": "10",
        "failure_strategy": "SendToDLQ",
        "observability.metrics.enabled": "false",
    }
    assert two.job_mode is JobMode.SIMPLE
    assert (two.batch_size, two.failure_strategy) == (30, FailureStrategy.RETRY_WITH_BACKOFF)
    assert (three.batch_size, three.failure_strategy) == (250, FailureStrategy.FAIL_BATCH)
    assert three.metrics_enabled is True


def test_defaults_without_annotations(parse: Parse, statement: StatementFactory) -> None:
    job = parse(statement()).jobs[0]
    assert job.job_mode is JobMode.SIMPLE
    assert job.batch_size is None
    assert job.failure_strategy is FailureStrategy.LOG_AND_CONTINUE
    assert (job.max_retries, job.retry_backoff_ms) == (10, 500)
    assert job.version is None
    assert job.metrics == ()


@pytest.mark.parametrize(
    ("preamble", "app_mode", "first_mode"),
    [
        # one block touching the statement, no @app: it is the job's
        ("-- @job_mode: transactional\n", JobMode.SIMPLE, JobMode.TRANSACTIONAL),
        # one block separated by a blank line: it is the header
        ("-- @job_mode: transactional\n\n", JobMode.TRANSACTIONAL, JobMode.TRANSACTIONAL),
        # one block touching the statement that names the app: it is the header
        ("-- @app: a\n-- @job_mode: transactional\n", JobMode.TRANSACTIONAL, JobMode.TRANSACTIONAL),
        # header block, then a block before the statement (even after a blank line)
        ("-- @app: a\n\n-- @job_mode: transactional\n\n", JobMode.SIMPLE, JobMode.TRANSACTIONAL),
        # plain comments neither make nor split a header
        (
            "-- Copyright\n\n-- @app: a\n-- a note\n-- @job_mode: transactional\n\n",
            JobMode.TRANSACTIONAL,
            JobMode.TRANSACTIONAL,
        ),
    ],
)
def test_where_the_header_ends(
    parse: Parse,
    statement: StatementFactory,
    preamble: str,
    app_mode: JobMode,
    first_mode: JobMode,
) -> None:
    first, second = parse(preamble + statement("one") + statement("two")).jobs
    assert first.job_mode is first_mode
    assert second.job_mode is app_mode


def test_app_keys_always_go_to_the_app_and_job_keys_to_the_job(
    parse: Parse, statement: StatementFactory
) -> None:
    text = (
        "-- @app: a\n-- @name: renamed\n\n"
        + statement("one")
        + "-- @version: 3\n-- @name: two_renamed\n"
        + statement("two")
    )
    app = parse(text)
    assert (app.name, app.version) == ("a", "3")
    assert [job.name for job in app.jobs] == ["renamed", "two_renamed"]
    assert [job.version for job in app.jobs] == ["3", "3"]


def test_adaptive_job_mode_is_simple_with_a_warning(
    parse: Parse, statement: StatementFactory
) -> None:
    app = parse("-- @job_mode: adaptive\n" + statement())
    assert app.jobs[0].job_mode is JobMode.SIMPLE
    assert app.warnings == ("statement 1 (out) at 1:1: @job_mode: adaptive is run as simple",)


def test_error_reporting_cannot_be_switched_off(parse: Parse, statement: StatementFactory) -> None:
    app = parse("-- @observability.error_reporting.enabled: false\n" + statement())
    assert len(app.warnings) == 1
    assert "error reporting is always on" in app.warnings[0]
    assert app.warnings[0].startswith("statement 1 (out) at 1:1: ")
    assert parse("-- @observability.error_reporting.enabled: true\n" + statement()).warnings == ()


def test_metrics(parse: Parse, statement: StatementFactory) -> None:
    text = """\
        -- @metric: big_trades_total
        -- @metric_type: counter
        -- @metric_help: "Big trades seen"
        -- @metric_labels: symbol, band
        -- @metric_condition: price > 1000 AND band = 'HIGH'
        -- @metric: trade_notional
        -- @metric_type: histogram
        -- @metric_field: notional
        -- @metric_labels: symbol
        -- @metric_buckets: [100, 1000, 1e4]
        -- @metric: last_price
        -- @metric_type: Gauge
        -- @metric_field: price
    """
    job = parse(text + statement()).jobs[0]
    assert job.metrics == (
        MetricSpec(
            name="big_trades_total",
            type="counter",
            help="Big trades seen",
            labels=("symbol", "band"),
            condition="price > 1000 AND band = 'HIGH'",
        ),
        MetricSpec(
            name="trade_notional",
            type="histogram",
            labels=("symbol",),
            field="notional",
            buckets=(100.0, 1000.0, 10000.0),
        ),
        MetricSpec(name="last_price", type="gauge", field="price"),
    )
    assert job.annotations == {}


def test_the_same_metric_in_two_jobs_must_agree(
    problems: Problems, statement: StatementFactory
) -> None:
    text = (
        "-- @metric: seen\n-- @metric_labels: a\n"
        + statement("one")
        + "-- @metric: seen\n-- @metric_labels: b\n"
        + statement("two")
    )
    assert problems(text) == [
        "statement 2 (two) at 6:1: metric 'seen' is also defined by job 'one' "
        "with a different type or labels"
    ]


def test_annotations_in_odd_places_are_reported_as_warnings(
    parse: Parse, statement: StatementFactory
) -> None:
    text = (
        "-- @app without colon\n"
        "-- @flavour: vanilla\n"
        "/* @name: not_an_annotation */\n"
        "CREATE STREAM out AS\n-- @name: inside\n"
        "SELECT * FROM src WITH ('src.type'='memory_source', 'out.type'='memory_sink');\n"
        "-- @name: trailing\n"
    )
    app = parse(text)
    assert app.jobs[0].name == "out"
    assert app.jobs[0].annotations == {"flavour": "vanilla"}
    assert app.warnings == (
        "line 1:1: '-- @app without colon' is not an annotation: missing ':'",
        "statement 1 (out) at 2:1: unknown annotation @flavour is kept but not used",
        "line 5:1: annotation @name inside a statement is ignored",
        "line 7:1: annotation @name after the last statement is ignored",
    )


def test_variables_in_annotations(
    parse: Parse, problems: Problems, statement: StatementFactory
) -> None:
    text = "-- @app: a\n-- @version: ${APP_VERSION:dev}\n\n" + statement()
    assert parse(text).version == "dev"
    assert parse(text, env={"APP_VERSION": "7"}).version == "7"
    assert problems("-- @name: ${JOB}\n" + statement()) == [
        "statement 1 (out) at 1:1: undefined variable ${JOB} in @name",
    ]
