"""The one byte-size parser: `job.memory.limit` and the server's `--job-memory-limit`."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from velostream.errors import ConfigurationError

__all__ = ["SIZE_UNITS", "format_size", "parse_size_bytes"]

SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
"""Bytes per unit: KB, MB, GB are powers of 1000 (as DuckDB reads them), KiB... of 1024."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size_bytes(text: str) -> int:
    """Bytes from `'512MB'`, `'1.5GiB'`, `'800 kb'`; a bare number is bytes.

    Anything else (a negative number, an unknown unit, zero) raises `ConfigurationError`
    naming the text.
    """
    match = _SIZE.match(text)
    unit = (match.group(2) or "b").lower() if match else ""
    if match is None or unit not in SIZE_UNITS:
        raise ConfigurationError(
            f"invalid size {text!r}: expected a number and one of "
            "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB such as '512MB' (a bare number is bytes)"
        )
    size = math.floor(Fraction(match.group(1)) * SIZE_UNITS[unit])
    if size < 1:
        raise ConfigurationError(f"invalid size {text!r}: must be at least 1 byte")
    return size


def format_size(size: int) -> str:
    """`size` bytes the way a person reads it (`512 B`, `256.0 MiB`, `2.0 GiB`)."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"
