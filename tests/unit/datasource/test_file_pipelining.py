"""What the throughput paths must not change: read-ahead positions, halves, float text."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from velostream.datasource.file import encode
from velostream.datasource.file.csvlines import CsvDecoder
from velostream.datasource.file.source import FilePosition, FileSource

from .conftest import drain

Make = Callable[..., FileSource]

LINES = "".join(f"{i},s{i % 3},{i * 1.5}\n" for i in range(1, 21))
CSV = "id,sym,price\n" + LINES


def ids(source: FileSource, size: int) -> list[int]:
    batch = source.read_batch(size)
    assert batch is not None
    return [int(v) for v in batch.table.column("id").to_pylist()]


def test_read_ahead_gives_the_same_batches_and_positions(make_source: Make) -> None:
    out = drain(make_source(CSV), max_records=6)
    assert [r["id"] for r in out.rows] == list(range(1, 21))
    assert out.sizes == [6, 6, 6, 2]
    after_six = len("id,sym,price\n") + sum(len(line) + 1 for line in LINES.splitlines()[:6])
    assert out.positions[0] == FilePosition(0, after_six, 7)
    assert out.positions[-1] == FilePosition(0, len(CSV), 21)


def test_seek_drops_the_batch_read_ahead(make_source: Make) -> None:
    source = make_source(CSV)
    assert ids(source, 5) == [1, 2, 3, 4, 5]
    second = source.read_batch(5)  # the third batch is now being read ahead
    assert second is not None
    source.seek(second.position)
    assert ids(source, 5) == [11, 12, 13, 14, 15]
    source.commit(second.position)
    assert ids(source, 5) == [16, 17, 18, 19, 20]
    source.seek(None)  # back to the last commit
    assert ids(source, 5) == [11, 12, 13, 14, 15]
    source.close()


def test_a_new_batch_size_reads_on_from_the_last_batch(make_source: Make) -> None:
    source = make_source(CSV)
    assert ids(source, 3) == [1, 2, 3]
    assert ids(source, 8) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert ids(source, 3) == [12, 13, 14]
    source.close()


def test_close_then_seek_resumes_where_asked(make_source: Make) -> None:
    source = make_source(CSV)
    first = source.read_batch(4)
    assert first is not None
    source.close()
    source.seek(first.position)
    assert ids(source, 2) == [5, 6]
    source.close()


def test_dead_letters_decode_while_a_batch_is_read_ahead(make_source: Make) -> None:
    source = make_source(CSV)
    assert ids(source, 4) == [1, 2, 3, 4]
    replay = source.decode_records([b"99,zz,1.0", b"oops"])
    assert replay.table.column("id").to_pylist() == [99]
    assert [b.ref for b in replay.bad] == ["replay:2"]
    assert ids(source, 4) == [5, 6, 7, 8]
    source.close()


def _wide_table(n: int) -> pa.Table:
    rng = np.random.default_rng(11)
    text = rng.choice(np.array(["a", "b,c", 'q"uote', "", "line\nbreak", "ä"], dtype=object), n)
    text[rng.random(n) < 0.1] = None
    floats = rng.normal(0, 1, n) * 10.0 ** rng.integers(-9, 22, n)
    return pa.table(
        {
            "i": pa.array(rng.integers(-(2**40), 2**40, n)),
            "s": pa.array(text.tolist(), pa.string()),
            "f": pa.array(floats),
            "ts": pa.array(
                [dt.datetime(2024, 1, 1) + dt.timedelta(microseconds=int(v)) for v in
                 rng.integers(0, 10**12, n)]
            ),
        }
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_large_table_encodes_the_same_in_parts_on_two_threads(fmt: str) -> None:
    table = _wide_table(encode._PARALLEL_ROWS + 1001)
    if fmt == "csv":
        halves = b"".join(bytes(b) for b in encode.encode_csv(table))
        whole = b"".join(bytes(b) for b in encode._encode_csv(table, ","))
    else:
        halves = b"".join(bytes(b) for b in encode.encode_jsonl(table))
        whole = b"".join(bytes(b) for b in encode._encode_jsonl(table))
    assert halves == whole
    assert halves.count(b"\n") >= table.num_rows


def test_a_table_is_encoded_without_waiting_for_another_jobs_on_the_worker() -> None:
    """The shared worker busy with another job's table: this one is encoded whole by its
    own thread, its queued help withdrawn, not waited for."""
    table = _wide_table(encode._PARALLEL_ROWS + 1001)
    release = threading.Event()
    busy = encode._worker().submit(release.wait, 30)
    done: list[bytes] = []
    encoder = threading.Thread(
        target=lambda: done.append(b"".join(bytes(b) for b in encode.encode_csv(table)))
    )
    try:
        encoder.start()
        encoder.join(10)
        assert done, "the encode waited for the busy worker"
    finally:
        release.set()
        busy.result()
        encoder.join()
    assert done[0] == b"".join(bytes(b) for b in encode._encode_csv(table, ","))


def _encoded(part: pa.Array, fmt: str) -> bytes:
    table = pa.table({"v": part})
    buffers = encode._encode_csv(table, ",") if fmt == "csv" else encode._encode_jsonl(table)
    return b"".join(bytes(b) for b in buffers)


def test_a_slice_is_checked_for_quotes_by_its_own_characters() -> None:
    # A slice shares its buffer with the values around it, which hold the specials.
    values = pa.array(['a,"b"\n', "plain", "text", "x\ty"], pa.string())
    assert _encoded(values.slice(1, 2), "csv") == b"plain\ntext\n"
    assert _encoded(values.slice(1, 2), "jsonl") == b'{"v":"plain"}\n{"v":"text"}\n'
    assert _encoded(values.slice(0, 1), "csv") == b'"a,""b""\n"\n'
    assert _encoded(values.slice(3, 1), "jsonl") == b'{"v":"x\\ty"}\n'


def test_floats_are_spelt_as_python_repr_at_every_magnitude() -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    values = rng.normal(0, 1, n) * 10.0 ** rng.integers(-12, 25, n)
    values = np.concatenate([values, np.round(values, 2), np.floor(values), [0.0, -0.0]])
    text = encode._floats(pa.array(values)).to_pylist()
    assert text == [repr(v) for v in values.tolist()]


def test_a_block_inferred_again_gives_its_types_and_a_decoder_of_its_own() -> None:
    first = CsvDecoder.infer(b"1,x\n2,y\n", ["a", "b"])
    again = CsvDecoder.infer(b"1,x\n2,y\n", ["a", "b"])
    assert first is not None and again is not None and first is not again
    assert again.schema == first.schema == pa.schema({"a": pa.int64(), "b": pa.string()})
    other = CsvDecoder.infer(b"1.5,x\n2,y\n", ["a", "b"])
    assert other is not None and other.schema.field("a").type == pa.float64()
    renamed = CsvDecoder.infer(b"1,x\n2,y\n", ["c", "d"])
    assert renamed is not None and renamed.schema.names == ["c", "d"]
    assert CsvDecoder.infer(b"1;x\n", ["a"], ";") is not None
