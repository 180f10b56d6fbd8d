"""Bad lines are values: isolated, reported once with line and kind, good rows go on."""

from __future__ import annotations

import random
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.file import formats
from velostream.datasource.file import source as file_source
from velostream.datasource.file.checks import check_column, check_known
from velostream.datasource.file.csvlines import CsvDecoder
from velostream.datasource.file.jsonl import JsonDecoder
from velostream.datasource.file.source import FileSource
from velostream.errors import ErrorKind, Stage

from .conftest import drain

Make = Callable[..., FileSource]
PARSE, TYPE = ErrorKind.PARSE, ErrorKind.TYPE


def _line(ref: str) -> int:
    return int(ref.rsplit(":", 1)[1])


def _poison_csv(rows: int, seed: int) -> tuple[str, list[dict[str, object]], dict[int, ErrorKind]]:
    """1% wrong field counts, 1% values failing their type; none in the first 200 rows."""
    rng = random.Random(seed)
    lines, good, bad = ["id,symbol,price,qty"], [], {}
    for i in range(rows):
        number = i + 2
        r = rng.random() if i >= 200 else 1.0
        if r < 0.01:
            lines.append(f"{i},S{i % 7}" if r < 0.005 else f"{i},S{i % 7},1.5,2,extra")
            bad[number] = PARSE
        elif r < 0.02:
            field = rng.choice(["id", "price", "qty"])
            values = {"id": str(i), "price": "1.25", "qty": "7"}
            values[field] = rng.choice(["n/a", "1.2.3", "12abc", "", " ", "0x"])
            if values[field] in ("", " ") and field != "qty":
                values[field] = "?"
            if values[field] == "":
                values[field] = "-"  # an empty field is NULL, not an error
            lines.append(f"{values['id']},S{i % 7},{values['price']},{values['qty']}")
            bad[number] = TYPE
        else:
            price = rng.randint(0, 10**6) / 100
            lines.append(f"{i},S{i % 7},{price},{i % 50}")
            good.append({"id": i, "symbol": f"S{i % 7}", "price": price, "qty": i % 50})
        if i % 97 == 0:
            lines.append("")  # empty lines are skipped, but still count as lines
    return "\n".join(lines) + "\n", good, bad


def _renumber(text: str, bad: dict[int, ErrorKind]) -> dict[int, ErrorKind]:
    """Line numbers of bad lines, accounting for the empty lines inserted."""
    out, number = {}, 0
    logical = 1
    for raw in text.split("\n")[:-1]:
        number += 1
        if raw == "":
            continue
        if logical in bad:
            out[number] = bad[logical]
        logical += 1
    return out


@pytest.mark.parametrize(("max_records", "seed"), [(1000, 1), (333, 2), (20_000, 3)])
def test_csv_poison_file(
    make_source: Make, monkeypatch: pytest.MonkeyPatch, max_records: int, seed: int
) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 2000)
    text, good, bad = _poison_csv(20_000, seed)
    bad = _renumber(text, bad)
    source = make_source(text)
    out = drain(source, max_records=max_records)
    assert out.rows == good
    assert [(_line(b.ref), b.kind) for b in out.bad] == sorted(bad.items())
    assert all(b.stage is Stage.DESERIALIZE for b in out.bad)
    lines = text.split("\n")
    assert all(b.raw == lines[_line(b.ref) - 1].encode() for b in out.bad)
    # Every good row's ref points at the line it came from.
    assert [lines[_line(r) - 1].encode() for r in out.refs] == out.raws
    assert len(out.rows) + len(out.bad) == sum(1 for x in lines if x) - 1


def test_bad_line_messages(make_source: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 30)
    text = "id,price,flag,day\n1,1.5,true,2024-01-01\n2,2.5,false,2024-01-02\n" + (
        "3,x,true,2024-01-03\n"
        "4,1.5\n"
        "5,1.5,maybe,2024-01-05\n"
        "6,1.5,true,2024-02-30\n"
        "99999999999999999999,1,true,2024-01-07\n"
        "8,1e400,TRUE, 2024-01-08 \n"
    )
    out = drain(make_source(text), max_records=100)
    assert [(_line(b.ref), b.kind, b.message) for b in out.bad] == [
        (4, TYPE, "column 'price': 'x' is not a valid double"),
        (5, PARSE, "expected 4 fields, got 2"),
        (6, TYPE, "column 'flag': 'maybe' is not a valid boolean"),
        (7, TYPE, "column 'day': '2024-02-30' is not a valid date"),
        (8, TYPE, "column 'id': '99999999999999999999' is not a valid integer (int64)"),
    ]
    assert out.rows[-1]["id"] == 8 and out.rows[-1]["price"] == float("inf")


