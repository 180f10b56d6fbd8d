"""A short command starts without the cyclic GC (`velostream.cli.startup`): help ends
with it off, and `run` turns it back on, start-up frozen, before its jobs start. Every
command keeps OpenBLAS from starting worker threads."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
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


_THREADS_AFTER_NUMPY = (
    "import os, sys\n"
    "if sys.argv[1] == 'single':\n"
    "    from velostream.cli.startup import single_blas_thread\n"
    "    single_blas_thread()\n"
    "import numpy\n"
    "print(len(os.listdir('/proc/self/task')))\n"
)


def _threads_after_numpy(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_AFTER_NUMPY, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_numpy_imported_after_single_blas_thread_starts_no_thread() -> None:
    assert _threads_after_numpy("single") == 1
    if (os.cpu_count() or 1) > 1:  # OpenBLAS starts a worker per further core
        assert _threads_after_numpy("default") > 1


def test_main_keeps_blas_to_one_thread_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["velo-sql", "--help"])
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with pytest.raises(SystemExit):
        velo_sql.main()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    with pytest.raises(SystemExit):
        velo_sql.main()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    capsys.readouterr()
