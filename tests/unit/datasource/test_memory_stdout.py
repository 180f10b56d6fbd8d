"""In-memory source and sink, and stdout_sink."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from velostream.datasource import create_sink, create_source
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.datasource.stdout import StdoutSink
from velostream.datasource.traits import BadRecord
from velostream.errors import ConfigurationError, ErrorKind, SchemaError, SinkError, SourceError

from .conftest import drain


def _bad(ref: str) -> BadRecord:
    return BadRecord(b"raw", ref, "broken", ErrorKind.PARSE)


def test_memory_source_slices_tables_and_dicts() -> None:
    source = MemorySource("m", data=[pa.table({"a": [1, 2, 3]}), [{"a": 4}, {"a": 5}]])
    out = drain(source, max_records=2)
    assert [r["a"] for r in out.rows] == [1, 2, 3, 4, 5]
    assert out.sizes == [2, 1, 2]
    assert out.refs == ["m:0", "m:1", "m:2", "m:3", "m:4"]
    assert out.raws[3] == b'{"a":4}'


def test_memory_source_injects_bad_records() -> None:
    source = MemorySource("m")
    source.add([{"a": 1}, {"a": 2}], bad=[_bad("m:x")])
    source.add_bad(_bad("m:y"))
    first = source.read_batch(2)
    assert first is not None and first.table.num_rows == 1 and first.bad == [_bad("m:x")]
    assert first.num_records == 2
    rest = drain(source)
    assert [r["a"] for r in rest.rows] == [2] and rest.bad == [_bad("m:y")]


def test_memory_source_seek_and_commit() -> None:
    source = MemorySource("m", data=[[{"a": i} for i in range(5)]])
    first = source.read_batch(2)
    assert first is not None
    source.commit(first.position)
    assert [r["a"] for r in drain(source, 2).rows] == [2, 3, 4]
    source.seek(None)
    assert [r["a"] for r in drain(source, 10).rows] == [2, 3, 4]
    source.seek([0, 4])
    assert [r["a"] for r in drain(source, 10).rows] == [4]
    with pytest.raises(SourceError):
        source.seek("nowhere")


def test_unbounded_memory_source_idles_with_empty_batches() -> None:
    source = MemorySource("m", {"bounded": "false"}, data=[[{"a": 1}]])
    assert not source.bounded
    assert source.read_batch(10) is not None
    idle = source.read_batch(10)
    assert idle is not None and idle.table.num_rows == 0 and idle.table.schema.names == ["a"]


def test_memory_source_from_the_registry_reads_json_rows() -> None:
    source = create_source("m", "memory_source", {"rows": '[{"a": 1, "b": "x"}]'})
    assert drain(source).rows == [{"a": 1, "b": "x"}]
    with pytest.raises(ConfigurationError, match="'rows' must be a JSON list"):
        create_source("m", "memory_source", {"rows": "[oops"})


def test_memory_sink_collects_tables_and_is_found_by_name() -> None:
    sink = create_sink("collected", "memory_sink", {})
    assert MemorySink.named("collected") is sink
    assert isinstance(sink, MemorySink)
    sink.open(pa.schema([("a", pa.int64())]))
    assert sink.table().num_rows == 0
    sink.write(pa.table({"a": [1, 2]}))
    sink.write(pa.table({"a": [3]}))
    sink.flush()
    sink.close()
    assert sink.rows() == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert sink.table().column("a").to_pylist() == [1, 2, 3]
    assert sink.flushes == 1 and sink.closed


def test_stdout_sink_defaults_to_json_lines(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = create_sink("out", "stdout_sink", {})
    sink.write(pa.table({"a": [1, None], "b": ["x", "y"]}))
    sink.close()
    assert capsysbinary.readouterr().out == b'{"a":1,"b":"x"}\n{"a":null,"b":"y"}\n'


def test_stdout_sink_csv_header_once() -> None:
    stream = io.BytesIO()
    sink = StdoutSink("out", {"format": "csv"}, stream=stream)
    sink.open(pa.schema([("a", pa.float64()), ("b", pa.string())]))
    sink.write(pa.table({"a": [1.0], "b": ["x,y"]}))
    sink.write(pa.table({"a": [None], "b": [""]}))
    sink.flush()
    assert stream.getvalue() == b'a,b\n1.0,"x,y"\n,""\n'
    with pytest.raises(SchemaError, match="stdout_sink 'out'"):
        sink.write(pa.table({"z": [1]}))


def test_stdout_sink_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown format 'xml'"):
        StdoutSink("out", {"format": "xml"})

    class Closed(io.BytesIO):
        def write(self, data: object) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    sink = StdoutSink("out", {}, stream=Closed())
    with pytest.raises(SinkError, match="cannot write to standard output") as info:
        sink.write(pa.table({"a": [1]}))
    assert isinstance(info.value.__cause__, BrokenPipeError)


def test_memory_sink_rolls_back_to_the_last_flush() -> None:
    sink = MemorySink("tx")
    sink.write(pa.table({"a": [1, 2]}))
    sink.flush()
    sink.write(pa.table({"a": [3]}))
    assert sink.committed_offset() == 2
    sink.truncate(2)
    assert sink.rows() == [{"a": 1}, {"a": 2}]
    sink.truncate(1)
    assert sink.rows() == [{"a": 1}] and sink.committed_offset() == 1


def test_memory_source_decodes_records_from_their_raw_form() -> None:
    source = MemorySource("m", data=[[{"a": 1, "b": "x"}]])
    batch = source.read_batch(10)
    assert batch is not None
    raw = batch.refs.raw(0)
    replay = source.decode_records([raw, b"{oops"])
    assert replay.table.to_pylist() == [{"a": 1, "b": "x"}]
    assert [b.ref for b in replay.bad] == ["replay:2"]
