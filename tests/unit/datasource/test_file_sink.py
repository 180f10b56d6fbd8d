"""file_sink: exact CSV / JSON lines output, header once, append, fsync, errors."""

from __future__ import annotations

import datetime as dt
import errno
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.file import sink as file_sink
from velostream.datasource.file.encode import _floats
from velostream.datasource.file.sink import FileSink
from velostream.errors import (
    ConfigurationError,
    ResourceExhaustedError,
    SchemaError,
    SinkError,
)

TRADES = pa.table(
    {
        "id": pa.array([1, 2, None], pa.int64()),
        "symbol": ["AAPL", "BRK,B", None],
        "notional": [2750.5, 15025.0, None],
        "note": ['say "hi"', "", "two\nlines"],
        "active": [True, False, None],
        "ts": pa.array(
            [dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 1, 10, 0, 0, 123000), None],
            pa.timestamp("ms"),
        ),
    }
)


def _sink(path: Path, **props: str) -> FileSink:
    return FileSink("out", {"path": str(path), **props})


def _write(path: Path, *tables: pa.Table, **props: str) -> str:
    sink = _sink(path, **props)
    for table in tables:
        sink.write(table)
    sink.close()
    return path.read_text()


def test_csv_exact_output(tmp_path: Path) -> None:
    assert _write(tmp_path / "o.csv", TRADES, format="csv") == (
        "id,symbol,notional,note,active,ts\n"
        '1,AAPL,2750.5,"say ""hi""",true,2024-01-01T10:00:00\n'
        '2,"BRK,B",15025.0,"",false,2024-01-01T10:00:00.123\n'
        ',,,"two\nlines",,\n'
    )


def test_csv_header_once_across_batches_and_no_rows(tmp_path: Path) -> None:
    one = pa.table({"a": [1], "b": ["x"]})
    assert _write(tmp_path / "o.csv", one, one.slice(0, 0), one) == "a,b\n1,x\n1,x\n"
    sink = _sink(tmp_path / "empty.csv")
    sink.open(one.schema)
    sink.close()
    assert (tmp_path / "empty.csv").read_text() == "a,b\n"


def test_header_quotes_only_when_needed(tmp_path: Path) -> None:
    table = pa.table({"a,b": [1], 'q"': [2], "plain": [3]})
    assert _write(tmp_path / "o.csv", table).splitlines()[0] == '"a,b","q""",plain'


def test_append_writes_no_second_header(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    one = pa.table({"a": [1]})
    _write(path, one)
    assert _write(path, pa.table({"a": [2]}), append="true") == "a\n1\n2\n"
    assert _write(tmp_path / "new.csv", one, append="true") == "a\n1\n"
    (tmp_path / "blank.csv").write_text("")
    assert _write(tmp_path / "blank.csv", one, append="true") == "a\n1\n"


def test_without_append_the_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("old,stuff\n1,2\n3,4\n")
    assert _write(path, pa.table({"a": [1]})) == "a\n1\n"


def test_jsonl_exact_output(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": [1, None],
            "name": ['a "q"\\', None],
            "price": [15025.0, float("nan")],
            "tags": [[1, 2], None],
            "when": pa.array([dt.date(2024, 1, 2), None], pa.date32()),
        }
    )
    assert _write(tmp_path / "o.jsonl", table, format="jsonl") == (
        '{"id":1,"name":"a \\"q\\"\\\\","price":15025.0,"tags":[1,2],"when":"2024-01-02"}\n'
        '{"id":null,"name":null,"price":null,"tags":null,"when":null}\n'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2750.5, "2750.5"),
        (15025.0, "15025.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (123456789.125, "123456789.125"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
        (5e-324, "5e-324"),
    ],
)
def test_float_spelling_matches_python_and_duckdb(value: float, text: str) -> None:
    assert _floats(pa.array([value])).to_pylist() == [text]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=50))
def test_floats_are_shortest_round_trip(values: list[float]) -> None:
    assert _floats(pa.array(values, pa.float64())).to_pylist() == [repr(v) for v in values]


