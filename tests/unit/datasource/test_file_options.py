"""The file connectors' WITH keys: one table each, read by validation and by the connectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.file import options, sink, source
from velostream.datasource.file.sink import FileSinkConfig
from velostream.datasource.file.source import FileSourceConfig
from velostream.datasource.registry import connector_catalog
from velostream.errors import ConfigurationError, SqlValidationError
from velostream.sql import parse_application


def _validated(delimiter: str) -> tuple[str, str]:
    """The delimiter a file source and a file sink get from validation."""
    app = parse_application(
        "CREATE STREAM out AS SELECT * FROM src WITH ("
        f"'src.type' = 'file_source', 'src.path' = 'in.csv', 'src.delimiter' = '{delimiter}', "
        f"'out.type' = 'file_sink', 'out.path' = 'out.csv', 'out.delimiter' = '{delimiter}')",
        connectors=connector_catalog(),
        env={},
    )
    job = app.jobs[0]
    return job.sources[0].properties["delimiter"], job.sinks[0].properties["delimiter"]


@pytest.mark.parametrize(("name", "char"), sorted(options.DELIMITER_NAMES.items()))
def test_each_named_delimiter_means_the_same_to_validation_and_to_the_connectors(
    name: str, char: str, tmp_path: Path
) -> None:
    assert _validated(name) == (char, char)
    assert _validated(name.upper()) == (char, char)
    path = str(tmp_path / "x.csv")
    assert (
        FileSourceConfig.from_properties("s", {"path": path, "delimiter": name}).delimiter == char
    )
    assert FileSinkConfig.from_properties("o", {"path": path, "delimiter": name}).delimiter == char


@pytest.mark.parametrize("delimiter", [";;", '"', "é", ""])
def test_an_invalid_delimiter_is_refused_by_validation_and_by_the_connectors(
    delimiter: str,
) -> None:
    assert options.parse_delimiter(delimiter) is None
    with pytest.raises(SqlValidationError, match="delimiter must be one ASCII character"):
        _validated(delimiter)
    with pytest.raises(ConfigurationError, match="delimiter must be one ASCII character"):
        FileSourceConfig.from_properties("s", {"path": "x", "delimiter": delimiter})
    with pytest.raises(ConfigurationError, match="delimiter must be one character"):
        FileSinkConfig.from_properties("o", {"path": "x", "delimiter": delimiter})


def test_the_connectors_keep_no_tables_of_their_own() -> None:
    for module in (source, sink):
        assert not hasattr(module, "_DELIMITER_NAMES")
    assert {"type", "pipeline.from", *options.SOURCE_KEYS} == source._KEYS  # sql/pipeline.py
    assert {"type", *options.SINK_KEYS} == sink._KEYS
    assert set(source._FORMATS.values()) == set(options.SOURCE_FORMATS)
    assert set(sink._FORMATS.values()) == set(options.SINK_FORMATS)
