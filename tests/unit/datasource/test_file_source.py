"""file_source: formats, options, glob, batching, positions and resume."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from velostream.datasource.file import lines as file_lines
from velostream.datasource.file import source as file_source
from velostream.datasource.file.lines import source_error
from velostream.datasource.file.source import FilePosition, FileSource
from velostream.errors import ConfigurationError, SchemaError, SourceError

from .conftest import drain

Make = Callable[..., FileSource]

TRADES = (
    "id,symbol,price,quantity,active,ts\n"
    "1,AAPL,150.25,100,true,2024-01-01T10:00:00\n"
    "2,MSFT,2750.5,3,false,2024-01-01 10:00:01\n"
    '3,"BRK,B",15025,,TRUE,\n'
)


def test_csv_with_header_exact_rows_types_and_refs(make_source: Make, tmp_path: Path) -> None:
    source = make_source(TRADES, format="csv")
    out = drain(source)
    assert source.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("symbol", pa.string()),
            ("price", pa.float64()),
            ("quantity", pa.int64()),
            ("active", pa.bool_()),
            ("ts", pa.timestamp("s")),
        ]
    )
    assert out.rows == [
        {"id": 1, "symbol": "AAPL", "price": 150.25, "quantity": 100, "active": True,
         "ts": dt.datetime(2024, 1, 1, 10, 0, 0)},
        {"id": 2, "symbol": "MSFT", "price": 2750.5, "quantity": 3, "active": False,
         "ts": dt.datetime(2024, 1, 1, 10, 0, 1)},
        {"id": 3, "symbol": "BRK,B", "price": 15025.0, "quantity": None, "active": True,
         "ts": None},
    ]  # fmt: skip
    path = tmp_path / "data.csv"
    assert out.refs == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert out.raws[2] == b'3,"BRK,B",15025,,TRUE,'
    assert out.bad == []
    assert out.positions[-1] == FilePosition(0, len(TRADES), 4)


def test_csv_no_header_names_columns_like_duckdb(make_source: Make) -> None:
    out = drain(make_source("1,a\n2,b\n", format="csv_no_header"))
    assert out.rows == [{"column0": 1, "column1": "a"}, {"column0": 2, "column1": "b"}]
    assert out.refs[0].endswith("data.csv:1")


def test_has_headers_overrides_format(make_source: Make) -> None:
    rows = drain(make_source("1,a\n2,b\n", format="csv", has_headers="false")).rows
    assert rows[0] == {"column0": 1, "column1": "a"}
    rows = drain(make_source("x,y\n2,b\n", format="csv_no_header", has_headers="true")).rows
    assert rows == [{"x": 2, "y": "b"}]


@pytest.mark.parametrize(
    ("delimiter", "sep"), [(";", ";"), ("\\t", "\t"), ("tab", "\t"), ("|", "|")]
)
def test_delimiter(make_source: Make, delimiter: str, sep: str) -> None:
    text = f"a{sep}b\n1{sep}x,y\n"
    assert drain(make_source(text, delimiter=delimiter)).rows == [{"a": 1, "b": "x,y"}]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "jsonlines", "JSONL"])
def test_json_lines_and_aliases(make_source: Make, fmt: str) -> None:
    text = (
        '{"id": 1, "name": "a", "price": 1.5, "tags": {"k": 1}}\n'
        '{"id": 2, "name": null, "price": 2, "extra": true}\n'
    )
    source = make_source(text, "data.jsonl", format=fmt)
    out = drain(source)
    assert out.rows == [
        {"id": 1, "name": "a", "price": 1.5, "tags": {"k": 1}, "extra": None},
        {"id": 2, "name": None, "price": 2.0, "tags": None, "extra": True},
    ]
    assert [f.name for f in source.schema or []] == ["id", "name", "price", "tags", "extra"]
    assert out.refs[1].endswith("data.jsonl:2")
    assert out.raws[1] == b'{"id": 2, "name": null, "price": 2, "extra": true}'


def test_empty_lines_are_skipped_and_line_numbers_stay_true(make_source: Make) -> None:
    out = drain(make_source("a,b\n\n1,x\n\n\n2,y\n\n"))
    assert out.rows == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert [r.rsplit(":", 1)[1] for r in out.refs] == ["3", "6"]
    assert out.bad == []


def test_crlf_bom_and_missing_final_newline(make_source: Make) -> None:
    out = drain(make_source(b"\xef\xbb\xbfa,b\r\n1,x\r\n2,y"))
    assert out.rows == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert out.raws == [b"1,x", b"2,y"]
    assert [r.rsplit(":", 1)[1] for r in out.refs] == ["2", "3"]


def test_all_null_column_is_text_and_header_only_file_has_no_rows(make_source: Make) -> None:
    source = make_source("a,b\n1,\n2,\n")
    assert drain(source).rows == [{"a": 1, "b": None}, {"a": 2, "b": None}]
    assert source.schema is not None and source.schema.field("b").type == pa.string()
    source = make_source("a,b\n", "header_only.csv")
    assert source.read_batch(10) is None
    assert source.schema is not None and source.schema.names == ["a", "b"]
    assert make_source("", "empty.csv").read_batch(10) is None


def test_batches_hold_at_most_max_records(make_source: Make) -> None:
    text = "n\n" + "".join(f"{i}\n" for i in range(1000))
    out = drain(make_source(text), max_records=64)
    assert [r["n"] for r in out.rows] == list(range(1000))
    assert out.sizes == [64] * 15 + [40]
    offsets = [p.offset for p in out.positions]
    assert offsets == sorted(offsets) and out.positions[-1].line == 1001


def test_glob_reads_files_in_sorted_order(tmp_path: Path) -> None:
    for name, rows in [("b.csv", "3\n4\n"), ("a.csv", "1\n2\n"), ("c.csv", "5\n")]:
        (tmp_path / name).write_text("n\n" + rows)
    (tmp_path / "skip.txt").write_text("n\n9\n")
    source = FileSource("src", {"path": str(tmp_path / "*.csv")})
    out = drain(source)
    assert [r["n"] for r in out.rows] == [1, 2, 3, 4, 5]
    assert [os.path.basename(r) for r in out.refs] == [
        "a.csv:2", "a.csv:3", "b.csv:2", "b.csv:3", "c.csv:2"
    ]  # fmt: skip
    assert source.files == [str(tmp_path / n) for n in ("a.csv", "b.csv", "c.csv")]


def test_glob_with_a_different_header_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("n,m\n1,2\n")
    (tmp_path / "b.csv").write_text("m,n\n3,4\n")
    source = FileSource("src", {"path": str(tmp_path / "*.csv")})
    with pytest.raises(SchemaError, match=r"b.csv has columns \['m', 'n'\], but the first"):
        drain(source)


def test_seek_resumes_after_a_restart(make_source: Make, tmp_path: Path) -> None:
    text = "n,s\n" + "".join(f"{i},v{i}\n" for i in range(500))
    first = make_source(text)
    expected = drain(first, max_records=70)
    source = make_source(text)
    head = [source.read_batch(70) for _ in range(3)]
    source.close()
    saved = json.loads(json.dumps(head[-1].position))  # the job server persists JSON
    restarted = FileSource("src", {"path": str(tmp_path / "data.csv")})
    restarted.seek(saved)
    tail = drain(restarted, max_records=70)
    rows = [r for b in head for r in b.table.to_pylist()] + tail.rows
    assert rows == expected.rows
    assert tail.refs == expected.refs[210:]


def test_seek_across_files_and_to_the_end(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("n\n1\n2\n")
    (tmp_path / "b.csv").write_text("n\n3\n")
    source = FileSource("src", {"path": str(tmp_path / "*.csv")})
    source.seek({"file_index": 1, "offset": 0, "line": 0})
    assert [r["n"] for r in drain(source).rows] == [3]
    source.seek(FilePosition(2, 0, 0))
    assert source.read_batch(10) is None
    with pytest.raises(SourceError, match="outside 2 files"):
        source.seek((5, 0, 0))
    with pytest.raises(SourceError, match="not a file position"):
        source.seek("start")


def test_seek_none_rewinds_to_the_last_commit(make_source: Make) -> None:
    source = make_source("n\n1\n2\n3\n")
    first = source.read_batch(1)
    assert first is not None
    source.commit(first.position)
    drain(source)
    source.seek(None)
    assert [r["n"] for r in drain(source).rows] == [2, 3]


def test_missing_path_and_empty_glob_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=f"no such file: {tmp_path}/nope.csv"):
        FileSource("src", {"path": str(tmp_path / "nope.csv")}).read_batch(10)
    with pytest.raises(SourceError, match=r"no file matches '.*\*.csv'"):
        FileSource("src", {"path": str(tmp_path / "*.csv")}).read_batch(10)
    with pytest.raises(SourceError, match="not a file"):
        FileSource("src", {"path": str(tmp_path)}).read_batch(10)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (FileNotFoundError(2, "No such file"), "no such file: /data/x.csv"),
        (PermissionError(13, "Permission denied"), "permission denied: /data/x.csv"),
        (IsADirectoryError(21, "Is a directory"), "not a file: /data/x.csv"),
        (OSError(5, "Input/output error"), "cannot read /data/x.csv: Input/output error"),
    ],
)
def test_os_errors_are_translated(exc: OSError, message: str) -> None:
    error = source_error("/data/x.csv", exc)
    assert isinstance(error, SourceError) and error.message == message


def test_read_error_is_raised_from_the_os_error(
    make_source: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source("n\n1\n")
    source.open()

    def broken(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(file_lines, "open", broken, raising=False)
    with pytest.raises(SourceError, match="permission denied") as info:
        source.read_batch(10)
    assert isinstance(info.value.__cause__, PermissionError)
    source.close()


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "file_source needs a 'path'"),
        ({"path": "x", "format": "parquet"},
         "unknown format 'parquet'; valid values: csv, csv_no_header, json, jsonl, jsonlines"),
        ({"path": "x", "delimiter": ";;"}, "delimiter must be one ASCII character"),
        ({"path": "x", "watch": "sometimes"}, "'watch' must be true or false"),
        ({"path": "x", "polling_interval": "fast"}, "'polling_interval' must be a duration"),
    ],
)  # fmt: skip
def test_bad_properties(props: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FileSource("src", props)


def test_unknown_property_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    FileSource("src", {"path": "x", "delimeter": ";"})
    assert "ignoring unknown properties ['delimeter']" in caplog.text


def test_config_defaults() -> None:
    source = FileSource("src", {"path": "x.csv", "format": "json"})
    assert source.config.format == "jsonl" and not source.config.has_headers
    assert FileSource("src", {"path": "in/*.ndjson"}).config.format == "jsonl"
    assert FileSource("src", {"path": "in/x.txt"}).config.has_headers
    assert source.bounded and source.config.polling_interval == 1.0
    watch = FileSource("src", {"path": "x", "watch": "true", "polling_interval": "500ms"})
    assert not watch.bounded and watch.config.polling_interval == 0.5


def test_types_are_fixed_by_the_first_block(
    make_source: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 8)  # infers from "1,2\n2,3\n"
    out = drain(make_source("n,x\n1,2\n2,3\n3,4.5\n4,abc\n"), max_records=2)
    assert out.rows == [{"n": 1, "x": 2}, {"n": 2, "x": 3}]
    assert [(b.ref.rsplit(":", 1)[1], b.message) for b in out.bad] == [
        ("4", "column 'x': '4.5' is not a valid integer (int64)"),
        ("5", "column 'x': 'abc' is not a valid integer (int64)"),
    ]


def test_data_with_nothing_to_infer_from_is_an_error(make_source: Make) -> None:
    source = make_source(b"\xff\xfe\n\xfa\n", "bad.csv", format="csv_no_header")
    with pytest.raises(SourceError, match=r"no valid csv record in the first \d+ bytes of .*bad"):
        source.read_batch(10)
    source = make_source("oops\n[1]\n", "bad.jsonl")
    with pytest.raises(SourceError, match="no valid jsonl record"):
        source.read_batch(10)


def test_decode_records_replays_dead_letters(make_source: Make) -> None:
    source = make_source("id,price\n1,2.5\n2,3.5\n")
    drain(source)
    batch = source.decode_records([b"7,1.25", b"8,oops", b"9,4\r\n"])
    assert batch.table.to_pylist() == [{"id": 7, "price": 1.25}, {"id": 9, "price": 4.0}]
    assert [b.ref for b in batch.bad] == ["replay:2"] and batch.bad[0].raw == b"8,oops"
    assert batch.refs.ref(1) == "replay:3" and batch.position is None
