"""The byte-size parser behind `job.memory.limit` and `--job-memory-limit`."""

from __future__ import annotations

import pytest

from velostream.errors import ConfigurationError
from velostream.sql.size import format_size, parse_size_bytes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MB", 512_000_000),
        ("512 MiB", 512 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2gb", 2_000_000_000),
        ("800kb", 800_000),
        ("4096", 4096),
        ("1TiB", 1024**4),
    ],
)
def test_examples(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["", "-1MB", "12 parsecs", "MB", "0", "0.4B", "1e9"])
def test_invalid_texts_raise_a_configuration_error_naming_them(text: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid size"):
        parse_size_bytes(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (512, "512 B"),
        (256 * 1024**2, "256.0 MiB"),
        (2 * 1024**3, "2.0 GiB"),
        (3 * 1024**4, "3072.0 GiB"),
    ],
)
def test_format(size: int, text: str) -> None:
    assert format_size(size) == text
