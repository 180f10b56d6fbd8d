"""The WITH keys of `file_source` and `file_sink`: their tables and their check.

`check_file_source` / `check_file_sink` run at validation, through the connector
registry, and report every problem at its line:column before any row is read;
`FileSourceConfig` / `FileSinkConfig` read the same tables when a job starts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from velostream.errors import ConfigurationError
from velostream.sql.connectors import ConnectorOptions
from velostream.sql.size import format_size, parse_size_bytes

__all__ = [
    "DELIMITER_NAMES",
    "JSONL_ALIASES",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_BYTES_CEILING",
    "SINK_FORMATS",
    "SINK_KEYS",
    "SOURCE_FORMATS",
    "SOURCE_KEYS",
    "check_file_sink",
    "check_file_source",
    "parse_delimiter",
    "parse_record_limit",
]

SOURCE_KEYS = frozenset(
    {"path", "format", "delimiter", "has_headers", "watch", "polling_interval", "max.record.bytes"}
)
SINK_KEYS = frozenset({"path", "format", "append", "delimiter"})
SOURCE_FORMATS = ("csv", "csv_no_header", "jsonl")
SINK_FORMATS = ("csv", "jsonl")
JSONL_ALIASES = {"json": "jsonl", "jsonlines": "jsonl"}
DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
"""Delimiters that are easier to write by name (or, for tab, escaped)."""
MAX_RECORD_BYTES = 1 << 20
"""Default `max.record.bytes`: a longer line is a bad record, read past in bounded chunks."""
MAX_RECORD_BYTES_CEILING = 1 << 30
"""The largest `max.record.bytes`: Arrow reads a record within one block of at most 2 GiB."""

_DELIMITER_RULE = (
    "delimiter must be one ASCII character other than a quote or a line break "
    "(or one of: " + ", ".join(DELIMITER_NAMES) + ")"
)


def parse_delimiter(text: str) -> str | None:
    """The one character `text` is or names (see `DELIMITER_NAMES`); None if invalid.

    A quote or a line break cannot delimit CSV fields, and Arrow's reader takes one
    ASCII byte.
    """
    delimiter = DELIMITER_NAMES.get(text.lower(), text)
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
        return None
    return delimiter


def parse_record_limit(text: str) -> int:
    """`max.record.bytes` from '1MiB', '512KB' or a bare number of bytes.

    Raises `ConfigurationError` for anything that is not a size from 1 byte to 1 GiB.
    """
    try:
        size = parse_size_bytes(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"max.record.bytes: {exc.message}") from exc
    if size > MAX_RECORD_BYTES_CEILING:
        raise ConfigurationError(
            f"max.record.bytes: {text!r} is more than the largest allowed, "
            f"{format_size(MAX_RECORD_BYTES_CEILING)}"
        )
    return size


def check_file_source(options: ConnectorOptions) -> None:
    """Check and normalise a `file_source`'s keys."""
    _check(options, SOURCE_FORMATS, SOURCE_KEYS)
    if "max.record.bytes" in options.values:
        try:
            parse_record_limit(options.values["max.record.bytes"])
        except ConfigurationError as exc:
            options.problem("max.record.bytes", exc.message)


def check_file_sink(options: ConnectorOptions) -> None:
    """Check and normalise a `file_sink`'s keys."""
    _check(options, SINK_FORMATS, SINK_KEYS)


def _check(options: ConnectorOptions, formats: Sequence[str], known: Collection[str]) -> None:
    path = options.require("path", "path")
    default = "jsonl" if path.endswith((".json", ".jsonl")) else "csv"
    options.choice("format", formats, default, JSONL_ALIASES)
    # Checked on both sides as before: a flag a side does not know is warned about below.
    for flag in ("has_headers", "watch", "append"):
        options.boolean(flag)
    options.duration("polling_interval")
    if "delimiter" in options.values:
        delimiter = parse_delimiter(options.values["delimiter"])
        if delimiter is None:
            options.problem("delimiter", _DELIMITER_RULE)
        else:
            options.values["delimiter"] = delimiter
    options.warn_unknown(known)
