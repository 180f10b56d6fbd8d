"""`velo-sql init`'s pieces: the `@app` name taken from the folder, what is free."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from velostream.cli import velo_sql
from velostream.cli.init import app_name, create_application, is_free


@pytest.mark.parametrize(
    ("folder", "name"),
    [("tour", "tour"), ("my app", "my_app"), ("-x", "app_-x"), ("a.b-c_1", "a.b-c_1")],
)
def test_the_app_name_comes_from_the_folder(tmp_path: Path, folder: str, name: str) -> None:
    assert app_name(tmp_path / folder) == name


def test_a_folder_is_free_when_absent_or_empty(tmp_path: Path) -> None:
    assert is_free(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    assert is_free(tmp_path / "empty")
    create_application(tmp_path / "empty")
    assert not is_free(tmp_path / "empty")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert not is_free(tmp_path / "file")


def test_the_next_steps_quote_a_folder_name_for_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`velo-sql init "my app"`: the printed commands and the README's paste as they are."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(velo_sql.app, ["init", "my app"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "velo-sql validate 'my app/app.sql'" in result.output
    assert "velo-sql run 'my app/app.sql'" in result.output
    readme = (tmp_path / "my app" / "README.md").read_text(encoding="utf-8")
    assert "velo-sql run 'my app/app.sql'" in readme
    assert "velo-cli deploy 'my app/app.sql'" in readme
    assert "cat 'my app/output/" in readme
