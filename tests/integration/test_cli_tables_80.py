"""`velo-cli jobs` and `velo-cli dlq` in an 80-column terminal (tmux), against a real
`velo-sql server`: every line fits, the header is one line of whole names, and each
job or dead letter is one row, a long value cut with an ellipsis."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.integration.server_process import Launcher, VeloServer, launcher
from tests.integration.test_console_cli import CLI, Tmux, wait_until

pytestmark = pytest.mark.integration

__all__ = ["launcher"]

QUICKSTART = Path(__file__).resolve().parents[2] / "demo" / "quickstart"
JOBS = ["name", "version", "state", "in", "out", "failed", "dead letters", "reason"]
LETTERS = ["position", "stage", "kind", "message", "payload", "replayed"]


def _app(name: str, source: Path, sink: Path, strategy: str = "LogAndContinue") -> str:
    return f"""
CREATE STREAM {name} AS
SELECT id, symbol, price * quantity AS notional
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = '{source}',
    'trades.format' = 'csv',
    '{name}.type' = 'file_sink',
    '{name}.path' = '{sink}',
    '{name}.format' = 'csv',
    'failure_strategy' = '{strategy}'
);
"""


def screen_at_80(socket: Path, *args: str) -> list[str]:
    """What `velo-cli ARGS` shows in an 80-column pane, scrollback included."""
    command = shlex.join([*CLI, *args])
    tmux = Tmux(socket, f"{command}; echo EXIT=$?; sleep 60", columns=80)
    try:
        wait_until("the table", lambda: "EXIT=0" in tmux.screen(history=True))
        screen = tmux.screen(history=True)
    finally:
        tmux.close()
    return screen.rstrip().splitlines()


def assert_fits(lines: list[str], columns: list[str], rows: int) -> list[list[str]]:
    """Every line within 80 columns, one header line of whole column names, `rows`
    lines of cells; returns the rows' cells."""
    shown = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), shown
    headers = [line for line in lines if line.startswith("┃")]
    assert len(headers) == 1, shown  # the header never wraps
    names = [c.strip() for c in headers[0].split("┃")[1:-1]]
    assert names and all(name in columns for name in names), shown
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == rows, shown  # no row takes a second line
    return [[c.strip() for c in line.split("│")[1:-1]] for line in body]


@pytest.fixture
def server(launcher: Launcher, tmp_path: Path) -> VeloServer:
    """Jobs as after the README's tour, and one that failed with a long reason."""
    data = tmp_path / "data"
    shutil.copytree(QUICKSTART / "data", data)
    server = launcher.server(tmp_path / "server-data")
    out = tmp_path / "out"
    server.deploy(_app("big_trades", data / "trades.csv", out / "big.csv"))
    server.deploy(_app("clean_trades", data / "trades_poison.csv", out / "clean.csv", "SendToDLQ"))
    # A sink path that is a folder: the job fails when it writes, with a long reason.
    (out / "folder.csv").mkdir(parents=True)
    server.deploy(_app("failing_trades", data / "trades.csv", out / "folder.csv"))
    server.wait_state("big_trades", "completed")
    server.wait_state("clean_trades", "completed")
    wait_until("the failure", lambda: server.job("failing_trades")["state"] == "failed")
    return server


def test_jobs_and_dlq_fit_80_columns(server: VeloServer, tmp_path: Path) -> None:
    jobs = assert_fits(screen_at_80(tmp_path / "jobs.sock", "jobs", "--url", server.url), JOBS, 3)
    names = [cells[0] for cells in jobs]
    assert names == ["big_trades", "clean_trades", "failing_trades"]
    failed = jobs[2]
    assert "failed" in failed
    reason = server.job("failing_trades")["reason"]
    assert len(reason) > 20  # the case where the reason must be cut
    assert failed[-1].endswith("…") and reason.startswith(failed[-1][:-1]), failed
    assert len(failed[-1]) >= 15, failed  # cut, but still telling

    lines = screen_at_80(tmp_path / "dlq.sock", "dlq", "clean_trades", "--url", server.url)
    letters = assert_fits(lines, LETTERS, 3)
    assert all(cells[0] and cells[1] for cells in letters), lines
