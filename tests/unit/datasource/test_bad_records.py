"""Bad records as columns: the records they stand for, their groups, and the block
passes that find them (`drop_lines`, `raw_lines`)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from velostream.datasource.bad_records import (
    BadRecords,
    coded,
    failure_groups,
    failure_keys,
    joined,
)
from velostream.datasource.file import bad_lines
from velostream.datasource.file.bad_lines import (
    LineError,
    LineErrors,
    drop_lines,
    line_bounds,
    line_fields,
    raw_lines,
)
from velostream.datasource.file.checks import type_messages
from velostream.datasource.traits import BadRecord
from velostream.errors import ErrorKind, Stage

PARSE, TYPE = ErrorKind.PARSE, ErrorKind.TYPE


def columns() -> BadRecords:
    raws = pa.array([b"1,a", b"2,b,x", b"3,c", b"4,\xff"], pa.large_binary())
    kinds = [PARSE, TYPE, PARSE, PARSE]
    messages = ["short", "not a number", "short", "invalid UTF-8"]
    return BadRecords(raws, "in.csv:", np.array([2, 5, 9, 12]), *coded(kinds, messages))


def as_records() -> list[BadRecord]:
    return [
        BadRecord(b"1,a", "in.csv:2", "short", PARSE),
        BadRecord(b"2,b,x", "in.csv:5", "not a number", TYPE),
        BadRecord(b"3,c", "in.csv:9", "short", PARSE),
        BadRecord(b"4,\xff", "in.csv:12", "invalid UTF-8", PARSE),
    ]


def test_raws_given_as_a_function_are_made_once_when_first_asked_for() -> None:
    made: list[int] = []
    eager = columns()

    def make() -> pa.Array:
        made.append(1)
        return eager.raws

    bad = BadRecords(make, "in.csv:", eager.numbers, eager.codes, eager.reasons)
    assert len(bad) == 4 and [g.records for g in bad.groups()] == [2, 1, 1] and not made
    assert list(bad) == as_records() and bad[1] == as_records()[1]
    assert bad.raws.to_pylist()[0] == b"1,a" and made == [1]


def test_columns_stand_for_the_records_they_hold() -> None:
    bad = columns()
    assert len(bad) == 4 and bool(bad)
    assert list(bad) == as_records()
    assert all(type(record) is BadRecord for record in bad)
    assert bad[1] == as_records()[1] and bad[-1] == as_records()[-1]
    assert bad[1:3] == as_records()[1:3]
    assert bad.refs() == ["in.csv:2", "in.csv:5", "in.csv:9", "in.csv:12"]
    with pytest.raises(IndexError):
        bad[4]


@pytest.mark.parametrize("make", [columns, as_records])
def test_groups_count_every_record_and_name_the_last(make) -> None:  # type: ignore[no-untyped-def]
    groups = failure_groups(make())
    assert [(g.stage, g.kind, g.message, g.records, g.last_ref) for g in groups] == [
        (Stage.DESERIALIZE, PARSE, "short", 2, "in.csv:9"),
        (Stage.DESERIALIZE, TYPE, "not a number", 1, "in.csv:5"),
        (Stage.DESERIALIZE, PARSE, "invalid UTF-8", 1, "in.csv:12"),
    ]
    keys = list(failure_keys(make()))
    assert keys == list(failure_keys(as_records()))
    assert [keys.index(g.key) for g in groups] == [0, 1, 3]


def test_the_same_message_of_another_kind_or_stage_is_another_group() -> None:
    bad = [
        BadRecord(b"a", "x:1", "bad", PARSE),
        BadRecord(b"b", "x:2", "bad", TYPE),
        BadRecord(b"c", "x:3", "bad", PARSE, Stage.PROCESS),
        BadRecord(b"d", "x:4", "bad", PARSE),
    ]
    assert [(g.records, g.last_ref) for g in failure_groups(bad)] == [
        (2, "x:4"),
        (1, "x:2"),
        (1, "x:3"),
    ]


def test_joined_keeps_columns_unless_both_have_records() -> None:
    bad = columns()
    assert joined(bad, []) is bad and joined([], bad) is bad
    assert joined(bad, as_records()[:1]) == [*as_records(), as_records()[0]]


BLOCK = b"a,1\nbb,22\r\nccc\n\nd,4\neee,55,x\nf,6"


@pytest.mark.parametrize("drop", [[], [0], [6], [2, 3], [0, 1, 2, 3, 4, 5, 6], [1, 5], [2, 4, 6]])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_drop_lines_joins_the_rest_and_raw_lines_gives_the_dropped(drop, kind) -> None:  # type: ignore[no-untyped-def]
    block = kind(BLOCK)
    lines = BLOCK.split(b"\n")
    bounds = line_bounds(block, len(lines))
    assert bounds is not None
    which = np.array(drop, np.int64)
    kept = b"".join(line + b"\n" for i, line in enumerate(lines) if i not in drop)
    if 6 not in drop:
        kept = kept[:-1]  # the last line has no line break
    assert drop_lines(block, bounds, which).to_pybytes() == kept
    raws = raw_lines(block, bounds, which).to_pylist()
    assert raws == [lines[i].removesuffix(b"\r") for i in drop]


@pytest.mark.parametrize(
    ("block", "n_lines", "fields"),
    [
        (b"a,b,c\n1,2\n\n,,,\r\nx", 5, [3, 2, 1, 4, 1]),
        (b"a,b\n", 1, [2]),
        (b"", 0, []),
        (b"\n\n", 2, [1, 1]),
    ],
)
def test_line_fields_are_delimiters_plus_one_a_line(
    block: bytes, n_lines: int, fields: list[int]
) -> None:
    split = line_fields(block, n_lines, ",")
    assert split is not None
    bounds, counts = split
    assert counts.tolist() == fields
    expected = line_bounds(block, n_lines)
    assert expected is not None
    assert bounds.starts.tolist() == expected.starts.tolist()
    assert bounds.ends.tolist() == expected.ends.tolist()
    assert line_fields(block, n_lines + 1, ",") is None


@pytest.mark.parametrize("run_bytes", [1, 2, 7, 1 << 19])
@pytest.mark.parametrize("last_break", [True, False])
def test_line_fields_agree_over_runs(
    run_bytes: int, last_break: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of lines (the last one short, some lines empty or long) give the same answer."""
    monkeypatch.setattr(bad_lines, "_RUN_BYTES", run_bytes)
    lines = [b"a,b,c", b"", b"," * 300, b"1,2\r", b"x", b"", b";,;", b"7,8,9,10"]
    block = b"\n".join(lines) + (b"\n" if last_break else b"")
    split = line_fields(block, len(lines), ",")
    assert split is not None
    bounds, counts = split
    assert counts.tolist() == [line.count(b",") + 1 for line in lines]
    expected = line_bounds(block, len(lines))
    assert expected is not None
    assert bounds.starts.tolist() == expected.starts.tolist()
    assert bounds.ends.tolist() == expected.ends.tolist()


