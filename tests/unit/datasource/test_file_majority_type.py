"""`majority_type`: the type at least 80% of an inferred text column's values have,
found by matching each distinct value once, weighed by how often it comes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.file import checks
from velostream.datasource.file.checks import MAJORITY, majority_type

_VALUES = st.sampled_from(
    ["1", "-42", " 7 ", "3.5", "1e3", ".5", "2024-01-15 09:30:00", "2024-01-15T09:30",
     "n/a", "", "Zürich", "1,5", "0x1F", "99999999999999999999"]
)  # fmt: skip


def _by_value(column: pa.ChunkedArray) -> pa.DataType | None:
    """Every value matched against every pattern, one by one: what the count must equal."""
    values = pc.drop_null(column)
    values = values.filter(pc.not_equal(values, pa.scalar("", values.type)))
    total = len(values)
    if total < 2:
        return None
    for pattern, data_type in checks._TYPE_PATTERNS:
        matched = pc.sum(pc.match_substring_regex(values, pattern)).as_py() or 0
        if matched < total and matched >= MAJORITY * total:
            return data_type
    return None


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.lists(st.none() | _VALUES, max_size=30), min_size=1, max_size=3))
def test_distinct_values_weighed_give_the_type_every_value_gives(
    chunks: list[list[str | None]],
) -> None:
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], pa.string())
    assert majority_type(column) == _by_value(column)


def test_a_column_of_few_names_is_matched_once_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    match = pc.match_substring_regex

    def counted(values: pa.Array, pattern: str) -> pa.Array:
        sizes.append(len(values))
        return match(values, pattern)

    monkeypatch.setattr(checks.pc, "match_substring_regex", counted)
    column = pa.chunked_array([pa.array(["Oslo", "Lima", "Bern", "Lima"] * 20_000)])
    assert majority_type(column) is None
    assert sizes == [3, 3, 3]
