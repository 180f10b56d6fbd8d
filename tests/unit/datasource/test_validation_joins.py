"""Validation binds joins and subqueries against every side's columns.

An unknown or ambiguous column, an unknown table or alias, in the SELECT, the ON
condition or a subquery, and a reader's unknown column of an in-app table: each is one
problem at its line:column in our words, never DuckDB's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.validation import check_application
from velostream.errors import SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql import Application


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "trades.csv").write_text("id,symbol,price\n1,AAPL,10.5\n2,MSFT,11\n")
    (tmp_path / "instruments.csv").write_text("symbol,name,lot\nAAPL,Apple,100\n")
    return tmp_path


def _app(tmp: Path, select: str) -> str:
    return (
        f"CREATE STREAM out AS\n{select}\nWITH (\n"
        f"'trades.type' = 'file_source', 'trades.path' = '{tmp}/trades.csv',\n"
        f"'instruments.type' = 'file_source', 'instruments.path' = '{tmp}/instruments.csv',\n"
        f"'out.type' = 'file_sink', 'out.path' = '{tmp}/out.csv');\n"
    )


def _instruments(tmp: Path) -> str:
    return f"'instruments.type' = 'file_source', 'instruments.path' = '{tmp}/instruments.csv'"


def _check(text: str, **kwargs: object) -> Application:
    return check_application(text, base_dir=Path.cwd(), source_name="app.sql", **kwargs)  # type: ignore[arg-type]


def _problem(text: str) -> str:
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    (problem,) = caught.value.problems
    return problem


JOIN = "FROM trades t LEFT JOIN instruments i ON t.symbol = i.symbol"


def test_a_valid_join_and_subqueries_validate(files: Path) -> None:
    app = _check(
        _app(
            files,
            f"SELECT t.id, i.name, t.price * i.lot AS v {JOIN} "
            "WHERE t.symbol IN (SELECT symbol FROM instruments) "
            "AND EXISTS (SELECT 1 FROM instruments j WHERE j.symbol = t.symbol)",
        )
    )
    assert [job.name for job in app.jobs] == ["out"]


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (
            f"SELECT symbol {JOIN}",
            "at 2:8: ambiguous column symbol: more than one side has it: "
            "write 't.symbol' or 'i.symbol'",
        ),
        (
            f"SELECT t.id, i.nme {JOIN}",
            "at 2:14: unknown column i.nme (did you mean name?): i has symbol, name, lot",
        ),
        (
            "SELECT t.id FROM trades t JOIN instruments i ON t.symbol = i.sym",
            "at 2:60: unknown column i.sym (did you mean symbol?): i has symbol, name, lot",
        ),
        (
            f"SELECT x.name {JOIN}",
            "at 2:8: unknown table or alias x: stream trades has id, symbol, price; "
            "table instruments has symbol, name, lot",
        ),
        (
            f"SELECT t.id, nam {JOIN}",
            "at 2:14: unknown column nam (did you mean name?): stream trades has id, symbol, "
            "price; table instruments has symbol, name, lot",
        ),
        (
            "SELECT id FROM trades WHERE symbol IN (SELECT sym FROM instruments)",
            "at 2:47: unknown column sym (did you mean symbol?): stream trades has id, "
            "symbol, price; table instruments has symbol, name, lot",
        ),
        (
            "SELECT t.id FROM trades t JOIN nope n ON t.id = n.id",
            "source 'nope' has no type",
        ),
    ],
)
def test_binding_problems_are_one_line_at_their_place(
    files: Path, select: str, expected: str
) -> None:
    problem = _problem(_app(files, select))
    assert expected in problem
    assert "Binder" not in problem and "__" not in problem


def test_a_reader_of_an_in_app_table_is_bound_to_its_output(files: Path) -> None:
    table = (
        "CREATE TABLE named AS SELECT symbol, UPPER(name) AS company FROM instruments\n"
        f"WITH ({_instruments(files)});\n"
    )
    reader = (
        "CREATE STREAM out AS\nSELECT t.id, n.compny FROM trades t JOIN named n "
        "ON t.symbol = n.symbol\n"
        f"WITH ('trades.type' = 'file_source', 'trades.path' = '{files}/trades.csv',\n"
        f"'out.type' = 'file_sink', 'out.path' = '{files}/out.csv');\n"
    )
    problem = _problem(table + reader)
    assert problem.startswith("statement 2 (out) at 4:14: unknown column n.compny")
    assert "did you mean company?" in problem
    app = _check(table + reader.replace("compny", "company"))
    assert [j.name for j in app.jobs] == ["out"]
    assert [t.name for t in app.tables] == ["named"]
    assert [t.name for t in app.jobs[0].tables] == ["named"]


def test_an_in_app_table_file_outside_the_roots_is_refused(files: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    text = (
        "CREATE TABLE named AS SELECT symbol FROM instruments\n"
        f"WITH ({_instruments(files)});\n"
        "CREATE STREAM out AS SELECT t.id FROM trades t\n"
        "WHERE t.symbol IN (SELECT symbol FROM named)\n"
        f"WITH ('trades.type' = 'file_source', 'trades.path' = '{allowed}/trades.csv',\n"
        f"'out.type' = 'file_sink', 'out.path' = '{allowed}/out.csv');\n"
    )
    with pytest.raises(SqlValidationError) as caught:
        _check(text, roots=PathRoots([allowed]))
    assert any("instruments.path" in p for p in caught.value.problems)


def test_only_in_app_tables_is_refused(files: Path) -> None:
    text = f"CREATE TABLE named AS SELECT symbol FROM instruments\nWITH ({_instruments(files)});\n"
    assert "has only in-app tables" in _problem(text)


@pytest.mark.parametrize(
    "source",
    [
        "'k.type' = 'kafka_source', 'k.topic' = 't', 'k.bootstrap.servers' = 'localhost:1'",
        "'k.type' = 'file_source', 'k.path' = '{files}/instruments.csv', 'k.watch' = 'true'",
    ],
)
def test_an_in_app_table_from_a_source_that_never_ends_is_refused(files: Path, source: str) -> None:
    text = (
        "CREATE TABLE named AS SELECT symbol FROM k\n"
        f"WITH ({source.format(files=files)});\n"
        "CREATE STREAM out AS SELECT t.id FROM trades t\n"
        "WHERE t.symbol IN (SELECT symbol FROM named)\n"
        f"WITH ('trades.type' = 'file_source', 'trades.path' = '{files}/trades.csv',\n"
        f"'out.type' = 'file_sink', 'out.path' = '{files}/out.csv');\n"
    )
    problem = _problem(text)
    assert "never ends: an in-app table is computed to the end of its source" in problem