def test_timestamps_and_times_are_iso_8601(tmp_path: Path) -> None:
    table = pa.table(
        {
            "utc": pa.array([dt.datetime(2024, 1, 1, 10, 0, 0, 500)], pa.timestamp("us", tz="UTC")),
            "paris": pa.array(
                [dt.datetime(2024, 1, 1, 9, 0)], pa.timestamp("s", tz="Europe/Paris")
            ),
            "naive": pa.array([dt.datetime(2024, 1, 1, 10, 0)], pa.timestamp("ns")),
            "t": pa.array([dt.time(10, 30, 0, 250000)], pa.time64("us")),
        }
    )
    assert _write(tmp_path / "o.csv", table).splitlines()[1] == (
        "2024-01-01T10:00:00.0005Z,2024-01-01T10:00:00+01:00,2024-01-01T10:00:00,10:30:00.25"
    )


def test_other_delimiter_quotes_values_that_hold_it(tmp_path: Path) -> None:
    table = pa.table({"a": [1.5], "b": ["x;y"]})
    assert _write(tmp_path / "o.csv", table, delimiter=";") == 'a;b\n1.5;"x;y"\n'
    assert _write(tmp_path / "p.csv", table, delimiter=".") == 'a.b\n"1.5".x;y\n'


def test_changed_columns_are_a_schema_error(tmp_path: Path) -> None:
    sink = _sink(tmp_path / "o.csv")
    sink.write(pa.table({"a": [1]}))
    with pytest.raises(SchemaError, match=r"columns \['b'\] do not match \['a'\]"):
        sink.write(pa.table({"b": [1]}))
    sink.close()


def test_flush_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(file_sink.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    sink = _sink(tmp_path / "o.csv")
    sink.write(pa.table({"a": [1]}))
    sink.flush()
    assert len(synced) == 1
    assert (tmp_path / "o.csv").read_text() == "a\n1\n"
    sink.close()
    assert len(synced) == 2


def test_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "out" / "deep" / "o.jsonl"
    assert _write(path, pa.table({"a": [1]}), format="jsonl") == '{"a":1}\n'


class _Broken:
    def __init__(self, exc: OSError) -> None:
        self.exc = exc

    def write(self, data: Any) -> int:
        raise self.exc

    def flush(self) -> None:
        raise self.exc

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), ResourceExhaustedError,
         "no space left writing"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), ResourceExhaustedError,
         "no space left writing"),
        (PermissionError(errno.EACCES, "Permission denied"), SinkError, "permission denied: "),
        (OSError(errno.EIO, "Input/output error"), SinkError, "cannot write .*: Input/output"),
    ],
)  # fmt: skip
def test_os_errors_are_translated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: OSError, kind: type, message: str
) -> None:
    sink = _sink(tmp_path / "o.csv")
    monkeypatch.setattr(FileSink, "_open_stream", lambda self: _Broken(exc))
    with pytest.raises(kind, match=message) as info:
        sink.write(pa.table({"a": [1]}))
    assert info.value.__cause__ is exc
    assert str(tmp_path / "o.csv") in str(info.value)
    with pytest.raises(kind):
        sink.flush()


