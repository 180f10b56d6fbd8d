"""`velo-sql deploy-app --file app.sql`: a server with one application.

With `--once` it exits when its bounded jobs end, printing the `run` summary: 0 when
every job completed, non-zero when one failed. Without it, it serves until SIGTERM.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.integration.server_process import (
    Launcher,
    launcher,
    read_ids,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

ROWS = 2_000


def write_app(tmp_path: Path, *, strategy: str = "LogAndContinue", poison: bool = False) -> Path:
    source = write_trades(tmp_path / "trades.csv", ROWS)
    if poison:
        with open(source, "a", encoding="utf-8") as out:
            out.write("not-a-number,AAPL,1,2024-01-01 10:00:00\n")
    out_dir = tmp_path / "out"
    app = tmp_path / "app.sql"
    app.write_text(
        f"""-- @app: once_app
-- @version: 1
-- @batch_size: 500
-- @failure_strategy: {strategy}

CREATE STREAM once_copy AS
SELECT id, symbol, qty FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'once_copy.type' = 'file_sink', 'once_copy.path' = '{out_dir}/once_copy.csv');

CREATE TABLE once_totals AS
SELECT symbol PRIMARY KEY, COUNT(*) AS n FROM src GROUP BY symbol EMIT FINAL
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'once_totals.type' = 'file_sink', 'once_totals.path' = '{out_dir}/once_totals.csv');
""",
        encoding="utf-8",
    )
    return app


def test_once_exits_zero_with_the_summary_when_its_jobs_complete(
    tmp_path: Path, launcher: Launcher
) -> None:
    app = write_app(tmp_path)
    server = launcher.deploy_app(app, tmp_path / "data", args=["--once"])
    assert server.wait_exit() == 0, server.log()
    output = server.log()
    assert "Summary" in output
    summary = [line for line in output.splitlines() if "once_" in line and "│" in line]
    assert len(summary) == 2, output
    for line in summary:
        assert " ok " in line and f"{ROWS:,}" in line, line
    assert "FAILED" not in output
    # Each job's deploy line says how it stands, never a bare "deployed".
    deployed = re.findall(r"deployed (once_\w+): (\w+)", output)
    assert sorted(name for name, _ in deployed) == ["once_copy", "once_totals"], output
    assert {state for _, state in deployed} <= {"starting", "running", "completed"}, output
    assert read_ids(tmp_path / "out" / "once_copy.csv") == list(range(ROWS))
    assert len((tmp_path / "out" / "once_totals.csv").read_text().splitlines()) == 1 + 7


def test_once_exits_non_zero_when_a_job_fails(tmp_path: Path, launcher: Launcher) -> None:
    app = write_app(tmp_path, strategy="FailBatch", poison=True)
    server = launcher.deploy_app(app, tmp_path / "data", args=["--once"])
    code = server.wait_exit()
    output = server.log()
    assert code == 1, output
    assert "FAILED" in output
    assert "job once_copy failed:" in " ".join(output.split()), output
    # The error groups of the failed job name the bad line.
    assert "trades.csv:" in output


BROKEN = """-- @app: broken
-- @version: 1
CREATE STREAM broken_a AS
SELECT id FROM src
EMIT CHANGES
WITH ('src.type' = 'bogus_source', 'broken_a.type' = 'file_sink', 'broken_a.path' = 'a.csv');

CREATE STREAM broken_b AS
SELECT id FROM src
EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = 'in.csv');
"""
# Each problem of BROKEN as `error:` lines show it: statement, line:column, message.
BROKEN_PROBLEMS = (
    "statement 1 (broken_a) at 6:7: source 'src': unknown type 'bogus_source'",
    "statement 2 (broken_b) at 8:1: sink 'broken_b' has no type",
)


def test_once_with_a_broken_application_exits_non_zero_listing_the_problems(
    tmp_path: Path, launcher: Launcher
) -> None:
    app = tmp_path / "broken.sql"
    app.write_text(BROKEN, encoding="utf-8")
    server = launcher.deploy_app(app, tmp_path / "data", args=["--once"])
    code = server.wait_exit()
    output = " ".join(server.log().split())
    assert code == 1, output
    assert "2 problems found" in output
    for problem in BROKEN_PROBLEMS:
        assert f"error: {problem}" in output, output


def test_without_once_it_serves_the_application_until_sigterm(
    tmp_path: Path, launcher: Launcher
) -> None:
    app = write_app(tmp_path)
    server = launcher.deploy_app(app, tmp_path / "data").wait_healthy()
    for job in ("once_copy", "once_totals"):
        server.wait_state(job, "completed")
    assert server.alive()
    assert server.terminate() == 0, server.log()


def test_once_refuses_an_application_that_would_never_end(
    tmp_path: Path, launcher: Launcher
) -> None:
    source = write_trades(tmp_path / "trades.csv", 10)
    app = tmp_path / "endless.sql"
    app.write_text(
        f"""-- @app: endless
CREATE STREAM endless AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.watch' = 'true',
      'endless.type' = 'file_sink', 'endless.path' = '{tmp_path}/endless.csv');
""",
        encoding="utf-8",
    )
    server = launcher.deploy_app(app, tmp_path / "data", args=["--once"])
    code = server.wait_exit()
    output = " ".join(server.log().split())
    assert code == 2, output
    assert "no job of the application reads a bounded source" in output


def test_a_server_that_cannot_bind_runs_no_job(tmp_path: Path, launcher: Launcher) -> None:
    app = write_app(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = launcher.deploy_app(app, tmp_path / "data", args=["--once", "--port", str(port)])
        code = server.wait_exit()
    output = " ".join(server.log().split())
    assert code == 1, output
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in output
    assert not (tmp_path / "out").exists(), "a job ran although the server never started"


def test_config_files_resolve_against_the_application_folder(
    tmp_path: Path, launcher: Launcher
) -> None:
    """Like `velo-sql run`: `config_file` paths are relative to the .sql file, not to
    the directory the server was started in (the test's, here)."""
    source = write_trades(tmp_path / "trades.csv", ROWS)
    app_dir = tmp_path / "apps" / "nested"
    (app_dir / "conf").mkdir(parents=True)
    (app_dir / "conf" / "trades.yaml").write_text(
        f"type: file_source\npath: {source}\nformat: csv\n", encoding="utf-8"
    )
    out = tmp_path / "out" / "copy.csv"
    app = app_dir / "app.sql"
    app.write_text(
        f"""-- @app: conf_app
-- @version: 1
CREATE STREAM conf_copy AS SELECT id, symbol FROM src EMIT CHANGES
WITH ('src.config_file' = 'conf/trades.yaml',
      'conf_copy.type' = 'file_sink', 'conf_copy.path' = '{out}');
""",
        encoding="utf-8",
    )
    assert not (Path.cwd() / "conf" / "trades.yaml").exists()
    server = launcher.deploy_app(app, tmp_path / "data", args=["--once", "--processing-slots", "1"])
    assert server.wait_exit() == 0, server.log()
    assert read_ids(out) == list(range(ROWS))
