"""Records over `max.record.bytes` and quotes left open are bad records; reading goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from velostream.datasource.file import options
from velostream.datasource.file.source import FilePosition, FileSource, FileSourceConfig
from velostream.datasource.registry import connector_catalog
from velostream.errors import ConfigurationError, ErrorKind, SqlValidationError, Stage
from velostream.sql import parse_application

from .conftest import drain

Make = Callable[..., FileSource]
ROWS = 3000
MIDDLE = 1500  # the row that is replaced by a bad one; it is on line MIDDLE + 2


def _csv(bad: str) -> str:
    rows = [bad if i == MIDDLE else f"{i},n{i},{i}.5" for i in range(ROWS)]
    return "id,name,v\n" + "\n".join(rows) + "\n"


def _jsonl(bad: str) -> str:
    rows = [
        bad if i == MIDDLE else f'{{"id": {i}, "name": "n{i}", "v": {i}.5}}' for i in range(ROWS)
    ]
    return "\n".join(rows) + "\n"


def _ids(rows: list[dict[str, object]]) -> list[object]:
    return [row["id"] for row in rows]


GOOD_IDS = [i for i in range(ROWS) if i != MIDDLE]
BIG = 3 * (1 << 20)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("data.csv", _csv(f"{MIDDLE}," + "x" * BIG + ",1.5"), MIDDLE + 2),
        ("data.jsonl", _jsonl(f'{{"id": {MIDDLE}, "name": "' + "x" * BIG + '"}'), MIDDLE + 1),
    ],
)
def test_a_line_over_max_record_bytes_is_one_bad_record_and_reading_goes_on(
    make_source: Make, tmp_path: Path, name: str, text: str, line: int
) -> None:
    out = drain(make_source(text, name=name), max_records=100_000)
    assert _ids(out.rows) == GOOD_IDS
    size = len(text.split("\n")[line - 1])
    [bad] = out.bad
    assert bad.ref == f"{tmp_path / name}:{line}"
    assert (bad.kind, bad.stage) == (ErrorKind.PARSE, Stage.DESERIALIZE)
    assert bad.raw == text.split("\n")[line - 1].encode()[:1024]
    assert f"line {line} has {size} bytes" in bad.message
    assert "more than max.record.bytes (1048576)" in bad.message
    assert out.refs[MIDDLE] == f"{tmp_path / name}:{line + 1}"  # the row after it


def test_positions_around_a_long_line_resume_after_it_and_never_fail(make_source: Make) -> None:
    text = _csv(f"{MIDDLE}," + "x" * 5000 + ",1.5")
    source = make_source(text, **{"max.record.bytes": "1KiB"})
    out = drain(source, max_records=700)
    assert _ids(out.rows) == GOOD_IDS and len(out.bad) == 1
    assert out.positions[-1] == FilePosition(0, len(text), ROWS + 1)
    before = [p for p in out.positions if p.line <= MIDDLE + 1][-1]
    for position in out.positions:
        again = make_source(text, **{"max.record.bytes": "1KiB"})
        again.seek(position)
        rest = drain(again, max_records=700)
        later = [i for i in GOOD_IDS if i >= position.line - 1]
        assert _ids(rest.rows) == later
        assert len(rest.bad) == (1 if position.line <= before.line else 0)


@pytest.mark.parametrize(("extra", "bad"), [(0, False), (1, True)])
def test_the_limit_is_the_line_length_without_its_line_break(
    make_source: Make, extra: int, bad: bool
) -> None:
    line = "7,abc," + "9" * (100 - 6 + extra)
    text = "id,b,c\n1,x,2\n" + line + "\r\n2,y,3\n"
    out = drain(make_source(text, **{"max.record.bytes": "101"}))  # the \r counts
    assert len(out.bad) == int(bad)
    assert _ids(out.rows) == ([1, 2] if bad else [1, 7, 2])


def test_a_long_last_line_without_a_newline_is_a_bad_record(make_source: Make) -> None:
    text = "id,b\n1,x\n2," + "y" * 3000
    out = drain(make_source(text, **{"max.record.bytes": "1000"}))
    assert _ids(out.rows) == [1]
    [bad] = out.bad
    assert bad.ref.endswith(":3") and "line 3 has 3002 bytes" in bad.message


def test_a_long_first_line_is_left_out_of_inference(make_source: Make) -> None:
    text = '{"id": "' + "x" * 3000 + '"}\n{"id": 1, "v": 1.5}\n{"id": 2, "v": 2.5}\n'
    source = make_source(text, name="data.jsonl", **{"max.record.bytes": "1000"})
    out = drain(source)
    assert out.rows == [{"id": 1, "v": 1.5}, {"id": 2, "v": 2.5}]
    assert [b.ref.rsplit(":", 1)[1] for b in out.bad] == ["1"]


def test_a_value_longer_than_arrows_block_fits_under_a_larger_limit(make_source: Make) -> None:
    value = "z" * (2 << 20)
    text = _csv(f'{MIDDLE},"{value}",1.5')
    out = drain(make_source(text, **{"max.record.bytes": "4MiB"}), max_records=100_000)
    assert out.bad == []
    assert _ids(out.rows) == list(range(ROWS)) and out.rows[MIDDLE]["name"] == value


@pytest.mark.parametrize("where", [3, MIDDLE])
def test_an_unterminated_quote_in_a_large_block_is_one_bad_line(
    make_source: Make, where: int
) -> None:
    # Wide enough rows that the block is several of Arrow's 1 MiB blocks.
    rows = [f'{i},"open,{i}.5' if i == where else f"{i},{'n' * 400},{i}.5" for i in range(ROWS)]
    text = "id,name,v\n" + "\n".join(rows) + "\n"
    out = drain(make_source(text), max_records=100_000)
    assert _ids(out.rows) == [i for i in range(ROWS) if i != where]
    [bad] = out.bad
    assert bad.ref.endswith(f":{where + 2}") and bad.raw == f'{where},"open,{where}.5'.encode()
    assert bad.message.startswith("unterminated quoted value")


def test_an_unterminated_quote_in_the_first_rows_leaves_inference_alone(make_source: Make) -> None:
    text = 'id,name,v\n0,"open,1.5\n' + "".join(f"{i},n{i},{i}.5\n" for i in range(1, 50))
    source = make_source(text)
    out = drain(source)
    assert str(source.schema.field("v").type) == "double" and len(out.rows) == 49
    assert [b.message for b in out.bad] == [
        "unterminated quoted value (a value may not contain a line break)"
    ]


def test_a_quote_inside_an_unquoted_value_is_not_an_open_quote(make_source: Make) -> None:
    out = drain(make_source('a,b\n1,say "hi\n2,x\n'))
    assert out.rows == [{"a": 1, "b": 'say "hi'}, {"a": 2, "b": "x"}] and out.bad == []


# -- the key -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("1MiB", 1 << 20), ("512KB", 512_000), ("4096", 4096), ("1 gib", 1 << 30), ("1.5KiB", 1536)],
)
def test_max_record_bytes_is_a_size(text: str, size: int) -> None:
    config = FileSourceConfig.from_properties("s", {"path": "x", "max.record.bytes": text})
    assert config.max_record_bytes == size == options.parse_record_limit(text)


def test_max_record_bytes_defaults_to_one_mib() -> None:
    assert FileSourceConfig.from_properties("s", {"path": "x"}).max_record_bytes == 1 << 20


def _validate(value: str) -> None:
    parse_application(
        "CREATE STREAM out AS SELECT * FROM src WITH ("
        f"'src.type' = 'file_source', 'src.path' = 'in.csv', 'src.max.record.bytes' = '{value}', "
        "'out.type' = 'file_sink', 'out.path' = 'out.csv')",
        connectors=connector_catalog(),
        env={},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lots", "max.record.bytes: invalid size 'lots'"),
        ("0", "max.record.bytes: invalid size '0': must be at least 1 byte"),
        ("2GiB", "max.record.bytes: '2GiB' is more than the largest allowed, 1.0 GiB"),
        ("-5", "max.record.bytes: invalid size '-5'"),
    ],
)
def test_a_bad_max_record_bytes_is_refused_by_validation_and_the_source(
    text: str, message: str
) -> None:
    with pytest.raises(SqlValidationError, match=message) as info:
        _validate(text)
    assert "source 'src' (file_source)" in str(info.value)
    with pytest.raises(ConfigurationError, match=f"'s': {message}"):
        FileSourceConfig.from_properties("s", {"path": "x", "max.record.bytes": text})


def test_max_record_bytes_is_a_known_key() -> None:
    _validate("64KiB")  # no problem, and no unknown-key warning
    app = parse_application(
        "CREATE STREAM out AS SELECT * FROM src WITH ("
        "'src.type' = 'file_source', 'src.path' = 'in.csv', 'src.max.record.bytes' = '2MB', "
        "'out.type' = 'file_sink', 'out.path' = 'out.csv')",
        connectors=connector_catalog(),
        env={},
    )
    assert app.warnings == ()
    assert app.jobs[0].sources[0].properties["max.record.bytes"] == "2MB"
