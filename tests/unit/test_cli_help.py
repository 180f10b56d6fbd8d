"""Every command's `--help` of both tools: no flag shows a `<bool>` type."""

from __future__ import annotations

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from velostream.cli import velo_cli, velo_sql


def _commands(app: typer.Typer) -> list[list[str]]:
    group = get_command(app)
    names = sorted(getattr(group, "commands", {}))
    return [["--help"], *([name, "--help"] for name in names)]


@pytest.mark.parametrize(
    ("app", "args"),
    [(app, args) for app in (velo_sql.app, velo_cli.app) for args in _commands(app)],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_help_shows_no_type_for_a_flag(app: typer.Typer, args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output, result.output
