"""`velo-sql run` ends without the interpreter's teardown (`velo_sql.exit_now`): what it
wrote must all be there, and its exit code must be what the run came to. Stopped by
SIGTERM (`docker stop`, systemd, `kill`), it stops as on Ctrl-C: gracefully."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.integration.server_process import clean_env, console_script, velo_sql, wait_for

pytestmark = pytest.mark.integration

ROWS = 20_000
APP = """\
-- @app: exit_check
CREATE STREAM doubled AS SELECT id, symbol, price * 2 AS p FROM trades
WITH (
    'trades.type' = 'file_source', 'trades.path' = 'trades.csv', 'trades.format' = 'csv',
    'doubled.type' = 'file_sink', 'doubled.path' = 'out.jsonl', 'doubled.format' = 'jsonl'
);
"""


def _trades(folder: Path) -> None:
    lines = [f"{i},S{i % 7},{i}.5" for i in range(1, ROWS + 1)]
    lines[100] = "101,S3,not-a-price"  # a bad cast and a short line: two dead rows
    lines[200] = "201,S4"
    (folder / "trades.csv").write_text("id,symbol,price\n" + "\n".join(lines) + "\n")


def test_a_run_leaves_its_output_log_and_summary_whole(tmp_path: Path) -> None:
    _trades(tmp_path)
    (tmp_path / "app.sql").write_text(APP)
    log = tmp_path / "velo.log"
    args = ("run", "app.sql", "--data-dir", "vd", "--log-file", str(log), "--log-level", "info")
    result = velo_sql(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(rows) == ROWS - 2
    assert rows[-1] == {"id": ROWS, "symbol": f"S{ROWS % 7}", "p": (ROWS + 0.5) * 2}
    # The log's last lines are the job's end: the handlers were flushed before the exit.
    last = log.read_text().splitlines()[-2:]
    assert f"{ROWS:,} in" in last[0] or f"{ROWS} in" in last[0], last
    assert last[-1].endswith("job 'doubled' -> completed"), last
    assert "Summary" in result.stdout and "Top error groups of doubled" in result.stdout


def test_a_run_whose_job_fails_exits_1(tmp_path: Path) -> None:
    _trades(tmp_path)
    (tmp_path / "out.jsonl").mkdir()  # the sink's path is a folder: the job cannot write
    (tmp_path / "app.sql").write_text(APP)
    result = velo_sql("run", "app.sql", "--data-dir", "vd", cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "FAILED" in result.stdout


def test_a_run_of_an_invalid_application_exits_1(tmp_path: Path) -> None:
    (tmp_path / "app.sql").write_text(APP.replace("price * 2", "nonesuch * 2"))
    _trades(tmp_path)
    result = velo_sql("run", "app.sql", "--data-dir", "vd", cwd=tmp_path)
    assert result.returncode == 1
    assert "nonesuch" in result.stderr


def test_sigterm_stops_a_run_gracefully_like_ctrl_c(tmp_path: Path) -> None:
    """A followed source never ends: SIGTERM must stop the job with its final flush and
    commit, print the summary and exit 0, not kill the process where it stands."""
    _trades(tmp_path)
    watched = APP.replace(
        "'trades.format' = 'csv',", "'trades.format' = 'csv', 'trades.watch' = 'true',"
    )
    (tmp_path / "app.sql").write_text(
        watched.replace("'trades.path'", "'trades.polling_interval' = '50ms', 'trades.path'")
    )
    log = tmp_path / "velo.log"
    args = ["run", "app.sql", "--data-dir", "vd", "--log-file", str(log), "--log-level", "info"]
    process = subprocess.Popen(
        [console_script("velo-sql"), *args],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = tmp_path / "out.jsonl"
        wait_for(
            "every row out",
            lambda: out.exists() and out.read_bytes().count(b"\n") == ROWS - 2,
        )
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (stdout, stderr)
    assert "stopping: each job finishes its batch" in stderr
    assert "Summary" in stdout and "doubled" in stdout
    assert f"{ROWS:,}" in stdout and f"{ROWS - 2:,}" in stdout  # in, out: as counted
    last = log.read_text().splitlines()[-1]
    assert last.endswith("job 'doubled' -> stopped (server shutdown)"), last
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(rows) == ROWS - 2 and rows[-1]["id"] == ROWS
