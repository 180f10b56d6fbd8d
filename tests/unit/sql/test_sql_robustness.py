"""Any text either parses or fails with SqlValidationError; never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql import Application, Position, parse_application

CONNECTORS = connector_catalog()

VALID = (
    "-- @app: a\n\n-- @name: j\nCREATE TABLE t AS SELECT k PRIMARY KEY, COUNT(*) AS n "
    "FROM src WHERE s = ';' GROUP BY k EMIT CHANGES WITH ('src.type' = 'memory_source', "
    "'t.type' = 'memory_sink', 'batch.size' = '${N:10}');\n"
)
PIECES = st.sampled_from(
    [
        "CREATE",
        "STREAM",
        "TABLE",
        " ",
        "\n",
        "t",
        "AS",
        "SELECT",
        "*",
        "FROM",
        "src",
        "(",
        ")",
        "'",
        '"',
        ";",
        "--",
        "/*",
        "*/",
        "-- @name: x\n",
        "EMIT",
        "CHANGES",
        "WITH",
        "=",
        ",",
        "'src.type'",
        "'memory_source'",
        "PRIMARY KEY",
        "${X}",
        "${Y:1}",
        "JOIN",
        "@",
        "\r\n",
    ]
)


def _parse(text: str) -> Application | None:
    try:
        return parse_application(text, connectors=CONNECTORS, env={})
    except SqlValidationError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.startswith(("statement ", "line "))
        return None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text(text: str) -> None:
    _parse(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=40).map(" ".join))
def test_sql_like_noise(text: str) -> None:
    _parse(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(VALID)), st.sampled_from(["", "(", ")", "'", ";", "/*", "--", "x"]))
def test_one_edit_of_a_valid_application(at: int, insert: str) -> None:
    _parse(VALID[:at] + insert + VALID[at:])


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=" \n\t", max_size=20), st.text(alphabet=" \n", min_size=1, max_size=20))
def test_positions_track_leading_whitespace(before: str, between: str) -> None:
    text = before + "CREATE STREAM o AS" + between + "SELECT * FROM s WITH ('s.type' = "
    text += "'memory_source', 'o.type' = 'memory_sink')"
    job = parse_application(text, connectors=CONNECTORS, env={}).jobs[0]

    def position(offset: int) -> Position:
        line = text.count("\n", 0, offset) + 1
        return Position(line, offset - (text.rfind("\n", 0, offset) + 1) + 1)

    assert job.position == position(text.index("CREATE"))
    assert job.select_position == position(text.index("SELECT"))
