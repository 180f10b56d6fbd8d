"""Text that leaves the process: any string made safe to write as UTF-8.

A name or payload that is not UTF-8 (a file name with a stray byte, a Kafka key) is
carried inside the process as a `str` whose undecodable bytes are surrogate-escaped
(what `os.fsdecode` and `errors="surrogateescape"` give), so nothing is lost and
`raw_bytes` turns it back into its bytes. Such a string cannot be encoded as UTF-8:
orjson refuses it, `str.encode` raises, and a JSON response, a log line, a dead letter
or a scrape that holds one fails as a whole. So every writer passes its text through
`safe_text`, which renders each undecodable byte as `\\xNN` (any other lone surrogate as
`\\udNNN`) and leaves valid text as it is; `safe_json` does that to every string of a
JSON document, `dumps` encodes one as orjson does, whatever strings it holds.

The rendering is for reading: a backslash already in the text is not doubled, so where
the exact bytes matter (a dead letter's payload and names) they are kept as well, as
base64 (`velostream.dlq.letter`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "raw_bytes", "safe_json", "safe_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """`text` with every lone surrogate backslash-escaped: encodable as UTF-8."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    return _SURROGATE.sub(_escape, text)


def raw_bytes(text: str) -> bytes:
    """The bytes a surrogate-escaped string stands for (`os.fsencode`, for any text)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: keep it as is
        return text.encode("utf-8", "surrogatepass")


def safe_json(value: Any) -> Any:
    """`value` (a JSON-like document) with `safe_text` applied to every string in it."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_json(k): safe_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_json(v) for v in value]
    return value


def dumps(
    value: Any, *, default: Callable[[Any], Any] | None = None, option: int | None = None
) -> bytes:
    """`orjson.dumps`, with strings that are not UTF-8 escaped instead of refused."""
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates; a document without any fails again, as it should.
        safe_default = None if default is None else (lambda obj: safe_json(default(obj)))
        return orjson.dumps(safe_json(value), default=safe_default, option=option)
