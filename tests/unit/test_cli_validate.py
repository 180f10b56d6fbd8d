"""`velo-sql validate FILE` as the console script runs it (`main`, without the app):
what it prints and its exit code, alike for a valid file, one with a note and one with
problems; any other form of the command goes to the app."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from velostream.cli import velo_sql

_APP = """CREATE STREAM o AS SELECT id FROM t WHERE qty > 10
WITH ('t.type' = 'file_source', 't.path' = '{path}',
      'o.type' = 'file_sink', 'o.path' = 'out.csv');
"""


def _exit(code: int | str | None) -> NoReturn:
    raise SystemExit(code)


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["velo-sql", *args])
    monkeypatch.setattr(velo_sql, "exit_now", _exit)  # it would end pytest's process
    with pytest.raises(SystemExit) as ended:
        velo_sql.main()
    return int(ended.value.code or 0)


@pytest.fixture(autouse=True)
def _gc_restored() -> Iterator[None]:
    """`main` turns the cyclic GC off for the rest of a validate process: not of pytest's."""
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    return tmp_path


def test_a_valid_file_says_so(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "app.sql").write_text(_APP.format(path="in.csv"))
    assert _main(monkeypatch, "validate", "app.sql") == 0
    out, err = capsys.readouterr()
    assert out == "app.sql: valid (1 job(s): o)\n"
    assert err == ""


def test_a_source_not_there_yet_is_a_warning(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "app.sql").write_text(_APP.format(path="later.csv"))
    assert _main(monkeypatch, "validate", "app.sql") == 0
    out, err = capsys.readouterr()
    assert out == "app.sql: valid (1 job(s): o)\n"
    assert err.startswith("warning: source 't' (file_source)"), err


def test_problems_are_listed_and_exit_1(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "app.sql").write_text(_APP.format(path="in.csv").replace("qty >", "qtty >"))
    assert _main(monkeypatch, "validate", "app.sql") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "error:" in err and "qtty" in err, err


def test_other_forms_go_to_the_app(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(monkeypatch, "validate", "--help") == 0
    assert "SQL application file" in capsys.readouterr().out
    assert _main(monkeypatch, "validate") == 2  # Typer's usage error: FILE is missing
