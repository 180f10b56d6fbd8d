"""`velo-sql run` ends without the interpreter's teardown (`velo_sql.exit_now`): what it
wrote must all be there, and its exit code must be what the run came to."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.integration.server_process import velo_sql

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