def test_invalid_utf8_and_unterminated_quote(make_source: Make) -> None:
    text = b'id,name\n1,caf\xc3\xa9\n2,bad\xff\n3,"open\n4,"closed, fine"\n5,x\n'
    out = drain(make_source(text))
    assert out.rows == [
        {"id": 1, "name": "café"},
        {"id": 4, "name": "closed, fine"},
        {"id": 5, "name": "x"},
    ]
    assert [(_line(b.ref), b.kind, b.message) for b in out.bad] == [
        (3, PARSE, "invalid UTF-8 at byte 5 of the line"),
        (4, PARSE, "unterminated quoted value (a value may not contain a line break)"),
    ]
    assert out.bad[0].raw == b"2,bad\xff"


def test_a_block_of_only_bad_lines(make_source: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 6)
    out = drain(make_source("a,b\n1,2\n" + "x\n" * 5 + "3,4\n"), max_records=3)
    assert out.rows == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert [_line(b.ref) for b in out.bad] == [3, 4, 5, 6, 7]


def _poison_jsonl(rows: int) -> tuple[str, list[dict[str, object]], dict[int, ErrorKind]]:
    rng = random.Random(7)
    lines, good, bad = [], [], {}
    for i in range(rows):
        r = rng.random() if i >= 100 else 1.0
        if r < 0.01:
            lines.append(rng.choice(['{"id": 1,', "not json", '{"id": 2} trailing', "[1, 2]"]))
            bad[i + 1] = PARSE
        elif r < 0.02:
            lines.append(rng.choice([f'{{"id": "{i}", "v": 1.5}}', f'{{"id": {i}, "v": "x"}}',
                                     f'{{"id": {i}.5, "v": 1.0}}']))  # fmt: skip
            bad[i + 1] = TYPE
        else:
            lines.append(f'{{"id": {i}, "v": {i / 4}}}')
            good.append({"id": i, "v": i / 4})
    return "\n".join(lines) + "\n", good, bad


@pytest.mark.parametrize("max_records", [500, 7000])
def test_jsonl_poison_file(
    make_source: Make, monkeypatch: pytest.MonkeyPatch, max_records: int
) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 1000)
    text, good, bad = _poison_jsonl(6000)
    out = drain(make_source(text, "data.jsonl", format="jsonl"), max_records=max_records)
    assert out.rows == good
    assert [(_line(b.ref), b.kind) for b in out.bad] == sorted(bad.items())
    lines = text.split("\n")
    assert all(b.raw == lines[_line(b.ref) - 1].encode() for b in out.bad)
    assert [lines[_line(r) - 1].encode() for r in out.refs] == out.raws


def test_jsonl_messages(make_source: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_source, "INFER_BYTES", 40)
    text = (
        '{"id": 1, "ts": "2024-01-01 10:00:00"}\n'
        '{"id": 2, "ts": "nope"}\n'
        '{"id": "3"}\n'
        '{"id": 4,}\n'
        '{"id": 5, "id": 6}\n'
        "\n   \n"
        '{"id": 7.5}\n'
        '{"id": 8, "ts": null}\n'
    )
    out = drain(make_source(text, "d.jsonl", format="jsonl"))
    assert [r["id"] for r in out.rows] == [1, 8]
    assert [(_line(b.ref), b.kind, b.message) for b in out.bad] == [
        (2, TYPE, "column 'ts': 'nope' is not a valid timestamp[s]"),
        (3, TYPE, "column 'id': expected number, got string"),
        (4, PARSE, "invalid JSON: Missing a name for object member."),
        (5, PARSE, "key 'id' appears twice"),
        (8, TYPE, "column 'id': '7.5' is not a valid int64"),
    ]


# -- the vectorised checks agree with Arrow's own CSV conversion ------------------------

