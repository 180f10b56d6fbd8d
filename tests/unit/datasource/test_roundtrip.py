"""What file_sink writes, file_source reads back with the same values."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource

from .conftest import drain

# CSV text cannot tell "123" from 123: strings get a letter first so inference keeps
# them text. CSV values are lines, so no line breaks; JSON lines may hold any text.
_CSV_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
).map(lambda s: "s" + s)
_JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _rows(text: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict[str, object]]]:
    row = st.fixed_dictionaries(
        {
            "i": st.none() | st.integers(-(2**63), 2**63 - 1),
            "f": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "s": st.none() | text,
        }
    )
    return st.lists(row, max_size=25)


def _round_trip(rows: list[dict[str, object]], fmt: str, batch: int) -> list[dict[str, object]]:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("s", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"out.{fmt}")
        sink = FileSink("out", {"path": path, "format": fmt})
        sink.open(schema)
        for start in range(0, table.num_rows, batch):
            sink.write(table.slice(start, batch))
        sink.close()
        out = drain(FileSource("in", {"path": path, "format": fmt}), max_records=7)
    assert out.bad == []
    return out.rows


def _same(a: list[dict[str, object]], b: list[dict[str, object]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            u, v = x[key], y[key]
            if isinstance(u, float) and isinstance(v, float):
                assert u == v and math.copysign(1, u) == math.copysign(1, v)
            else:
                assert u == v, (key, u, v)


@settings(max_examples=120, deadline=None)
@given(rows=_rows(_CSV_TEXT), batch=st.integers(1, 10))
def test_csv_round_trip(rows: list[dict[str, object]], batch: int) -> None:
    _same(_round_trip(rows, "csv", batch), rows)


@settings(max_examples=120, deadline=None)
@given(rows=_rows(_JSON_TEXT), batch=st.integers(1, 10))
def test_jsonl_round_trip(rows: list[dict[str, object]], batch: int) -> None:
    _same(_round_trip(rows, "jsonl", batch), rows)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_of_edge_values(fmt: str) -> None:
    rows = [
        {"i": 2**63 - 1, "f": 1e-05, "s": 's,"quoted"'},
        {"i": -(2**63), "f": -0.0, "s": "s "},
        {"i": None, "f": 15025.0, "s": "s"},
        {"i": 0, "f": None, "s": None},
        {"i": 7, "f": 1e300, "s": "sünï ✓"},
    ]
    _same(_round_trip(rows, fmt, 2), rows)
