"""Validation binds each job to its source's columns, sampled as the source would read them.

On main these applications validated and then failed in their first batch with a raw
DuckDB Binder Error; here each is a problem at its line:column. A source whose columns
cannot be known before it runs is not judged on them, and a note says why.
"""

from __future__ import annotations

import builtins
import io
from pathlib import Path
from typing import Any

import pytest

from velostream.datasource import registry
from velostream.datasource.file.source import INFER_BYTES
from velostream.datasource.memory import MemorySource
from velostream.datasource.schema import SAMPLE_ROWS, sample_schema
from velostream.datasource.validation import check_application
from velostream.errors import SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql import Application, ConnectorConfig


def _app(tmp_path: Path, select: str, source: str, *, kind: str = "STREAM", extra: str = "") -> str:
    sink = f"'out.type' = 'file_sink', 'out.path' = '{tmp_path / 'out.csv'}'"
    return f"CREATE {kind} out AS\n{select}\nWITH ({source}, {sink}{extra});\n"


def _file(path: Path) -> str:
    return f"'src.type' = 'file_source', 'src.path' = '{path}'"


def _check(text: str, **kwargs: Any) -> Application:
    return check_application(text, base_dir=Path.cwd(), source_name="app.sql", **kwargs)


def _problems(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(SqlValidationError) as caught:
        _check(text, **kwargs)
    return caught.value.problems


@pytest.fixture
def trades(tmp_path: Path) -> Path:
    path = tmp_path / "trades.csv"
    path.write_text(
        "id,symbol,price,ts\n1,AAPL,10.5,2024-01-01 00:00:00\n2,MSFT,11,2024-01-01 00:00:01\n"
    )
    return path


def test_an_unknown_column_in_a_file_source_is_a_problem(tmp_path: Path, trades: Path) -> None:
    (problem,) = _problems(_app(tmp_path, "SELECT id, prce FROM src", _file(trades)))
    assert problem == (
        "statement 1 (out) at 2:12: unknown column prce (did you mean price?): "
        "source src has id, symbol, price, ts"
    )


def test_an_unknown_type_is_a_problem(tmp_path: Path, trades: Path) -> None:
    (problem,) = _problems(
        _app(tmp_path, "SELECT id, CAST(price AS DECIMLA) AS p FROM src", _file(trades))
    )
    assert problem.startswith("statement 1 (out) at 2:26: unknown type DECIMLA (did you mean")


def test_a_window_on_a_file_without_event_time_field_is_a_problem(
    tmp_path: Path, trades: Path
) -> None:
    select = "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol\nWINDOW TUMBLING(1m)"
    (problem,) = _problems(_app(tmp_path, select, _file(trades), kind="TABLE"))
    assert problem.startswith("statement 1 (out) at 3:1: WINDOW TUMBLING(1m) has no event time")
    assert "(such as 'ts')" in problem
    text = _app(tmp_path, select, _file(trades), kind="TABLE", extra=", 'event.time.field' = 'ts'")
    assert len(_check(text).jobs) == 1


def test_a_bad_number_in_a_tiny_csv_makes_text_and_the_problem_says_so(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("id,symbol,price\n1,AAPL,10.5\n2,MSFT,x\n")
    (problem,) = _problems(_app(tmp_path, "SELECT id, price * 2 AS dbl FROM src", _file(tiny)))
    assert problem == (
        "statement 1 (out) at 2:12: price * 2: no operator * takes (VARCHAR, INTEGER); "
        f"in source src, price is VARCHAR, as inferred from the first lines of {tiny} "
        f"('x' at {tiny}:3 is not a number)"
    )


def test_the_sample_is_the_file_sources_own_inference(tmp_path: Path) -> None:
    path = tmp_path / "typed.jsonl"
    path.write_text('{"id": 1, "at": "2024-01-01 00:00:00", "v": 1.5}\n')
    found = sample_schema(
        ConnectorConfig("src", "file_source", {"path": str(path), "format": "jsonl"})
    )
    assert not isinstance(found, str)
    assert found.typed and found.columns.names == ["id", "at", "v"]
    assert str(found.columns.field("id").type) == "int64"


def test_a_header_without_rows_checks_names_but_not_types(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("id,price\n")
    source = _file(empty) + ", 'src.watch' = 'true'"
    assert len(_check(_app(tmp_path, "SELECT id, price * 2 AS dbl FROM src", source)).jobs) == 1
    (problem,) = _problems(_app(tmp_path, "SELECT id, prce FROM src", source))
    assert "unknown column prce (did you mean price?): source src has id, price" in problem


def test_sources_whose_columns_are_unknown_get_a_note_and_no_false_problem(
    tmp_path: Path,
) -> None:
    kafka = "'src.type' = 'kafka_source', 'src.bootstrap.servers' = 'localhost:1'"
    missing = _file(tmp_path / "later.csv")
    for source, why in [
        (kafka, "its columns are inferred from the first messages"),
        (missing, "no such file"),
    ]:
        notes: list[str] = []
        app = _check(
            _app(tmp_path, "SELECT anything, price * 2 AS x FROM src", source), notes=notes.append
        )
        assert len(app.jobs) == 1
        (note,) = notes
        assert note.startswith(f"source 'src' ({'kafka' if source is kafka else 'file'}_source): ")
        assert why in note
        (problem,) = _problems(_app(tmp_path, "SELECT CAST(a AS INTGER) AS b FROM src", source))
        assert "unknown type INTGER (did you mean INTEGER" in problem


def test_a_kafka_topic_of_strings_has_its_columns(tmp_path: Path) -> None:
    kafka = (
        "'src.type' = 'kafka_source', 'src.bootstrap.servers' = 'localhost:1', "
        "'src.value.format' = 'string'"
    )
    select = "SELECT value, _key, _partition, _offset, _timestamp, _headers FROM src"
    assert len(_check(_app(tmp_path, select, kafka)).jobs) == 1
    (problem,) = _problems(_app(tmp_path, "SELECT vlue FROM src", kafka))
    assert "unknown column vlue (did you mean value?)" in problem


def test_a_memory_source_has_the_columns_of_its_rows(tmp_path: Path) -> None:
    rows = "'src.type' = 'memory_source', 'src.rows' = '[{\"a\": 1, \"b\": \"x\"}]'"
    assert len(_check(_app(tmp_path, "SELECT a * 2 AS a2, UPPER(b) AS u FROM src", rows)).jobs)
    (problem,) = _problems(_app(tmp_path, "SELECT c FROM src", rows))
    assert "unknown column c: source src has a, b" in problem


def test_a_file_outside_the_allowed_paths_is_not_read(tmp_path: Path, trades: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    notes: list[str] = []
    problems = _problems(
        _app(tmp_path, "SELECT prce FROM src", _file(trades)),
        roots=PathRoots.of([allowed]),
        notes=notes.append,
    )
    assert notes == [
        "source 'src' (file_source): its columns are not checked: its path is "
        "outside the allowed ones"
    ]
    assert not any("prce" in p for p in problems)  # never sampled, so never judged


class _CountingFile(io.FileIO):
    read_bytes = 0

    def readinto(self, buffer: Any) -> int | None:
        got = super().readinto(buffer)
        _CountingFile.read_bytes += got or 0
        return got

    def read(self, size: int = -1) -> bytes | None:
        data = super().read(size)
        _CountingFile.read_bytes += len(data or b"")
        return data


def test_validation_reads_no_more_than_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.csv"
    line = "12345,AAPL,101.25,2024-01-01 00:00:00\n"
    big.write_text("id,symbol,price,ts\n" + line * (24 * (1 << 20) // len(line)))
    real_open = builtins.open

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(big) and mode == "rb" and kwargs.get("buffering", -1) == 0:
            return _CountingFile(file, "rb")
        return real_open(file, mode, *args, **kwargs)

    _CountingFile.read_bytes = 0
    monkeypatch.setattr(builtins, "open", counting_open)
    (problem,) = _problems(_app(tmp_path, "SELECT prce FROM src", _file(big)))
    assert "unknown column prce" in problem
    assert 0 < _CountingFile.read_bytes <= INFER_BYTES + 4 * SAMPLE_ROWS * len(line) + (1 << 17)


def test_a_source_type_of_a_plugin_is_not_made_at_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    class Plugin(MemorySource):
        def __init__(self, name: str, properties: Any) -> None:
            made.append(name)
            super().__init__(name, properties)

    monkeypatch.setitem(registry._extra_sources, "plugin_source", Plugin)
    notes: list[str] = []
    text = _app(tmp_path, "SELECT anything FROM src", "'src.type' = 'plugin_source'")
    assert len(_check(text, notes=notes.append).jobs) == 1
    assert notes == [
        "source 'src' (plugin_source): its columns are known only when the job reads it, "
        "so only types and functions are checked before it runs"
    ]
    assert made == []


def test_a_source_that_cannot_be_made_is_a_note_not_a_crash(tmp_path: Path) -> None:
    notes: list[str] = []
    text = _app(tmp_path, "SELECT id FROM src", "'src.type' = 'memory_source', 'src.rows' = '1'")
    assert len(_check(text, notes=notes.append).jobs) == 1
    (note,) = notes
    assert note.startswith("source 'src' (memory_source): its columns are not checked: ")