_TOKENS = {
    pa.int64(): st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.sampled_from(["0x1F", " 12", "7\t", "+1", "--2", "-", "1.0", "1e3", "9" * 20, "",
                         "abc", "0x", "-0x1", "00042"]),
    ),
    pa.float64(): st.one_of(
        st.floats(allow_nan=False).map(repr),
        st.sampled_from(["1.", ".5", "-.5", "+2.5", "1e5", "1E-3", "inf", "-Infinity", "nan",
                         " 3.5 ", "1e", "1..2", "--1", "0x10", "", "1,5", ".", "-", "e5"]),
    ),
    pa.bool_(): st.sampled_from(["true", "True", "TRUE", "false", "0", "1", "tRue", "yes",
                                 " true", ""]),
    pa.timestamp("s"): st.sampled_from(["2024-01-01", "2024-01-01 10:00", "2024-01-01T10:00:00",
                                        "2024-02-30", "2024-01-01 10:00:00.5", "2024-1-1",
                                        "20240101", "2024-01-01T25:00:00", "", "x"]),
    pa.date32(): st.sampled_from(["2024-01-01", " 2024-01-01", "2024-13-01", "2024-01-01 10:00",
                                  "", "01/02/2024"]),
}  # fmt: skip


@pytest.mark.parametrize("target", list(_TOKENS), ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_check_column_agrees_with_arrow_csv(target: pa.DataType, data: st.DataObject) -> None:
    values = data.draw(st.lists(_TOKENS[target], min_size=1, max_size=30))
    values = [v.replace('"', "") for v in values]
    column = pa.array([None if v == "" else v for v in values], pa.string())
    converted, failed = check_column(column, target, expect_failures=data.draw(st.booleans()))
    failures = [False] * len(values) if failed is None else failed.to_pylist()
    for value, got, fail in zip(values, converted.to_pylist(), failures, strict=True):
        oracle = pa_csv.ConvertOptions(
            column_types={"v": target}, null_values=[""], strings_can_be_null=True
        )
        try:
            expected = (
                pa_csv.read_csv(pa.py_buffer(f'v\n"{value}"\n'.encode()), convert_options=oracle)
                .column(0)[0]
                .as_py()
            )
        except pa.ArrowInvalid:
            assert fail, f"{value!r} should fail as {target}"
            continue
        assert not fail, f"{value!r} should convert to {target}"
        assert got == expected or (got != got and expected != expected)


@pytest.mark.parametrize("target", [pa.int64(), pa.float64(), pa.date32()], ids=str)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_check_column_with_known_bad_values_finds_the_same(
    target: pa.DataType, data: st.DataObject
) -> None:
    """Values that failed before are looked up; the result is the same, new failures too."""
    values = data.draw(st.lists(_TOKENS[target], min_size=1, max_size=30))
    column = pa.array([None if v == "" else v for v in values], pa.string())
    converted, failed = check_column(column, target)
    failing = [] if failed is None else column.filter(pc.fill_null(failed, False)).to_pylist()
    known = pa.array(data.draw(st.lists(st.sampled_from(failing))) if failing else [], pa.string())
    checked = check_known(column, target, known)
    if failing and set(failing) - set(known.to_pylist()):
        assert checked is None  # a value not known fails too
    again, failed_again = checked or check_column(column, target)
    assert again.to_pylist() == converted.to_pylist() or str(again) == str(converted)
    expected = [False] * len(values) if failed is None else pc.fill_null(failed, False)
    got = [False] * len(values) if failed_again is None else pc.fill_null(failed_again, False)
    assert pa.array(got, pa.bool_()).to_pylist() == pa.array(expected, pa.bool_()).to_pylist()


def test_a_decoder_learns_bad_values_and_still_finds_new_ones() -> None:
    """The second block has the first's placeholder and a new bad value: both are found."""
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64())])
    decoder = CsvDecoder(schema)
    first = decoder.decode(b"1,1.5\n2,n/a\n3,2.5\n", 3)
    assert [(e.line, e.message) for e in first.errors] == [
        (1, "column 'f': 'n/a' is not a valid double")
    ]
    second = decoder.decode(b"4,n/a\n5,x\n6,3.5\n7,n/a\n", 4)
    assert [e.line for e in second.errors] == [0, 1, 3]
    assert second.table.to_pylist() == [{"i": 6, "f": 3.5}]
    third = decoder.decode(b"8,x\n9,n/a\n10,\n", 3)
    assert [e.line for e in third.errors] == [0, 1]
    assert third.table.to_pylist() == [{"i": 10, "f": None}]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", "-7", " 3", "x", "", "0x10", "9" * 20]),
            st.sampled_from(["1.5", "2", "nan", "1e3", "y", "", " 4 "]),
            st.sampled_from(["true", "0", "FALSE", "maybe", ""]),
            st.sampled_from(["a", "", "b c"]),
            st.integers(0, 6),
        ),
        max_size=40,
    )
)
def test_dirty_path_matches_one_parse_per_line(rows: list[tuple[str, str, str, str, int]]) -> None:
    """Oracle: Arrow's typed parse of each line on its own."""
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("b", pa.bool_()),
                        ("s", pa.string())])  # fmt: skip
    lines = []
    for i, f, b, s, shape in rows:
        lines.append("" if shape == 0 else f"{i},{f}" if shape == 1 else f"{i},{f},{b},{s}")
    block = ("\n".join(lines) + "\n").encode() if lines else b""
    decoded = CsvDecoder(schema)._decode_dirty(block, len(lines))
    options = pa_csv.ConvertOptions(
        column_types=schema, null_values=[""], strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )  # fmt: skip
    expected_rows, expected_bad = [], []
    for n, line in enumerate(lines):
        if not line:
            continue
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(line.encode() + b"\n"),
                read_options=pa_csv.ReadOptions(column_names=schema.names),
                convert_options=options,
            )
            expected_rows.append(table.to_pylist()[0])
        except pa.ArrowInvalid:
            expected_bad.append(n)
    got = decoded.table.to_pylist()
    assert len(got) == len(expected_rows)
    for a, b in zip(got, expected_rows, strict=True):
        assert {k: v for k, v in a.items() if v == v} == {k: v for k, v in b.items() if v == v}
    assert [e.line for e in decoded.errors] == expected_bad


