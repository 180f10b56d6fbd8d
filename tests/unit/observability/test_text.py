"""safe_text and friends: text that is not UTF-8 leaves the process escaped, never refused."""

from __future__ import annotations

import os

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from velostream.observability.text import dumps, raw_bytes, safe_json, safe_text

NAME = os.fsdecode(b"tr\xffades.csv")  # what listing a folder gives for that file


def test_valid_text_is_returned_as_is() -> None:
    for text in ("trades.csv", "", "café ☕ 取引"):
        assert safe_text(text) is text


def test_an_undecodable_byte_is_shown_as_its_escape() -> None:
    assert safe_text(NAME) == "tr\\xffades.csv"
    assert safe_text(f"/data/{NAME}:7 and é") == "/data/tr\\xffades.csv:7 and é"


def test_a_lone_surrogate_that_is_no_escaped_byte_is_shown_by_its_code() -> None:
    assert safe_text("a\ud800b") == "a\\ud800b"


@given(st.binary())
def test_any_name_is_kept_exactly_and_shown_encodable(raw: bytes) -> None:
    name = os.fsdecode(raw)
    assert raw_bytes(name) == raw
    shown = safe_text(name)
    shown.encode("utf-8")  # never raises
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert shown != name
    else:
        assert shown == name


@given(st.text())
def test_any_text_renders_encodable(text: str) -> None:
    safe_text(text).encode("utf-8")


def test_safe_json_escapes_every_string_keys_included() -> None:
    doc = {"ref": NAME, NAME: [NAME, 1, None, {"x": (NAME,)}], "n": 1.5}
    assert safe_json(doc) == {
        "ref": "tr\\xffades.csv",
        "tr\\xffades.csv": ["tr\\xffades.csv", 1, None, {"x": ["tr\\xffades.csv"]}],
        "n": 1.5,
    }


def test_dumps_writes_what_orjson_refuses() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps({"ref": NAME})
    assert orjson.loads(dumps({"ref": NAME})) == {"ref": "tr\\xffades.csv"}
    assert dumps({"ok": "é"}) == orjson.dumps({"ok": "é"})


def test_dumps_escapes_what_its_default_renders() -> None:
    class Odd:
        def __str__(self) -> str:
            return NAME

    assert orjson.loads(dumps({"v": Odd()}, default=str)) == {"v": "tr\\xffades.csv"}


def test_dumps_still_refuses_what_is_not_json() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        dumps({"v": object()})
