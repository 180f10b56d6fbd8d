"""`--log-level` on a real `velo-sql server` (issue 13, bug 14): `trace` is a level, and
at `debug` the server says what an operator needs: each batch's commit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.server_process import (
    Launcher,
    clean_env,
    console_script,
    launcher,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

ROWS = 50
BATCH = 10


def _app(folder: Path, job: str) -> str:
    source = write_trades(folder / f"{job}.in.csv", ROWS)
    return f"""-- @app: {job}_app
-- @batch_size: {BATCH}
CREATE STREAM {job} AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      '{job}.type' = 'file_sink', '{job}.path' = '{folder}/{job}.csv');
"""


def _commits(log: str, job: str) -> list[int]:
    found = re.findall(rf"DEBUG velostream\.processor: job '{job}': committed batch (\d+) at ", log)
    return [int(n) for n in found]


@pytest.mark.parametrize("level", ["trace", "TRACE", "debug"])
def test_a_debug_or_trace_server_logs_every_commit(
    launcher: Launcher, tmp_path: Path, level: str
) -> None:
    server = launcher.server(tmp_path / "velo-data", args=["--log-level", level])
    server.deploy(_app(tmp_path, "chatty"))
    server.wait_state("chatty", "completed")
    log = server.log()
    commits = _commits(log, "chatty")
    assert commits[: ROWS // BATCH] == list(range(1, ROWS // BATCH + 1)), log
    assert "Level 5" not in log


def test_an_info_server_logs_no_commit_line(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.server(tmp_path / "velo-data", args=["--log-level", "info"])
    server.deploy(_app(tmp_path, "quiet"))
    server.wait_state("quiet", "completed")
    log = server.log()
    assert "job 'quiet' -> completed" in log
    assert _commits(log, "quiet") == [] and " DEBUG " not in log
    # Started once, and its end is said: an operator sees when and how it stopped.
    assert log.count("velo-sql server on http://") == 1, log
    assert server.terminate() == 0
    log = server.log()
    assert "velo-sql server shutting down: stopping its jobs" in log
    assert "every job committed and stopped in " in log
    assert re.search(r"velo-sql server on http://[^ ]+ has shut down", log), log


def test_an_unknown_level_is_refused_before_the_server_starts(tmp_path: Path) -> None:
    command = ["server", "--data-dir", str(tmp_path), "--port", "9", "--log-level", "verbose"]
    result = subprocess.run(
        [console_script("velo-sql"), *command],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown log level 'verbose'" in result.stderr
    assert "valid: trace, debug, info, warning, error, critical" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()
