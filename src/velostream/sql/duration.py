"""The one duration parser: WITH keys, window sizes and connector settings all read it."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from velostream.errors import ConfigurationError

__all__ = ["DURATION_UNITS_MS", "parse_duration_ms"]

DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
"""Milliseconds per unit, in the order messages list them."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)


def parse_duration_ms(text: str) -> int:
    """Milliseconds from `'100ms'`, `'5s'`, `'1.5m'`, `'2h'`, `'1d'`; a bare number is ms.

    Units are case-insensitive and blanks around the parts are ignored; a fraction is
    rounded to the nearest millisecond. Anything else (a negative number, an unknown
    unit, an empty text) raises `ConfigurationError` naming the text. Callers for
    which a duration is optional test for its absence before calling.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ConfigurationError(
            f"invalid duration {text!r}: expected a number and one of ms, s, m, h, d "
            "such as '100ms' or '5s' (a bare number is milliseconds)"
        )
    # Exact, not float: '1.005s' is 1005 ms and a huge number neither overflows nor rounds.
    millis = Fraction(match.group(1)) * DURATION_UNITS_MS[(match.group(2) or "ms").lower()]
    return math.floor(millis + Fraction(1, 2))