def test_fast_and_dirty_paths_give_the_same_table() -> None:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("t", pa.timestamp("s"))])
    block = b"1,1.5,2024-01-01\n 2 ,nan,2024-01-01 10:00\n0x10,-1e3,\n,,2024-01-01T00:00:01\n"
    fast = CsvDecoder(schema).decode(block, 4)
    dirty = CsvDecoder(schema)._decode_dirty(block, 4)
    assert fast.rows is None and list(fast.errors) == [] and list(dirty.errors) == []
    assert fast.table.schema == dirty.table.schema
    assert str(fast.table.to_pylist()) == str(dirty.table.to_pylist())


def test_json_decoder_fast_and_dirty_agree() -> None:
    block = b'{"a": 1, "b": "x"}\n{"a": null, "b": "y", "c": 3}\n{"b": "z"}\n'
    decoder = JsonDecoder.infer(block)
    assert decoder is not None
    fast = decoder.decode(block, 3)
    dirty = decoder._decode_dirty(block, 3)
    assert fast.table.to_pylist() == dirty.table.to_pylist()
    assert list(dirty.errors) == [] and dirty.rows is None


@pytest.mark.parametrize("json", [False, True])
def test_halves_of_a_large_dirty_block_merge_exactly(
    monkeypatch: pytest.MonkeyPatch, json: bool
) -> None:
    monkeypatch.setattr(formats, "_HALVES_FROM", 64)
    if json:
        good = [f'{{"a": {i}, "b": "x{i}"}}' for i in range(40)]
        bad = ['{"a": oops}', '{"a": "str"}']
        decoder: CsvDecoder | JsonDecoder | None = JsonDecoder.infer(
            ("\n".join(good) + "\n").encode()
        )
    else:
        good = [f"{i},x{i}" for i in range(40)]
        bad = ["1,2,3", "abc,x"]
        decoder = CsvDecoder(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    assert decoder is not None
    lines = []
    for i, line in enumerate(good):
        lines.append(line)
        if i % 7 == 3:
            lines.append(bad[i % 2])
        if i % 11 == 5:
            lines.append("")
    block = ("\n".join(lines) + "\n").encode()
    whole = decoder._decode_dirty(block, len(lines))
    halves = decoder._decode_halves(block, len(lines))
    assert halves.table.to_pylist() == whole.table.to_pylist()
    assert list(halves.errors) == list(whole.errors) and len(halves.errors) == 6
    assert halves.rows is not None and whole.rows is not None
    assert halves.rows.to_pylist() == whole.rows.to_pylist()