def test_type_messages_say_each_distinct_value_once_cut_past_80_characters() -> None:
    long = "é" * 81
    values = pa.chunked_array([["n/a", "x"], ["n/a", long, "n/a"]])
    codes, messages = type_messages(pa.field("price", pa.float64()), values)
    said = "column 'price': '{}' is not a valid double"
    assert messages == [said.format("n/a"), said.format("x"), said.format("é" * 77 + "...")]
    assert codes.tolist() == [0, 1, 0, 2, 0], "a repeated value's message is made once"
    exactly_80 = type_messages(pa.field("n", pa.int64()), pa.array(["7" * 80]))[1]
    assert exactly_80 == [f"column 'n': '{'7' * 80}' is not a valid integer (int64)"]


@pytest.mark.parametrize("commas", [254, 255, 256, 257, 511])
def test_line_fields_count_long_lines_exactly_beside_short_ones(commas: int) -> None:
    """Lines under 256 bytes are summed in bytes: a longer line must not wrap."""
    lines = [b"a,b", b"," * commas, b"1,2,3"]
    block = b"\n".join(lines) + b"\n"
    split = line_fields(block, len(lines), ",")
    assert split is not None
    assert split[1].tolist() == [line.count(b",") + 1 for line in lines]


def test_groups_join_equal_reasons_under_two_codes_in_order_of_first_record() -> None:
    reasons = [(TYPE, "not a number"), (PARSE, "short"), (TYPE, "not a number")]
    bad = BadRecords(
        pa.array([b"r"] * 6, pa.large_binary()),
        "in.csv:",
        np.array([3, 4, 7, 8, 10, 11]),
        np.array([1, 2, 0, 1, 2, 1], np.intp),
        reasons,
    )
    assert [r.kind for r in bad] == [PARSE, TYPE, TYPE, PARSE, TYPE, PARSE]
    assert [r.message for r in bad][:2] == ["short", "not a number"]
    assert [(g.message, g.records, g.last_ref) for g in bad.groups()] == [
        ("short", 3, "in.csv:11"),
        ("not a number", 3, "in.csv:10"),
    ]
    assert bad.groups() == failure_groups(list(bad))


@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from([PARSE, TYPE]), st.sampled_from("abc")), max_size=8),
        max_size=4,
    ),
    st.randoms(use_true_random=False),
)
def test_merged_line_errors_keep_each_line_with_its_reason(
    parts: list[list[tuple[ErrorKind, str]]], rnd: random.Random
) -> None:
    lines = list(range(sum(map(len, parts))))
    rnd.shuffle(lines)
    made, expected, at = [], {}, 0
    for part in parts:
        mine = sorted(lines[at : at + len(part)])
        at += len(part)
        pairs = list(zip(mine, part, strict=True))
        made.append(LineErrors.of(LineError(n, k, m) for n, (k, m) in pairs))
        expected.update({n: (k, m) for n, (k, m) in pairs})
    merged = LineErrors.merged(made)
    assert [tuple(e) for e in merged] == [(n, *expected[n]) for n in sorted(expected)]
