"""One registry for the runtime and for validation: what `connector_catalog()` hands SQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from velostream import datasource
from velostream.datasource.file.sink import FileSink
from velostream.datasource.traits import Sink, Source, SourceBatch
from velostream.datasource.validation import check_application
from velostream.errors import SqlValidationError
from velostream.sql import Application, ConnectorOptions, parse_application

pytestmark = pytest.mark.usefixtures("clean_registry")


def _app(props: str) -> str:
    return f"CREATE STREAM out AS SELECT * FROM src WITH ({props});\n"


def _check(text: str) -> Application:
    return check_application(text, base_dir=Path.cwd(), source_name="app.sql")


def _problems(text: str) -> list[str]:
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    return caught.value.problems


class _Quiet(Source):
    def read_batch(self, max_records: int) -> SourceBatch | None:
        return None


def test_builtin_types_in_the_order_messages_list_them() -> None:
    catalog = datasource.connector_catalog()
    assert catalog.types("source") == ("file_source", "kafka_source", "memory_source")
    assert catalog.types("sink") == ("file_sink", "kafka_sink", "stdout_sink", "memory_sink")
    assert catalog.option_check("source", "memory_source") is None
    assert catalog.option_check("sink", "file_sink") is not None


def test_an_unregistered_type_is_refused_naming_the_known_ones() -> None:
    text = _app("'src.type' = 'parquet_source', 'out.type' = 'memory_sink'")
    column = text.index("'src.type'") + 1
    assert _problems(text) == [
        f"statement 1 (out) at 1:{column}: source 'src': unknown type 'parquet_source'; "
        "valid source types: file_source, kafka_source, memory_source"
    ]


def test_a_registered_source_type_passes_validation() -> None:
    datasource.register_source("parquet_source")(_Quiet)
    app = _check(
        _app("'src.type' = 'Parquet_Source', 'src.path' = 'x', 'out.type' = 'memory_sink'")
    )
    source = app.jobs[0].sources[0]
    assert (source.type, source.properties) == ("parquet_source", {"path": str(Path.cwd() / "x")})
    # ... and is then listed among the known ones
    text = _app("'src.type' = 'avro_source', 'out.type' = 'memory_sink'")
    assert _problems(text)[0].endswith(
        "valid source types: file_source, kafka_source, memory_source, parquet_source"
    )


def test_a_registered_sink_type_passes_validation() -> None:
    @datasource.register_sink("null_sink")
    class Null(Sink):
        def write(self, table: pa.Table) -> None:
            pass

    app = _check(_app("'src.type' = 'memory_source', 'out.type' = 'null_sink'"))
    assert app.jobs[0].sinks[0].type == "null_sink"


def test_a_registered_type_checks_its_own_keys_at_their_position() -> None:
    def check(options: ConnectorOptions) -> None:
        options.require("path", "path")
        options.choice("compression", ("none", "snappy"), "none")
        options.warn_unknown({"path", "compression"})

    datasource.register_source("parquet_source", options=check)(_Quiet)
    text = _app(
        "'src.type' = 'parquet_source', 'src.compression' = 'lz4', 'out.type' = 'memory_sink'"
    )

    def at(needle: str) -> str:
        return f"statement 1 (out) at 1:{text.index(needle) + 1}: "

    assert _problems(text) == [
        at("'src.type'") + "source 'src' (parquet_source) needs a path: add 'src.path'",
        at("'src.compression'") + "source 'src' (parquet_source): unknown compression 'lz4'; "
        "valid values: none, snappy",
    ]
    valid = text.replace("'lz4'", "'SNAPPY', 'src.path' = 'p', 'src.colour' = 'red'")
    app = _check(valid)
    assert app.jobs[0].sources[0].properties == {
        "compression": "snappy",
        "path": str(Path.cwd() / "p"),
        "colour": "red",
    }
    column = valid.index("'src.colour'") + 1
    assert app.warnings == (
        f"statement 1 (out) at 1:{column}: source 'src' (parquet_source): unknown key 'colour' "
        "is ignored; known keys: compression, path",
    )


def test_overriding_a_builtin_class_keeps_its_key_check() -> None:
    datasource.register_sink("file_sink")(FileSink)
    problems = _problems(_app("'src.type' = 'memory_source', 'out.type' = 'file_sink'"))
    assert problems[0].endswith("sink 'out' (file_sink) needs a path: add 'out.path'")


def test_the_catalog_is_read_at_call_time() -> None:
    catalog = datasource.connector_catalog()
    datasource.register_source("late_source")(_Quiet)
    text = _app("'src.type' = 'late_source', 'out.type' = 'memory_sink'")
    with pytest.raises(SqlValidationError, match="unknown type 'late_source'"):
        parse_application(text, connectors=catalog)
    assert parse_application(text, connectors=datasource.connector_catalog()).jobs


def test_kafka_keys_validate_without_confluent_kafka() -> None:
    code = (
        "import sys\n"
        "sys.modules['confluent_kafka'] = None  # as if it were not installed\n"
        "from pathlib import Path\n"
        "from velostream.datasource.validation import check_application\n"
        "app = check_application(\n"
        "    \"CREATE STREAM out AS SELECT * FROM src WITH ('src.type' = 'kafka_source', \"\n"
        "    \"'src.brokers' = 'k:9092', 'out.type' = 'kafka_sink');\",\n"
        "    base_dir=Path.cwd(), source_name='app.sql')\n"
        "print(sorted(app.jobs[0].sources[0].properties.items()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "[('bootstrap.servers', 'k:9092'), ('group.id', 'velo-app-out'), ('topic', 'src'), "
        "('value.format', 'json')]"
    )
