"""The one duration parser: its contract, and that every caller reads through it."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velostream.datasource import registry
from velostream.errors import ConfigurationError
from velostream.sql import parse_duration_ms, planner
from velostream.sql.duration import DURATION_UNITS_MS

UNITS = st.sampled_from(sorted(DURATION_UNITS_MS))
BLANKS = st.sampled_from(["", " ", "  ", "\t"])


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("100ms", 100),
        ("5s", 5000),
        ("1m", 60_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1.5s", 1500),
        ("1.005s", 1005),
        ("0.5", 1),
        ("250", 250),
        (" 10 S ", 10_000),
        ("3MS", 3),
    ],
)
def test_examples(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text", ["", " ", "s", "5 parsecs", "5 minutes", "-1s", "+1s", "1w", "1e3"]
)
def test_invalid_texts_raise_a_configuration_error_naming_them(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_duration_ms(text)
    assert str(caught.value) == (
        f"invalid duration {text!r}: expected a number and one of ms, s, m, h, d "
        "such as '100ms' or '5s' (a bare number is milliseconds)"
    )


@given(number=st.integers(min_value=0, max_value=10**30), unit=UNITS, a=BLANKS, b=BLANKS)
def test_a_whole_number_and_a_unit(number: int, unit: str, a: str, b: str) -> None:
    text = f"{a}{number}{b}{unit.upper() if number % 2 else unit}{a}"
    assert parse_duration_ms(text) == number * DURATION_UNITS_MS[unit]


@given(number=st.integers(min_value=0, max_value=10**12))
def test_a_bare_number_is_milliseconds(number: int) -> None:
    assert parse_duration_ms(str(number)) == number


@given(number=st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False), unit=UNITS)
def test_a_fraction_rounds_to_the_nearest_millisecond(number: Decimal, unit: str) -> None:
    millis = parse_duration_ms(f"{number:f}{unit}")
    assert abs(millis - number * DURATION_UNITS_MS[unit]) <= Decimal("0.5")


_VALID = re.compile(r"\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)


@given(st.text(alphabet="0123456789.-+ smhdwSMH", max_size=12))
def test_anything_else_is_refused(text: str) -> None:
    if _VALID.fullmatch(text):
        assert parse_duration_ms(text) >= 0
    else:
        with pytest.raises(ConfigurationError, match="invalid duration"):
            parse_duration_ms(text)


def test_the_planner_and_the_connectors_read_the_same_parser() -> None:
    assert planner.parse_duration_ms is parse_duration_ms
    assert registry.duration_property({"k": "1.5s"}, "k", 0.0, name="s") == 1.5
    assert registry.duration_property({"k": "250"}, "k", 0.0, name="s") == 0.25
