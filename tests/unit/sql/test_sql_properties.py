"""WITH properties: scoping, ${VAR} substitution, config files, connectors, job-wide keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from velostream.sql import Application, ConnectorConfig
from velostream.sql.properties import resolve_path

Parse = Callable[..., Application]
Problems = Callable[..., list[str]]
StatementFactory = Callable[..., str]


def _one_line(props: str, *, select: str = "SELECT * FROM trades", name: str = "out") -> str:
    return f"CREATE STREAM {name} AS {select} WITH ({props})"


def test_keys_are_scoped_to_sources_and_the_sink(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'kafka_source', 'trades.bootstrap.servers' = 'b:9092', "
        "'trades.topic' = 'raw', 'Out.type' = 'kafka_sink', 'out.topic' = 'big', "
        "'out.acks' = 'all', 'dlq.path' = '/tmp/dlq.jsonl', 'max_retries' = 3, "
        "'retry_backoff_ms' = '250', 'batch.size' = 1000"
    )
    app = parse(text, source_name="app.sql")
    job = app.jobs[0]
    assert job.sources == (
        ConnectorConfig(
            "trades",
            "kafka_source",
            {
                "bootstrap.servers": "b:9092",
                "topic": "raw",
                "group.id": "velo-app-out",
                "value.format": "json",
            },
        ),
    )
    assert job.sinks == (
        ConnectorConfig(
            "out", "kafka_sink", {"topic": "big", "acks": "all", "value.format": "json"}
        ),
    )
    assert job.properties == {
        "dlq.path": "/tmp/dlq.jsonl",
        "max_retries": "3",
        "retry_backoff_ms": "250",
        "batch.size": "1000",
    }
    assert (job.max_retries, job.retry_backoff_ms, job.batch_size) == (3, 250, 1000)
    assert app.warnings == ()


def test_kafka_aliases_and_defaults(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'kafka_source', 'trades.brokers' = 'k:1', 'trades.topic.name' = 't', "
        "'trades.value.serializer' = 'STRING', 'trades.group.id' = 'mine', "
        "'out.type' = 'kafka_sink', 'out.value.format' = 'bytes'"
    )
    source, sink = parse(text).jobs[0].sources[0], parse(text).jobs[0].sinks[0]
    assert source.properties == {
        "bootstrap.servers": "k:1",
        "topic": "t",
        "value.format": "string",
        "group.id": "mine",
    }
    assert sink.properties == {"value.format": "bytes", "topic": "out"}


def test_a_kafka_alias_conflicting_with_its_canonical_key_warns(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'kafka_source', 'trades.brokers' = 'a:1', "
        "'trades.bootstrap.servers' = 'b:1', 'out.type' = 'memory_sink'"
    )
    app = parse(text)
    assert app.jobs[0].sources[0].properties["bootstrap.servers"] == "b:1"
    column = text.index("'trades.brokers'") + 1
    assert app.warnings == (
        f"statement 1 (out) at 1:{column}: source 'trades' (kafka_source): "
        "'bootstrap.servers' wins over 'brokers'",
    )


@pytest.mark.parametrize(
    ("given", "normalised"),
    [("csv", "csv"), ("CSV_NO_HEADER", "csv_no_header"), ("json", "jsonl"), ("jsonlines", "jsonl")],
)
def test_file_source_formats(parse: Parse, given: str, normalised: str) -> None:
    text = _one_line(
        f"'trades.type' = 'file_source', 'trades.path' = 'in/*.dat', 'trades.format' = '{given}', "
        "'out.type' = 'memory_sink'"
    )
    assert parse(text).jobs[0].sources[0].properties["format"] == normalised


def test_file_connector_defaults_and_options(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'file_source', 'trades.path' = 'in.jsonl', 'trades.watch' = TRUE, "
        "'trades.polling_interval' = '250ms', 'trades.delimiter' = '\\t', "
        "'out.type' = 'file_sink', 'out.path' = 'out.csv', 'out.append' = 'False'"
    )
    job = parse(text).jobs[0]
    assert job.sources[0].properties == {
        "path": str(Path.cwd() / "in.jsonl"),
        "format": "jsonl",
        "watch": "true",
        "polling_interval": "250ms",
        "delimiter": "\t",
    }
    assert job.sinks[0].properties == {
        "path": str(Path.cwd() / "out.csv"),
        "format": "csv",
        "append": "false",
    }


@pytest.mark.parametrize(
    ("given", "flag", "delimiter"),
    [("yes", "true", "tab"), ("0", "false", "pipe"), ("OFF", "false", ";"), ("on", "true", "\\t")],
)
def test_boolean_and_delimiter_spellings(
    parse: Parse, given: str, flag: str, delimiter: str
) -> None:
    text = _one_line(
        f"'trades.type' = 'file_source', 'trades.path' = 'a.csv', 'trades.watch' = '{given}', "
        f"'trades.delimiter' = '{delimiter}', 'out.type' = 'memory_sink'"
    )
    properties = parse(text).jobs[0].sources[0].properties
    assert properties["watch"] == flag
    assert properties["delimiter"] in ("\t", "|", ";")


def test_stdout_sink_formats(parse: Parse) -> None:
    base = "'trades.type' = 'memory_source', 'out.type' = 'stdout_sink'"
    assert parse(_one_line(base)).jobs[0].sinks[0].properties == {"format": "jsonl"}
    table = parse(_one_line(base + ", 'out.format' = 'table'")).jobs[0].sinks[0]
    assert table.properties == {"format": "table"}


def test_job_wide_event_time_and_late_data(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'memory_source', 'out.type' = 'memory_sink', "
        "'event.time.field' = 'ts', 'watermark.max_out_of_orderness' = '5s', "
        "'late.data.strategy' = 'dead_letter', 'dlq.topic' = 'dead'"
    )
    job = parse(text).jobs[0]
    assert job.properties["watermark.max_out_of_orderness"] == "5s"
    assert job.event_time_field == "ts"
    assert job.max_out_of_orderness_ms == 5000
    assert job.late_data_strategy == "dead_letter"
    assert job.properties["dlq.type"] == "kafka"


def test_job_resource_limits(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'memory_source', 'out.type' = 'memory_sink', "
        "'job.memory.limit' = '512MiB', 'job.batch.timeout' = '2.5s'"
    )
    app = parse(text)
    job = app.jobs[0]
    assert (job.memory_limit_bytes, job.batch_timeout_ms) == (512 * 1024**2, 2500)
    assert app.warnings == ()
    assert (
        parse(_one_line("'trades.type' = 'memory_source', 'out.type' = 'memory_sink'"))
        .jobs[0]
        .memory_limit_bytes
    ) is None


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ("'job.memory.limit' = 'lots'", "job.memory.limit: invalid size 'lots'"),
        ("'job.memory.limit' = '0'", "job.memory.limit: invalid size '0'"),
        ("'job.batch.timeout' = 'soon'", "job.batch.timeout 'soon' is not a duration"),
        ("'job.batch.timeout' = '0s'", "job.batch.timeout must be above zero"),
    ],
)
def test_job_resource_limits_must_be_sizes_and_durations(
    problems: Problems, props: str, message: str
) -> None:
    found = problems(
        _one_line(f"'trades.type' = 'memory_source', 'out.type' = 'memory_sink', {props}")
    )
    assert len(found) == 1 and message in found[0], found


def test_a_bare_duration_is_milliseconds_and_gets_its_unit(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'memory_source', 'out.type' = 'memory_sink', "
        "'watermark.max_out_of_orderness' = 250"
    )
    job = parse(text).jobs[0]
    assert job.max_out_of_orderness_ms == 250
    assert job.properties["watermark.max_out_of_orderness"] == "250ms"


def test_unknown_keys_are_kept_with_a_warning(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'file_source', 'trades.path' = 'a.csv', 'trades.pth' = 'x', "
        "'out.type' = 'memory_sink', 'parallelism' = '4', 'tradez.type' = 'file_source'"
    )
    app = parse(text)
    assert app.jobs[0].properties == {"parallelism": "4", "tradez.type": "file_source"}

    def at(key: str) -> str:
        return f"statement 1 (out) at 1:{text.index(key) + 1}: "

    assert app.warnings == (
        at("'trades.pth'") + "source 'trades' (file_source): unknown key 'pth' is ignored; "
        "known keys: delimiter, format, has_headers, max.record.bytes, path, polling_interval, "
        "watch",
        at("'parallelism'") + "unknown job-wide property 'parallelism' is kept but not used",
        at("'tradez.type'") + "property 'tradez.type' is not used: 'tradez' is neither "
        "a source in FROM/JOIN nor the statement's name",
    )


# ---------------------------------------------------------------------------
# ${VAR}


def test_variables_are_substituted_everywhere(parse: Parse) -> None:
    text = (
        "CREATE STREAM out AS SELECT * FROM trades WHERE price > ${MIN_PRICE:100} "
        "AND venue = '${VENUE}' WITH ('trades.type' = '${SRC_TYPE:memory_source}', "
        "'out.type' = 'file_sink', 'out.path' = '${OUT_DIR}/out.csv')"
    )
    job = parse(text, env={"VENUE": "XNYS", "OUT_DIR": "/data"}).jobs[0]
    assert job.select_sql == "SELECT * FROM trades WHERE price > 100 AND venue = 'XNYS'"
    assert job.sources[0].type == "memory_source"
    assert job.sinks[0].properties["path"] == "/data/out.csv"
    # the environment wins over the default; an empty default is allowed
    job = parse(text.replace("${VENUE}", "${VENUE:}"), env={"MIN_PRICE": "5", "OUT_DIR": "."}).jobs[
        0
    ]
    assert job.select_sql == "SELECT * FROM trades WHERE price > 5 AND venue = ''"
    # the statement's text stays as written: no secrets in job listings
    assert "${OUT_DIR}" in job.text


def test_defaults_may_contain_colons(parse: Parse) -> None:
    text = _one_line(
        "'trades.type' = 'kafka_source', 'trades.bootstrap.servers' = '${BROKERS:localhost:9092}',"
        " 'out.type' = 'memory_sink'"
    )
    assert parse(text).jobs[0].sources[0].properties["bootstrap.servers"] == "localhost:9092"


def test_environment_defaults_to_the_process_environment(
    statement: StatementFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from velostream.datasource.registry import connector_catalog
    from velostream.sql import parse_application

    monkeypatch.setenv("VELO_TEST_COLUMN", "price")
    text = statement(select="SELECT ${VELO_TEST_COLUMN} FROM src")
    app = parse_application(text, connectors=connector_catalog())
    assert app.jobs[0].select_sql == "SELECT price FROM src"


def test_variables_in_comments_are_left_alone(parse: Parse, statement: StatementFactory) -> None:
    assert parse("-- uses ${NOT_SET}\n/* ${NOR_THIS} */\n" + statement()).jobs[0].name == "out"


def test_undefined_variables_are_problems_naming_them(problems: Problems) -> None:
    text = "CREATE STREAM out AS SELECT ${COLS} FROM trades\nWITH ('trades.path' = '${DIR}/x')"
    found = problems(text)
    assert (
        "statement 1 (out) at 1:29: undefined variable ${COLS}: set it in the environment "
        "or give a default as ${COLS:default}"
    ) in found
    assert (
        "statement 1 (out) at 2:24: undefined variable ${DIR}: set it in the environment "
        "or give a default as ${DIR:default}"
    ) in found


# ---------------------------------------------------------------------------
# config_file


def test_config_file_with_extends_and_overrides(parse: Parse, tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.yaml").write_text(
        "bootstrap:\n  servers: base:9092\nvalue.format: json\nsession:\n  timeout:\n    ms: 6000\n"
        "topic: base_topic\n"
    )
    (tmp_path / "conf" / "trades.yaml").write_text(
        "extends: base.yaml\ntype: kafka_source\ntopic: trades\nauto.offset.reset: earliest\n"
        "enable.auto.commit: false\nbrokers_list: [a, b]\ngroup.id: ${GROUP:g1}\n"
    )
    text = _one_line(
        "'trades.config_file' = 'conf/trades.yaml', 'trades.auto.offset.reset' = 'latest', "
        "'out.type' = 'memory_sink'"
    )
    source = parse(text, base_dir=tmp_path).jobs[0].sources[0]
    assert source == ConnectorConfig(
        "trades",
        "kafka_source",
        {
            "bootstrap.servers": "base:9092",
            "value.format": "json",
            "session.timeout.ms": "6000",
            "topic": "trades",
            "auto.offset.reset": "latest",
            "enable.auto.commit": "false",
            "brokers_list": "a,b",
            "group.id": "g1",
        },
    )


def test_config_file_for_the_sink_and_an_absolute_path(parse: Parse, tmp_path: Path) -> None:
    path = tmp_path / "sink.yml"
    path.write_text("type: file_sink\npath: out.jsonl\n")
    text = _one_line(f"'trades.type' = 'memory_source', 'out.config_file' = '{path}'")
    # The one rule: a relative path is the application's, even from a config file.
    assert parse(text).jobs[0].sinks[0] == ConnectorConfig(
        "out", "file_sink", {"path": str(Path.cwd() / "out.jsonl"), "format": "jsonl"}
    )


def test_relative_paths_are_taken_from_the_application_folder(parse: Parse, tmp_path: Path) -> None:
    text = _one_line(
        "'trades.type' = 'file_source', 'trades.path' = './data/in/*.csv', "
        "'out.type' = 'file_sink', 'out.path' = '/abs/out.csv', "
        "'dlq.path' = '../dead/letters.jsonl'"
    )
    job = parse(text, base_dir=tmp_path / "app").jobs[0]
    assert job.sources[0].properties["path"] == str(tmp_path / "app" / "data/in/*.csv")
    assert job.sinks[0].properties["path"] == "/abs/out.csv"
    assert job.properties["dlq.path"] == str(tmp_path / "app" / "../dead/letters.jsonl")


@pytest.mark.parametrize("value", ["/abs/x.csv", "~/x.csv", "", "  ", "s3://bucket/x.csv"])
def test_absolute_home_blank_and_url_paths_stay_as_given(value: str, tmp_path: Path) -> None:
    assert resolve_path(value, tmp_path) == value


def test_a_relative_base_dir_is_made_absolute(
    parse: Parse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = _one_line("'trades.type' = 'memory_source', 'out.type' = 'file_sink', 'out.path' = 'o'")
    assert parse(text, base_dir=Path("app")).jobs[0].sinks[0].properties["path"] == str(
        tmp_path / "app" / "o"
    )


def test_config_file_problems_name_the_file(problems: Problems, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\ntype: memory_source\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    (tmp_path / "bad.yaml").write_text("type: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "var.yaml").write_text("type: ${NOPE}\n")
    found = problems(
        "CREATE STREAM out AS SELECT * FROM s1 JOIN s2 ON 1=1 JOIN s3 ON 1=1 JOIN s4 ON 1=1 "
        "JOIN s5 ON 1=1 WITH (\n"
        "'s1.config_file' = 'missing.yaml',\n"
        "'s2.config_file' = 'a.yaml',\n"
        "'s3.config_file' = 'bad.yaml',\n"
        "'s4.config_file' = 'list.yaml',\n"
        "'s5.config_file' = 'var.yaml',\n"
        "'out.type' = 'memory_sink')",
        base_dir=tmp_path,
    )
    messages = "\n".join(found)
    assert f"statement 1 (out) at 2:1: config file {tmp_path / 'missing.yaml'} not found" in found
    assert "at 3:1: config file cycle through 'extends': " in messages
    assert f"{(tmp_path / 'a.yaml').resolve()} -> " in messages
    assert f"at 4:1: config file {tmp_path / 'bad.yaml'} is not valid YAML" in messages
    assert f"at 5:1: config file {tmp_path / 'list.yaml'} must hold a mapping" in messages
    assert f"at 6:1: config file {tmp_path / 'var.yaml'}: undefined variable ${{NOPE}}" in messages
