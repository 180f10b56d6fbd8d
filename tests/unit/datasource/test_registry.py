"""The registry: types by name, lazy imports, explicit registration, property helpers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pyarrow as pa
import pytest

import velostream.datasource as datasource
from velostream.datasource import registry
from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.datasource.stdout import StdoutSink
from velostream.datasource.traits import Sink, Source, SourceBatch
from velostream.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_extras() -> Iterator[None]:
    sources, sinks = dict(registry._extra_sources), dict(registry._extra_sinks)
    yield
    registry._extra_sources.clear()
    registry._extra_sources.update(sources)
    registry._extra_sinks.clear()
    registry._extra_sinks.update(sinks)


def test_public_names() -> None:
    assert sorted(datasource.__all__) == [
        "BadRecord",
        "RecordRefs",
        "Sink",
        "Source",
        "SourceBatch",
        "TransactionCapability",
        "create_sink",
        "create_source",
        "register_sink",
        "register_source",
        "sink_types",
        "source_types",
    ]


def test_builtin_types() -> None:
    assert datasource.source_types() == ["file_source", "kafka_source", "memory_source"]
    assert datasource.sink_types() == ["file_sink", "kafka_sink", "memory_sink", "stdout_sink"]


def test_creates_each_builtin(tmp_path: pytest.TempPathFactory) -> None:
    path = f"{tmp_path}/x.csv"
    open(path, "w").close()
    assert isinstance(datasource.create_source("a", "file_source", {"path": path}), FileSource)
    assert isinstance(datasource.create_source("a", " Memory_Source ", {}), MemorySource)
    assert isinstance(datasource.create_sink("b", "file_sink", {"path": path}), FileSink)
    assert isinstance(datasource.create_sink("b", "stdout_sink", {}), StdoutSink)
    assert isinstance(datasource.create_sink("b", "memory_sink", {}), MemorySink)


def test_unknown_source_type_names_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        datasource.create_source("trades", "parquet_source", {})
    assert str(info.value) == (
        "source 'trades': unknown type 'parquet_source'; "
        "valid types: file_source, kafka_source, memory_source"
    )
    assert info.value.source == "trades"


def test_unknown_sink_type_names_the_valid_ones() -> None:
    with pytest.raises(
        ConfigurationError, match="valid types: file_sink, kafka_sink, memory_sink, stdout_sink"
    ):
        datasource.create_sink("out", "s3_sink", {})


def test_register_decorators_add_and_override() -> None:
    @datasource.register_source("fake_source")
    class Fake(Source):
        def read_batch(self, max_records: int) -> SourceBatch | None:
            return None

    @datasource.register_sink("file_sink")
    class Capture(Sink):
        def write(self, table: pa.Table) -> None:
            pass

    assert "fake_source" in datasource.source_types()
    source = datasource.create_source("s", "FAKE_SOURCE", {"k": "v"})
    assert isinstance(source, Fake) and source.properties == {"k": "v"}
    assert isinstance(datasource.create_sink("o", "file_sink", {}), Capture)


def test_missing_optional_dependency_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._SOURCES, "kafka_source", "fake_kafka_lib.source:KafkaSource")
    monkeypatch.setitem(
        registry._INSTALL_HINTS, "fake_kafka_lib", "pip install 'velostream[kafka]'"
    )
    with pytest.raises(ConfigurationError) as info:
        datasource.create_source("k", "kafka_source", {})
    assert str(info.value) == (
        "'k': type 'kafka_source' needs 'fake_kafka_lib', which is not installed "
        "(pip install 'velostream[kafka]')"
    )
    assert isinstance(info.value.__cause__, ImportError)


def test_target_must_be_a_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._SOURCES, "odd", "velostream.datasource.memory:MemorySink")
    with pytest.raises(ConfigurationError, match="is not a Source"):
        datasource.create_source("x", "odd", {})


def test_importing_the_package_imports_no_connector() -> None:
    code = (
        "import sys, velostream.datasource\n"
        "loaded = [m for m in sys.modules if m.startswith('velostream.datasource.')]\n"
        "print(sorted(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "['velostream.datasource.registry', 'velostream.datasource.traits']"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("False", False), ("1", True), ("no", False), (" ON ", True)],
)
def test_bool_property(raw: str, expected: bool) -> None:
    assert registry.bool_property({"k": raw}, "k", not expected, name="s") is expected


def test_bool_property_rejects_other_values() -> None:
    with pytest.raises(ConfigurationError, match="'s': 'watch' must be true or false, not 'maybe'"):
        registry.bool_property({"watch": "maybe"}, "watch", False, name="s")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0), ("250", 0.25)],
)
def test_duration_property(raw: str, seconds: float) -> None:
    assert registry.duration_property({"k": raw}, "k", 9.0, name="s") == pytest.approx(seconds)


def test_duration_property_default_and_error() -> None:
    assert registry.duration_property({}, "k", 1.0, name="s") == 1.0
    with pytest.raises(ConfigurationError, match="must be a duration such as 500ms"):
        registry.duration_property({"k": "soon"}, "k", 1.0, name="s")


def test_choice_property() -> None:
    choices = {"csv": "csv", "json": "jsonl", "jsonl": "jsonl"}
    assert (
        registry.choice_property({"format": "JSON"}, "format", choices, "csv", name="s") == "jsonl"
    )
    with pytest.raises(
        ConfigurationError, match="unknown format 'xml'; valid values: csv, json, jsonl"
    ):
        registry.choice_property({"format": "xml"}, "format", choices, "csv", name="s")
