"""How CSV rows are laid out from their cells (`encode._encode_csv`): by Arrow's CSV
writer, quoting nothing, when no cell was quoted; by Arrow's joins otherwise. Both give
the same bytes, which Python's csv module reads back as the values."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import NoReturn

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.file import encode

_DELIMITERS = [",", ";", "\t", "|", ":"]


def _csv(table: pa.Table, delimiter: str = ",") -> bytes:
    return b"".join(bytes(b) for b in encode._encode_csv(table, delimiter))


def _by_joins(table: pa.Table, delimiter: str) -> bytes:
    """The rows as the joins lay them out, whatever the cells hold."""
    parts = []
    for batch in table.to_batches():
        if batch.num_rows:
            cells = [encode._csv_cells(col, delimiter)[0] for col in batch.columns]
            parts.append(bytes(encode._joined(cells, delimiter)))
    return b"".join(parts)


def _never(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("not this way")


def test_unquoted_cells_are_laid_out_by_arrows_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    table = pa.table(
        {
            "id": pa.array([1, None, 3], pa.int64()),
            "name": pa.array(["a", "b b", None]),
            "price": pa.array([2.5, 15025.0, None]),
            "at": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None, dt.datetime(2024, 1, 2)]),
        }
    )
    monkeypatch.setattr(encode, "_joined", _never)
    assert _csv(table) == (b"1,a,2.5,2024-01-02T03:04:05\n,b b,15025.0,\n3,,,2024-01-02T00:00:00\n")


@pytest.mark.parametrize("value", ["a,b", 'say "hi"', "two\nlines", "cr\rhere", ""])
def test_a_quoted_cell_takes_the_joins(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    table = pa.table({"n": pa.array([1, 2]), "s": pa.array(["plain", value])})
    monkeypatch.setattr(encode.pa_csv, "write_csv", _never)
    out = _csv(table)
    assert list(csv.reader(io.StringIO(out.decode(), newline=""))) == [
        ["1", "plain"],
        ["2", value],
    ]


def test_a_delimiter_inside_numbers_or_times_quotes_them() -> None:
    table = pa.table({"at": pa.array([dt.date(2024, 1, 2)]), "x": pa.array([-1.5])})
    assert _csv(table, "-") == b'"2024-01-02"-"-1.5"\n'
    assert _csv(table, ":") == b"2024-01-02:-1.5\n"


_TEXT = st.one_of(st.none(), st.text(alphabet=st.sampled_from('ab ,;:|\t"\n\r\u00e9'), max_size=6))


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-(2**40), 2**40)),
            _TEXT,
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            st.one_of(st.none(), st.booleans()),
        ),
        min_size=1,
        max_size=30,
    ),
    delimiter=st.sampled_from(_DELIMITERS),
)
def test_either_way_the_bytes_are_the_joins_and_read_back(
    rows: list[tuple[int | None, str | None, float | None, bool | None]], delimiter: str
) -> None:
    ids, texts, floats, flags = (list(c) for c in zip(*rows, strict=True))
    table = pa.table(
        {
            "i": pa.array(ids, pa.int64()),
            "t": pa.array(texts, pa.string()),
            "f": pa.array(floats, pa.float64()),
            "b": pa.array(flags, pa.bool_()),
        }
    )
    out = _csv(table, delimiter)
    assert out == _by_joins(table, delimiter)
    read = list(csv.reader(io.StringIO(out.decode(), newline=""), delimiter=delimiter))
    expected = [
        [
            "" if i is None else str(i),
            "" if t is None else t,
            "" if f is None else repr(f),
            "" if b is None else str(b).lower(),
        ]
        for i, t, f, b in rows
    ]
    assert read == expected


_UNIT_SECONDS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


@settings(max_examples=200, deadline=None)
@given(
    unit=st.sampled_from(list(_UNIT_SECONDS)),
    tz=st.sampled_from([None, "UTC", "Europe/Paris", "+05:30"]),
    seconds=st.lists(st.none() | st.integers(-(10**9), 9 * 10**9), min_size=1, max_size=8),
    fraction=st.booleans(),
)
def test_whole_second_timestamps_are_written_as_the_pattern_writes_them(
    unit: str, tz: str | None, seconds: list[int | None], fraction: bool
) -> None:
    per = _UNIT_SECONDS[unit]
    values = [None if s is None else s * per + (per // 2 if fraction else 0) for s in seconds]
    col = pa.array(values, pa.timestamp(unit, tz))
    fast = encode._plain_text(col)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encode, "_whole_seconds", lambda col: None)
        assert fast.to_pylist() == encode._plain_text(col).to_pylist()
    # Whole seconds take no pattern pass; a fraction falls back to it.
    whole = not fraction or unit == "s" or all(s is None for s in seconds)
    assert (encode._whole_seconds(col) is not None) == whole
    if whole and tz in (None, "UTC"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(encode.pc, "replace_substring_regex", _never)
            assert encode._plain_text(col).to_pylist() == fast.to_pylist()
