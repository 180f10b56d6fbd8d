"""Values to Arrow and back: vectorised on the clean path, bad messages isolated."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from velostream.datasource.kafka.codec import (
    HEADERS_TYPE,
    JsonValues,
    StringValues,
    encode,
    keys_array,
    value_decoder,
)
from velostream.errors import ConfigurationError, ErrorKind, SchemaError


def _rows_and_bad(values: list[bytes | None]) -> tuple[list[int], list[tuple[int, ErrorKind]]]:
    decoded = JsonValues().decode(values)
    rows = list(range(decoded.table.num_rows)) if decoded.rows is None else decoded.rows.to_pylist()
    return rows, [(b.index, b.kind) for b in decoded.bad]


def test_clean_json_batch_is_one_parse_with_the_first_batch_schema() -> None:
    decoder = JsonValues()
    first = decoder.decode(
        [b'{"id": 1, "price": 2.5, "s": "a"}', b'{"id": 2, "price": 3, "s": "b"}']
    )
    assert first.rows is None and first.bad == []
    assert decoder.schema == pa.schema(
        [("id", pa.int64()), ("price", pa.float64()), ("s", pa.string())]
    )
    later = decoder.decode([b'{"id": 3, "extra": true}', b'{"s": "z", "price": 1}'])
    assert later.table.to_pylist() == [
        {"id": 3, "price": None, "s": None},
        {"id": None, "price": 1.0, "s": "z"},
    ]


def test_each_bad_message_is_isolated_with_its_kind() -> None:
    values: list[bytes | None] = [
        b'{"id": 1, "price": 1.5}',
        b'{"id": 2, "price": ',  # truncated
        b'{"id": "x", "price": 1.0}',  # wrong type
        b"[1, 2]",  # not an object
        b"",  # empty
        b"   ",  # blank
        b"\xff\xfe",  # not UTF-8
        b'{"id": 7, "price": 7.5}',
    ]
    rows, bad = _rows_and_bad(values)
    assert rows == [0, 7]
    assert bad == [
        (1, ErrorKind.PARSE),
        (2, ErrorKind.TYPE),
        (3, ErrorKind.PARSE),
        (4, ErrorKind.PARSE),
        (5, ErrorKind.PARSE),
        (6, ErrorKind.PARSE),
    ]


def test_tombstones_are_rows_of_nulls_and_line_breaks_are_compacted() -> None:
    decoder = JsonValues()
    decoded = decoder.decode(
        [
            b'{"id": 1, "s": "a"}',
            None,
            b'{\n  "id": 3,\r\n  "s": "c"\n}',
            b'{"id": 4, "s": "raw\nbreak"}',  # a raw line break inside a string: invalid
        ]
    )
    assert decoded.table.to_pylist() == [
        {"id": 1, "s": "a"},
        {"id": None, "s": None},
        {"id": 3, "s": "c"},
    ]
    assert decoded.rows is not None and decoded.rows.to_pylist() == [0, 1, 2]
    assert [(b.index, b.kind) for b in decoded.bad] == [(3, ErrorKind.PARSE)]


def test_a_batch_with_no_object_yet_is_all_bad_and_the_schema_waits() -> None:
    decoder = JsonValues()
    decoded = decoder.decode([b"{oops", b"[1]"])
    assert decoded.table.num_rows == 0 and decoder.schema is None
    assert [b.message.split(":")[0] for b in decoded.bad] == [
        "invalid JSON",
        "expected a JSON object, got list",
    ]
    assert decoder.decode([b'{"a": 1}']).table.to_pylist() == [{"a": 1}]


def test_string_and_bytes_values() -> None:
    decoded = StringValues().decode([b"caf\xc3\xa9", None, b"\xff", b"ok"])
    assert decoded.table.to_pylist() == [{"value": "café"}, {"value": None}, {"value": "ok"}]
    assert [(b.index, b.message) for b in decoded.bad] == [(2, "invalid UTF-8 at byte 0")]
    raw = value_decoder("bytes").decode([b"\x00\xff", None])
    assert raw.table.column("value").to_pylist() == [b"\x00\xff", None]
    with pytest.raises(ConfigurationError, match="valid values: json, string, bytes"):
        value_decoder("avro")


def test_keys_as_text_escape_invalid_utf8_or_stay_bytes() -> None:
    assert keys_array([b"a", None], "string").to_pylist() == ["a", None]
    assert keys_array([b"\xff"], "string").to_pylist() == ["\\xff"]
    assert keys_array([b"\xff"], "bytes").to_pylist() == [b"\xff"]


def _table() -> pa.Table:
    return pa.table(
        {
            "id": [1, 2, None],
            "symbol": ["A", 'q"uote\n', None],
            "price": [1.5, 15025.0, float("nan")],
            "_key": ["k1", None, "k3"],
            "_partition": pa.array([0, 0, 1], pa.int32()),
            "_offset": [5, 6, 7],
            "_headers": pa.array([[("h", b"1")], None, []], HEADERS_TYPE),
            "_timestamp": pa.array([1000, None, 3000], pa.timestamp("ms")),
        }
    )


def test_json_encoding_excludes_system_columns_and_uses_them_as_envelope() -> None:
    encoded = encode(_table(), "json")
    assert [orjson.loads(v) for v in encoded.values if v is not None] == [
        {"id": 1, "symbol": "A", "price": 1.5},
        {"id": 2, "symbol": 'q"uote\n', "price": 15025.0},
        {"id": None, "symbol": None, "price": None},
    ]
    assert encoded.keys == ["k1", None, "k3"]
    assert encoded.headers == [[("h", b"1")], None, []]
    assert encoded.timestamps == [1000, None, 3000]


def test_key_columns_are_joined_with_a_bar() -> None:
    assert encode(_table(), "json", ["id", "symbol"]).keys == ["1|A", '2|q"uote\n', "|"]
    assert encode(_table(), "json", ["id"]).keys == ["1", "2", None]
    with pytest.raises(SchemaError, match="key column"):
        encode(_table(), "json", ["nope"])


def test_single_column_formats() -> None:
    table = pa.table({"value": ["a", None], "_key": ["x", "y"]})
    assert encode(table, "string").values == [b"a", None]
    assert encode(pa.table({"n": [1, 2]}), "string").values == [b"1", b"2"]
    assert encode(pa.table({"b": [b"\x00"]}), "bytes").values == [b"\x00"]
    with pytest.raises(SchemaError, match="writes one column"):
        encode(pa.table({"a": [1], "b": [2]}), "string")
    with pytest.raises(SchemaError, match="binary or text"):
        encode(pa.table({"n": [1]}), "bytes")


def test_json_round_trip_of_many_rows_keeps_order() -> None:
    rows = [{"i": i, "s": f"x{i}\t"} for i in range(300_000)]
    encoded = encode(pa.Table.from_pylist(rows), "json")
    assert len(encoded.values) == len(rows)
    decoder = JsonValues()
    assert decoder.decode(encoded.values).table.to_pylist() == rows
