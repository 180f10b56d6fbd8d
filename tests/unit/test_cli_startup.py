"""A short command starts without the cyclic GC (`velostream.cli.startup`): help ends
with it off, and `run` turns it back on, start-up frozen, before its jobs start."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

import velostream.cli.run as run_module
from velostream.cli import velo_sql
from velostream.cli.startup import asks_for_help

_APP = """CREATE STREAM o AS SELECT id FROM t WHERE qty > 10
WITH ('t.type' = 'file_source', 't.path' = 'in.csv',
      'o.type' = 'file_sink', 'o.path' = 'out.csv');
"""


def _exit(code: int | str | None) -> NoReturn:
    raise SystemExit(code)


@pytest.fixture(autouse=True)
def _gc_restored() -> Iterator[None]:
    """What `main` does to the GC is meant for its own short process, not pytest's."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], True),
        (["--help"], True),
        (["run", "--help"], True),
        (["run", "app.sql", "--help"], True),
        (["run", "app.sql"], False),
        (["--help", "run"], False),
        (["server", "--data-dir", "--help"], False),  # a value, not the flag
    ],
)
def test_only_help_forms_ask_for_help(args: list[str], expected: bool) -> None:
    assert asks_for_help(args) is expected


def test_help_ends_without_the_gc(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["velo-sql", "--help"])
    with pytest.raises(SystemExit):
        velo_sql.main()
    assert "validate" in capsys.readouterr().out
    assert not gc.isenabled()


def test_a_run_starts_its_jobs_with_the_gc_on_and_start_up_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    (tmp_path / "app.sql").write_text(_APP)
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[bool, int]] = []
    real = run_module.run_application

    def spy(*args: Any, **kwargs: Any) -> list[run_module.JobRun]:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_application", spy)
    monkeypatch.setattr(velo_sql, "exit_now", _exit)  # it would end pytest's process
    monkeypatch.setattr("sys.argv", ["velo-sql", "run", "app.sql", "--data-dir", "vd"])
    gc.unfreeze()
    with pytest.raises(SystemExit) as ended:
        velo_sql.main()
    assert ended.value.code == 0
    assert (tmp_path / "out.csv").read_text() == "id\n2\n"
    assert len(seen) == 1
    enabled, frozen = seen[0]
    assert enabled and frozen > 0
