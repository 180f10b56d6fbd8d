"""Every validation error class: message names the statement, line:column and the fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import ConfigurationError, SqlValidationError
from velostream.sql import Application, parse_application

Parse = Callable[..., Application]
Problems = Callable[..., list[str]]

SRC = "'src.type' = 'memory_source'"
OUT = "'out.type' = 'memory_sink'"


def _stmt(
    props: str = f"{SRC}, {OUT}",
    *,
    select: str = "SELECT * FROM src",
    tail: str = "",
    head: str = "CREATE STREAM out AS",
) -> str:
    return f"{head} {select} {tail} WITH ({props})".replace("  ", " ")


def _at(text: str, needle: str, line: int = 1, number: int = 1, name: str = "out") -> str:
    """The expected prefix of a problem located at `needle` on `line` of `text`."""
    column = text.split("\n")[line - 1].index(needle) + 1
    return f"statement {number} ({name}) at {line}:{column}: "


# (text, needle where the problem is reported, expected message after the prefix)
SINGLE_PROBLEMS = [
    # --- statement syntax
    (
        "INSERT INTO out SELECT * FROM src",
        "INSERT",
        "a statement must start with CREATE STREAM <name> AS SELECT ... or CREATE TABLE "
        "<name> AS SELECT ..., found 'INSERT'",
    ),
    (
        _stmt(head="CREATE VIEW out AS"),
        "VIEW",
        "expected STREAM or TABLE after CREATE, found 'VIEW'",
    ),
    (
        _stmt(head="CREATE STREAM AS"),
        "AS",
        "expected the statement's name after STREAM, found 'AS'",
    ),
    (_stmt(head="CREATE STREAM out"), "SELECT", "expected AS SELECT after 'out', found 'SELECT'"),
    (
        _stmt(head="CREATE STREAM out AS (", select="SELECT * FROM src)"),
        "(",
        "expected AS SELECT after 'out', found '('",
    ),
    (
        _stmt(select="SELECT COUNT(* FROM src"),
        "(",
        "unbalanced parenthesis: '(' is never closed",
    ),
    (
        _stmt(select="SELECT a) FROM src"),
        ")",
        "unbalanced parenthesis: ')' has no matching '('",
    ),
    (
        _stmt(tail="EMIT SOMETIMES"),
        "SOMETIMES",
        "EMIT must be followed by CHANGES or FINAL, found 'SOMETIMES'",
    ),
    (_stmt(tail="EMIT CHANGES EMIT FINAL"), "EMIT FINAL", "EMIT is given twice"),
    (
        _stmt(tail="EMIT CHANGES WHERE a > 1"),
        "WHERE",
        "unexpected 'WHERE': only EMIT CHANGES|FINAL and WITH ( ... ) may follow the SELECT",
    ),
    (
        _stmt() + " WITH ('a' = '1')",
        "WITH ('a'",
        "WITH ( ... ) is given twice",
    ),
    (
        _stmt(tail="WITH 'a' = '1'"),
        "WITH 'a'",
        "unexpected 'WITH': the WITH must be followed by ( 'key' = 'value', ... )",
    ),
    (
        _stmt(select="SELECT 1 AS one"),
        "SELECT",
        "the SELECT has no FROM source: a job reads from a source named in FROM and "
        "configured in WITH",
    ),
    (
        _stmt(select="SELECT * FROM src JOIN read_csv('/etc/passwd') p ON true"),
        "read_csv",
        "table function read_csv(...) in FROM is not supported: read from a source named in "
        "FROM and configured in WITH",
    ),
    (
        _stmt(select="SELECT * FROM src, '/etc/passwd'"),
        "'/etc",
        "reading '/etc/passwd' directly is not supported: name a source in FROM and configure "
        "it in WITH",
    ),
    (
        _stmt(select="SELECT * FROM src JOIN db.t ON true"),
        "db.t",
        "qualified name 'db.t' is not supported: name the source with a plain identifier",
    ),
    # --- PRIMARY KEY
    (
        _stmt(select="SELECT a FROM src GROUP BY a PRIMARY KEY"),
        "PRIMARY",
        "PRIMARY KEY is only allowed after a column of the outer SELECT list: "
        "'col PRIMARY KEY' or 'expr AS alias PRIMARY KEY'",
    ),
    (
        _stmt(select="SELECT a + 1 PRIMARY KEY FROM src"),
        "PRIMARY",
        "PRIMARY KEY must follow a column name or 'expression AS alias', found 'a + 1'",
    ),
    (
        _stmt(select="SELECT a PRIMARY KEY, b AS a PRIMARY KEY FROM src"),
        "PRIMARY KEY FROM",
        "column 'a' is marked PRIMARY KEY twice",
    ),
    # --- WITH syntax
    (
        _stmt(f"{SRC}, {OUT}, batch.size = '1'"),
        "batch.size",
        "property keys must be single-quoted strings such as 'trades.type', found 'batch.size'",
    ),
    (_stmt(f"{SRC}, {OUT}, 'a' '1'"), "'a'", "expected '=' after property key 'a'"),
    (_stmt(f"{SRC}, {OUT}, 'a' ="), "'a'", "property 'a' has no value"),
    (
        _stmt(f"{SRC}, {OUT}, 'a' = SendToDLQ"),
        "'a'",
        "value of property 'a' must be a single-quoted string (or a bare number, true or "
        "false), found 'SendToDLQ'",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'src.type' = 'file_source'"),
        "'src.type' = 'file_source'",
        "property 'src.type' is given twice (first at 1:46)",
    ),
    (
        _stmt(f"{SRC}, {OUT} 'a' = '1'"),
        "'a'",
        "expected ',' or ')' after property 'out.type', found \"'a'\"",
    ),
    # --- connectors
    (
        _stmt(OUT),
        "src ",
        "source 'src' has no type: add 'src.type' = one of file_source, kafka_source, "
        "memory_source",
    ),
    (
        _stmt(SRC),
        "CREATE",
        "sink 'out' has no type: add 'out.type' = one of file_sink, kafka_sink, stdout_sink, "
        "memory_sink",
    ),
    (
        _stmt(f"'src.type' = 'csv_source', {OUT}"),
        "'src.type'",
        "source 'src': unknown type 'csv_source'; valid source types: file_source, "
        "kafka_source, memory_source",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'file_source'"),
        "'out.type'",
        "sink 'out': unknown type 'file_source'; valid sink types: file_sink, kafka_sink, "
        "stdout_sink, memory_sink",
    ),
    (
        _stmt(f"'src.type' = 'file_source', {OUT}"),
        "'src.type'",
        "source 'src' (file_source) needs a path: add 'src.path'",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'file_sink'"),
        "'out.type'",
        "sink 'out' (file_sink) needs a path: add 'out.path'",
    ),
    (
        _stmt(f"'src.type' = 'file_source', 'src.path' = 'a', 'src.format' = 'xml', {OUT}"),
        "'src.format'",
        "source 'src' (file_source): unknown format 'xml'; valid values: csv, csv_no_header, jsonl",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'file_sink', 'out.path' = 'a', 'out.format' = 'csv_no_header'"),
        "'out.format'",
        "sink 'out' (file_sink): unknown format 'csv_no_header'; valid values: csv, jsonl",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'stdout_sink', 'out.format' = 'parquet'"),
        "'out.format'",
        "sink 'out' (stdout_sink): unknown format 'parquet'; valid values: csv, jsonl, table",
    ),
    (
        _stmt(f"'src.type' = 'kafka_source', 'src.value.format' = 'avro', {OUT}"),
        "'src.value.format'",
        "source 'src' (kafka_source): unknown value.format 'avro'; valid values: json, string, "
        "bytes",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'kafka_sink', 'out.value.serializer' = 'protobuf'"),
        "'out.value.serializer'",
        "sink 'out' (kafka_sink): unknown value.format 'protobuf'; valid values: json, string, "
        "bytes",
    ),
    (
        _stmt(f"'src.type' = 'file_source', 'src.path' = 'a', 'src.watch' = 'maybe', {OUT}"),
        "'src.watch'",
        "source 'src' (file_source): unknown watch 'maybe'; valid values: true, false",
    ),
    (
        _stmt(f"'src.type' = 'file_source', 'src.path' = 'a', 'src.delimiter' = ';;', {OUT}"),
        "'src.delimiter'",
        "source 'src' (file_source): delimiter must be one ASCII character other than a quote "
        "or a line break (or one of: \\t, tab, comma, semicolon, pipe)",
    ),
    (
        _stmt(
            f"'src.type' = 'file_source', 'src.path' = 'a', 'src.polling_interval' = 'often', {OUT}"
        ),
        "'src.polling_interval'",
        "source 'src' (file_source): polling_interval 'often' is not a duration such as "
        "'100ms', '5s', '1m' (units: ms, s, m, h, d)",
    ),
    (
        _stmt(f"{SRC}, 'out.type' = 'memory_sink'", select="SELECT * FROM src JOIN out ON true"),
        "CREATE",
        "statement 'out' reads its own output",
    ),
    # --- job-wide keys
    (
        _stmt(f"{SRC}, {OUT}, 'failure_strategy' = 'Retry'"),
        "'failure_strategy'",
        "unknown failure_strategy 'Retry'; valid values: LogAndContinue, SendToDLQ, FailBatch, "
        "RetryWithBackoff",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'max_retries' = '-1'"),
        "'max_retries'",
        "max_retries must be an integer >= 0, found '-1'",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'retry_backoff_ms' = 0"),
        "'retry_backoff_ms'",
        "retry_backoff_ms must be an integer >= 1, found '0'",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'batch.size' = '1_000'"),
        "'batch.size'",
        "batch.size must be an integer >= 1, found '1_000'",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'watermark.max_out_of_orderness' = '5 parsecs'"),
        "'watermark",
        "watermark.max_out_of_orderness '5 parsecs' is not a duration such as '100ms', '5s', "
        "'1m' (units: ms, s, m, h, d)",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'late.data.strategy' = 'keep'"),
        "'late.data.strategy'",
        "unknown late.data.strategy 'keep'; valid values: drop, dead_letter",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'dlq.type' = 's3'"),
        "'dlq.type'",
        "unknown dlq.type 's3'; valid values: file, kafka, memory",
    ),
    (
        _stmt(f"{SRC}, {OUT}, 'event.time.field' = ' '"),
        "'event.time.field'",
        "event.time.field must name a column",
    ),
    # --- variables
    (
        _stmt(select="SELECT * FROM src WHERE a > ${LIMIT}"),
        "${LIMIT}",
        "undefined variable ${LIMIT}: set it in the environment or give a default as "
        "${LIMIT:default}",
    ),
]


@pytest.mark.parametrize(("text", "needle", "message"), SINGLE_PROBLEMS)
def test_each_problem_names_statement_position_and_fix(
    problems: Problems, text: str, needle: str, message: str
) -> None:
    name = "out" if "CREATE STREAM out" in text else "?"
    assert problems(text) == [_at(text, needle, name=name) + message]


ANNOTATION_PROBLEMS = [
    (
        "-- @job_mode: turbo",
        1,
        "unknown @job_mode 'turbo'; valid values: simple, transactional, adaptive",
    ),
    ("-- @batch_size: 0", 1, "@batch_size must be an integer >= 1, found '0'"),
    (
        "-- @failure_strategy: Maybe",
        1,
        "unknown @failure_strategy 'Maybe'; valid values: LogAndContinue, SendToDLQ, FailBatch, "
        "RetryWithBackoff",
    ),
    (
        "-- @observability.metrics.enabled: sometimes",
        1,
        "unknown @observability.metrics.enabled 'sometimes'; valid values: true, false",
    ),
    (
        "-- @name: ../etc",
        1,
        "@name '../etc' is not a valid name: use letters, digits, '_', '.' and '-', starting "
        "with a letter, digit or '_'",
    ),
    ("-- @metric_type: counter", 1, "@metric_type must follow the @metric it describes"),
    (
        "-- @metric: bad-name",
        1,
        "metric name 'bad-name' is invalid: it must match [a-zA-Z_:][a-zA-Z0-9_:]*",
    ),
    (
        "-- @metric: m\n-- @metric_type: summary",
        2,
        "unknown @metric_type 'summary'; valid values: counter, gauge, histogram",
    ),
    (
        "-- @metric: m\n-- @metric_labels: ok, __reserved",
        2,
        "metric 'm': label name '__reserved' is invalid: it must match [a-zA-Z_][a-zA-Z0-9_]* "
        "and not start with '__'",
    ),
    (
        "-- @metric: m\n-- @metric_labels: ok, 1st",
        2,
        "metric 'm': label name '1st' is invalid: it must match [a-zA-Z_][a-zA-Z0-9_]* and not "
        "start with '__'",
    ),
    ("-- @metric: m\n-- @metric_labels: a, a", 2, "metric 'm': label 'a' is listed twice"),
    (
        "-- @metric: m\n-- @metric_type: gauge",
        1,
        "gauge metric 'm' needs @metric_field (the value to observe)",
    ),
    (
        "-- @metric: m\n-- @metric_buckets: [1, 2]",
        2,
        "metric 'm': @metric_buckets only applies to histograms",
    ),
    (
        "-- @metric: m\n-- @metric_type: histogram\n-- @metric_field: v\n"
        "-- @metric_buckets: [2, 1]",
        4,
        "metric 'm': @metric_buckets '[2, 1]' must be a list of finite, increasing numbers such "
        "as [0.1, 0.5, 1, 5]",
    ),
    (
        "-- @metric: m\n-- @metric_type: histogram\n-- @metric_field: v\n-- @metric_buckets: [a]",
        4,
        "metric 'm': @metric_buckets '[a]' must be a list of finite, increasing numbers such "
        "as [0.1, 0.5, 1, 5]",
    ),
    (
        "-- @metric: m\n-- @metric_help: a\n-- @metric_help: b",
        3,
        "@metric_help is given twice for metric 'm'",
    ),
    ("-- @metric: m\n-- @metric: m", 2, "metric 'm' is defined twice in this job"),
    (
        "-- @job_mode: simple\n-- @job_mode: transactional",
        2,
        "@job_mode is given twice with different values ('simple' at 1:1, 'transactional' here)",
    ),
]


@pytest.mark.parametrize(("annotations", "line", "message"), ANNOTATION_PROBLEMS)
def test_each_annotation_problem(
    problems: Problems, annotations: str, line: int, message: str
) -> None:
    assert problems(annotations + "\n" + _stmt()) == [f"statement 1 (out) at {line}:1: {message}"]


def test_application_header_problems_are_file_level(problems: Problems) -> None:
    assert problems("-- @app: my app\n-- @job_mode: fast\n\n" + _stmt()) == [
        "line 1:1: @app 'my app' is not a valid name: use letters, digits, '_', '.' and '-', "
        "starting with a letter, digit or '_'",
        "line 2:1: unknown @job_mode 'fast'; valid values: simple, transactional, adaptive",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1:1: empty application: no CREATE STREAM or CREATE TABLE statement found"),
        (
            "-- @app: a\n/* only comments */\n;\n",
            "line 1:1: empty application: no CREATE STREAM or CREATE TABLE statement found",
        ),
        ("-- fine\n/* never closed", "line 2:1: comment '/*' is never closed with '*/'"),
        (
            "CREATE STREAM out AS SELECT 'abc FROM src",
            "statement 1 (out) at 1:29: string literal starting here is never closed with '",
        ),
        (
            'CREATE STREAM out AS SELECT "abc FROM src',
            'statement 1 (out) at 1:29: quoted identifier starting here is never closed with "',
        ),
    ],
)
def test_file_level_and_unterminated_problems(problems: Problems, text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_missing_semicolon_between_statements(problems: Problems) -> None:
    text = _stmt() + "\n" + _stmt()
    assert problems(text) == [
        "statement 1 (out) at 2:1: unexpected 'CREATE': is a ';' missing before it?"
    ]
    text = "CREATE STREAM out AS SELECT * FROM src\nCREATE STREAM b AS SELECT 1"
    assert problems(text) == [
        "statement 1 (out) at 2:1: CREATE inside a statement: is a ';' missing before it?"
    ]


def test_duplicate_job_names(problems: Problems) -> None:
    text = _stmt() + ";\n" + _stmt() + ";\n-- @name: out\n" + _stmt().replace("out", "other")
    assert problems(text) == [
        "statement 2 (out) at 2:1: duplicate job name 'out' (already used by the statement at 1:1)",
        "statement 3 (other) at 4:1: duplicate job name 'out' "
        "(already used by the statement at 1:1)",
    ]


def test_every_problem_of_every_statement_is_reported_at_once(problems: Problems) -> None:
    text = (
        "-- @job_mode: turbo\n"
        + _stmt("'src.type' = 'nope', 'out.type' = 'file_sink'")
        + ";\nSELECT 1;\n"
        + _stmt(f"{SRC}, {OUT}, 'max_retries' = 'many'", tail="EMIT LATER").replace("out", "b")
    )
    found = problems(text)
    assert [p.split(": ", 1)[0] for p in found] == [
        "statement 1 (out) at 1:1",
        "statement 1 (out) at 2:46",
        "statement 1 (out) at 2:67",
        "statement 2 (?) at 3:1",
        "statement 3 (b) at 4:43",
        "statement 3 (b) at 4:111",
    ]


def test_the_error_carries_a_readable_summary(statement: Callable[..., str]) -> None:
    with pytest.raises(SqlValidationError) as caught:
        parse_application(
            "SELECT 1", connectors=connector_catalog(), env={}, source_name="apps/x.sql"
        )
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert str(error) == (
        "apps/x.sql: 1 problem found:\n  statement 1 (?) at 1:1: a statement must start with "
        "CREATE STREAM <name> AS SELECT ... or CREATE TABLE <name> AS SELECT ..., found 'SELECT'"
    )
