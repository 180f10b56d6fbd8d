"""Every command's `--help` of both tools: no flag shows a `<bool>` type."""

from __future__ import annotations

from typing import Any

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


def _all_commands() -> list[tuple[str, Any]]:
    found = []
    for app in (velo_sql.app, velo_cli.app):
        group = get_command(app)
        found += [(name, command) for name, command in getattr(group, "commands", {}).items()]
    return found


@pytest.mark.parametrize(
    ("name", "command"), _all_commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_command_summary_is_one_line_and_every_option_says_what_it_does(
    name: str, command: Any
) -> None:
    """The top-level `--help` shows each command's first paragraph as is: a hard
    newline there breaks the summary mid-sentence in the list of commands."""
    summary = (command.help or "").split("\n\n")[0]
    assert summary and "\n" not in summary, f"{name}: {summary!r}"
    bare = [p.opts[0] for p in command.params if p.param_type_name == "option" and not p.help]
    assert bare == [], f"{name}: options without help: {bare}"
