"""The dead-letter record: payloads round-trip as text or base64, written once for
every queue."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from velostream.datasource.bad_records import BadRecords, coded
from velostream.datasource.traits import BadRecord
from velostream.dlq import (
    DeadLetter,
    FileDeadLetterQueue,
    dead_letter,
    decode_payload,
    encode_payload,
)
from velostream.dlq.letter import dead_letters, decode_text, encode_text
from velostream.errors import ErrorKind
from velostream.observability.error_tracker import DeploymentContext


def test_text_is_kept_as_text_and_other_bytes_as_base64() -> None:
    assert encode_payload("1,café".encode()) == {"payload": "1,café"}
    assert encode_payload(b"\xff\xfe\x00") == {"payload_base64": "//4A"}
    assert encode_payload(b"") == {"payload": ""}


@given(st.text())
def test_text_payloads_round_trip_through_json_as_text(text: str) -> None:
    stored = orjson.loads(orjson.dumps(encode_payload(text.encode("utf-8"))))
    assert stored == {"payload": text}
    assert decode_payload(stored) == text.encode("utf-8")


@given(st.binary())
def test_binary_payloads_round_trip_through_json(raw: bytes) -> None:
    stored = orjson.loads(orjson.dumps(encode_payload(raw)))
    assert decode_payload(stored) == raw
    assert ("payload" in stored) is _utf8(raw)


def test_a_dead_letter_keeps_its_payload_and_context() -> None:
    record = BadRecord(b"\x00\xffbad", "f.csv:7", "bad line", ErrorKind.PARSE)
    letter = dead_letter(
        record,
        job="j",
        app="a",
        version="1",
        source="src",
        fingerprint="fp",
        context=DeploymentContext(node_id="n", node_name="N", region="r"),
    )
    assert letter.payload == b"\x00\xffbad" and "payload" not in letter.doc
    assert (letter.doc["position"], letter.doc["stage"]) == ("f.csv:7", "deserialize")
    replayed = letter.with_replayed(True)
    assert replayed.doc["replayed"] is True and "replayed" not in letter.doc
    assert replayed.id == letter.id


def test_a_document_without_payload_decodes_to_nothing() -> None:
    assert DeadLetter({"id": "x"}).payload == b""


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- names that are not UTF-8 ------------------------------------------------------------

NAME = os.fsdecode(b"/data/tr\xffades.csv")  # as listing the folder gives it


def test_text_that_is_utf8_is_kept_as_is() -> None:
    assert encode_text("position", "f.csv:7") == {"position": "f.csv:7"}
    assert encode_text("source", None) == {"source": None}
    assert decode_text({"position": "f.csv:7"}, "position") == "f.csv:7"
    assert decode_text({}, "position") is None


@given(st.binary())
def test_any_name_round_trips_through_json_exactly(raw: bytes) -> None:
    name = os.fsdecode(raw)
    stored = orjson.loads(orjson.dumps(encode_text("position", name)))
    assert decode_text(stored, "position") == name
    assert os.fsencode(decode_text(stored, "position") or "") == raw


def test_a_dead_letter_of_a_file_whose_name_is_not_utf8_is_valid_json(tmp_path: Path) -> None:
    record = BadRecord(b"poison,AAPL", f"{NAME}:7", f"bad line in {NAME}", ErrorKind.TYPE)
    letter = dead_letter(
        record,
        job="j",
        app=None,
        version=None,
        source="src",
        fingerprint="fp",
        context=DeploymentContext(),
    )
    assert letter.doc["position"] == "/data/tr\\xffades.csv:7"  # readable
    assert letter.doc["message"] == "bad line in /data/tr\\xffades.csv"
    assert letter.text("position") == f"{NAME}:7"  # exact
    assert letter.text("message") == f"bad line in {NAME}"
    assert letter.text("source") == "src" and "source_base64" not in letter.doc

    queue = FileDeadLetterQueue(tmp_path / "j.jsonl")
    queue.write([letter])
    queue.flush()
    (back,), _ = queue.read()
    assert back.doc["position"] == "/data/tr\\xffades.csv:7"
    assert os.fsencode(back.text("position") or "") == b"/data/tr\xffades.csv:7"
    assert back.payload == b"poison,AAPL"


def _block_records(place: str, raws: list[bytes], messages: list[str]) -> BadRecords:
    kinds = [ErrorKind.PARSE if "fields" in m else ErrorKind.TYPE for m in messages]
    numbers = np.arange(2, 2 + 3 * len(raws), 3)
    return BadRecords(pa.array(raws, pa.large_binary()), place, numbers, *coded(kinds, messages))


@pytest.mark.parametrize(
    ("place", "raws", "message"),
    [
        ("in.csv:", [b"1,a", b"2,b,n/a", b"3,\xffc"], "expected 5 fields, got 2"),
        ("in.csv:", [b"1,a", b"2,b"], f"bad value in {NAME}"),
        (f"{NAME}:", [b"1,a", b"\x00\xff"], "column 'x': 'n/a' is not a valid double"),
    ],
)
def test_the_letters_of_a_block_are_the_letters_of_each_record(
    place: str, raws: list[bytes], message: str
) -> None:
    """Built column by column or one at a time, a block's letters say the same (but for
    their random ids and the time)."""
    bad = _block_records(place, raws, [message, "other", message][: len(raws)])
    context = DeploymentContext(node_id="n", node_name="N", region="r")
    fps = [f"fp{i}" for i in range(len(raws))]
    about = {"job": "j", "app": "a", "version": "2", "source": "src", "context": context}
    letters = dead_letters(bad, fps, **about)
    alone = [
        dead_letter(record, fingerprint=fp, **about) for record, fp in zip(bad, fps, strict=True)
    ]
    assert len({letter.id for letter in letters}) == len(raws)
    for letter, one in zip(letters, alone, strict=True):
        assert uuid.UUID(letter.id).version == 4 and len(letter.id) == 32
        assert abs(letter.doc["timestamp"] - one.doc["timestamp"]) < 60
        same = {k: v for k, v in letter.doc.items() if k not in ("id", "timestamp")}
        assert same == {k: v for k, v in one.doc.items() if k not in ("id", "timestamp")}
        assert orjson.loads(orjson.dumps(letter.doc)) == letter.doc
    assert [letter.payload for letter in letters] == raws