def test_open_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SinkError, match=r"dir\.csv is a directory"):
        _sink(tmp_path / "dir.csv").write(pa.table({"a": [1]}))
    (tmp_path / "file").write_text("")
    with pytest.raises(SinkError, match=r"cannot write .*file/o\.csv"):
        _sink(tmp_path / "file" / "o.csv").write(pa.table({"a": [1]}))


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "file_sink needs a 'path'"),
        ({"path": "o", "format": "xml"}, "unknown format 'xml'; valid values: csv, json, jsonl"),
        ({"path": "o", "append": "maybe"}, "'append' must be true or false"),
        ({"path": "o", "delimiter": "ab"}, "delimiter must be one character"),
    ],
)
def test_bad_properties(props: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FileSink("out", props)


def test_nan_and_inf_in_json_are_null(tmp_path: Path) -> None:
    table = pa.table({"x": [math.inf, -math.inf, 1.5]})
    assert _write(tmp_path / "o.jsonl", table, format="jsonl").splitlines() == [
        '{"x":null}', '{"x":null}', '{"x":1.5}'
    ]  # fmt: skip


def test_json_escapes_control_characters(tmp_path: Path) -> None:
    table = pa.table({"s": ["tab\there", "bell\x07", "plain", "ünï"]})
    assert _write(tmp_path / "o.jsonl", table, format="jsonl").splitlines() == [
        '{"s":"tab\\there"}', '{"s":"bell\\u0007"}', '{"s":"plain"}', '{"s":"ünï"}'
    ]  # fmt: skip


def test_committed_offset_and_truncate_roll_back(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    sink = _sink(path)
    assert sink.committed_offset() == 0
    sink.write(pa.table({"a": [1, 2]}))
    sink.flush()
    committed = sink.committed_offset()
    assert committed == len("a\n1\n2\n")
    sink.write(pa.table({"a": [3]}))  # not committed
    sink.truncate(committed)
    sink.write(pa.table({"a": [4]}))
    sink.flush()
    assert path.read_text() == "a\n1\n2\n4\n"
    sink.truncate(0)
    sink.write(pa.table({"a": [5]}))
    sink.close()
    assert path.read_text() == "a\n5\n"


def test_truncate_after_a_restart_keeps_committed_output(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text('{"a":1}\n{"a":2}\n{"a":3}\n')  # the crash left an uncommitted row
    sink = _sink(path, format="jsonl")
    assert sink.committed_offset() == 0  # without append, opening would empty the file
    sink.truncate(16)  # the checkpoint's committed length
    sink.write(pa.table({"a": [9]}))
    sink.close()
    assert path.read_text() == '{"a":1}\n{"a":2}\n{"a":9}\n'
    appending = _sink(path, format="jsonl", append="true")
    assert appending.committed_offset() == path.stat().st_size
    with pytest.raises(SinkError, match=r"cannot roll .* back to 999 bytes"):
        appending.truncate(999)
    appending.close()


# --- staged writes (transactional mode) ---------------------------------------------

ROWS_1, ROWS_2 = pa.table({"a": [1, 2]}), pa.table({"a": [3]})
BATCH_1, BATCH_2 = b"a\n1\n2\n", b"3\n"


def _staged(path: Path, committed: int = 0, **props: str) -> FileSink:
    sink = _sink(path, **props)
    sink.begin_staging(committed)
    sink.open()
    return sink


def _prepared(path: Path, table: pa.Table) -> FileSink:
    """A staged sink with `table` written and prepared (flushed), not yet published."""
    sink = _staged(path)
    sink.write(table)
    sink.flush()
    return sink


def _inode(path: str | Path) -> int:
    return os.stat(path).st_ino


def _raising(exc: OSError) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise exc

    return fail


def test_staged_rows_reach_the_file_only_when_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.csv"
    sink = _staged(path)
    staging = Path(sink.staging_path)
    assert staging == tmp_path / ".o.csv.velo-pending"
    sink.write(ROWS_1)
    sink.flush()  # prepared: counted as committed once published, not yet visible
    assert sink.committed_offset() == len(BATCH_1)
    assert path.read_bytes() == b"" and staging.read_bytes() == BATCH_1

    staged_inode = _inode(staging)
    sink.publish()  # the file holds nothing committed: the staging file is renamed
    assert _inode(path) == staged_inode and not staging.exists()
    assert path.read_bytes() == BATCH_1

    copies: list[int] = []
    real_copy = os.copy_file_range

    def copy(src: int, dst: int, count: int, offset_src: int, offset_dst: int) -> int:
        copies.append(count)
        return real_copy(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", copy)
    sink.write(ROWS_2)
    sink.flush()
    assert sink.committed_offset() == len(BATCH_1 + BATCH_2)
    assert path.read_bytes() == BATCH_1
    sink.publish()  # committed rows in the file: the staged bytes are appended to it
    assert copies == [len(BATCH_2)], "a kernel-side copy"
    assert _inode(path) == staged_inode and staging.read_bytes() == b""
    assert path.read_bytes() == BATCH_1 + BATCH_2
    sink.close()
    assert not staging.exists(), "an empty staging file goes with the sink"


def test_discard_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    sink = _prepared(path, ROWS_2)
    sink.discard()  # the first batch aborted: the header comes again with the next
    assert sink.committed_offset() == 0 and path.read_bytes() == b""
    sink.write(ROWS_1)
    sink.flush()
    sink.publish()
    before = path.read_bytes()
    sink.write(ROWS_2)
    sink.flush()
    sink.discard()
    assert path.read_bytes() == before == BATCH_1
    assert sink.committed_offset() == len(BATCH_1)
    assert Path(sink.staging_path).read_bytes() == b""
    sink.write(pa.table({"a": [4]}))
    sink.flush()
    sink.publish()
    sink.close()
    assert path.read_bytes() == BATCH_1 + b"4\n"


def test_publish_without_a_kernel_copy_and_after_a_torn_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.csv"
    sink = _prepared(path, ROWS_1)
    sink.publish()
    big = pa.table({"a": list(range(100_000))})
    sink.write(big)
    sink.flush()

    def torn(src: int, dst: int, count: int, offset_src: int, offset_dst: int) -> int:
        os.pwrite(dst, os.pread(src, count // 2, offset_src), offset_dst)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "copy_file_range", torn)
    with pytest.raises(SinkError, match=r"cannot write .*o\.csv: Input/output error"):
        sink.publish()
    staged = Path(sink.staging_path).stat().st_size
    assert len(BATCH_1) < path.stat().st_size < len(BATCH_1) + staged, "torn"
    assert sink.committed_offset() == len(BATCH_1) + staged, "the batch is still prepared"
    no_copy = OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "copy_file_range", _raising(no_copy))
    sink.publish()  # again: cut back to the committed length, copied by read and write
    sink.close()
    assert path.read_text().splitlines() == ["a", "1", "2", *map(str, range(100_000))]


def test_publish_errors_are_translated_and_the_batch_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.csv"
    sink = _prepared(path, ROWS_1)
    full = OSError(errno.ENOSPC, "No space left on device")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", _raising(full))
    with pytest.raises(ResourceExhaustedError, match=r"no space left writing .*o\.csv") as info:
        sink.publish()
    assert info.value.__cause__ is full
    monkeypatch.setattr(os, "replace", real_replace)
    sink.close()  # a prepared batch the checkpoint may hold: kept for recovery
    assert Path(sink.staging_path).read_bytes() == BATCH_1 and path.read_bytes() == b""


C = b"a\n1\n2\n3\n"  # committed: 8 bytes, the last batch "2\n3\n" staged


@pytest.mark.parametrize(
    ("target", "staging", "committed", "expected"),
    [
        pytest.param(None, C, 8, C, id="roll-forward-by-rename"),
        pytest.param(C[:4], C[4:], 8, C, id="roll-forward-by-append"),
        pytest.param(C[:6], C[4:], 8, C, id="roll-forward-after-torn-append"),
        pytest.param(C, C[4:], 8, C, id="already-published"),
        pytest.param(C[:4], b"9\n", 4, C[:4], id="staged-but-never-committed"),
        pytest.param(C + b"9,to", None, 8, C, id="torn-tail-cut"),
        pytest.param(b"old\n", b"x\n", 0, b"", id="no-checkpoint"),
    ],
)
def test_begin_staging_settles_what_a_crash_left(
    tmp_path: Path, target: bytes | None, staging: bytes | None, committed: int, expected: bytes
) -> None:
    path = tmp_path / "o.csv"
    sink = _sink(path)
    if target is not None:
        path.write_bytes(target)
    if staging is not None:
        Path(sink.staging_path).write_bytes(staging)
    sink.begin_staging(committed)
    assert path.read_bytes() == expected
    assert not Path(sink.staging_path).exists()
    assert sink.committed_offset() == committed
    sink.write(pa.table({"a": [4]}))  # and goes on from there, with no second header
    sink.flush()
    sink.publish()
    sink.close()
    assert path.read_bytes() == expected + (b"4\n" if expected else b"a\n4\n")


@pytest.mark.parametrize(
    ("target", "staging", "message"),
    [
        (C[:2], C[4:], r"commits 8 bytes, the file holds 2 and .*\.o\.csv\.velo-pending holds 4"),
        (C[:4], None, r"commits 8 bytes, the file holds 4 and .*velo-pending holds 0"),
        (C[:4], b"9\n", r"the file holds 4 and .*velo-pending holds 2, not the 4 missing"),
        (C[:4] + b"zz", C[4:], r"its bytes 4\.\.6 do not match .*velo-pending \(4 bytes"),
    ],
)
def test_a_staging_file_that_does_not_match_is_a_sink_error(
    tmp_path: Path, target: bytes, staging: bytes | None, message: str
) -> None:
    path = tmp_path / "o.csv"
    path.write_bytes(target)
    sink = _sink(path)
    if staging is not None:
        Path(sink.staging_path).write_bytes(staging)
    with pytest.raises(SinkError, match=rf"cannot recover .*o\.csv: .*{message}"):
        sink.begin_staging(len(C))
    assert path.read_bytes() == target, "nothing guessed"
