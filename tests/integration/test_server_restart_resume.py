"""A deployed job survives its server: SIGKILL, start again on the same data dir, and
`GET /jobs` lists it running again — nobody deploys it a second time — resumed from its
checkpoint, with every input row in its output.

What the delivery modes promise after a crash: `transactional`, every row exactly once;
`simple` (at-least-once), every row, and a row twice only if it lies past the last
committed position (the batch in flight when the process died).

The operator's intent survives too: a paused job comes back paused, a stopped one
stopped, an undeployed one not at all. An application that no longer deploys at start
is a `deploy` error and the server serves the others. `deploy-app` started again with
its file resumes it; `velo-sql run` keeps nothing.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    checkpoint,
    console_script,
    launcher,
    read_ids,
    trade,
    velo_cli,
    wait_for,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 60_000
MORE = 2_000
# A WHERE that holds for every row but costs CPU: the job takes seconds, so that the
# kill lands while it is mid-stream.
HEAVY = "WHERE md5(repeat(CAST(id AS VARCHAR), 300)) <> ''"


def copy_app(
    name: str, source: Path, out: Path, *, mode: str = "simple", batch: int = 2_000, app: str = ""
) -> str:
    """A copy of a watched (unbounded) CSV of trades into `out`."""
    return f"""-- @app: {app or name}
-- @version: 1
-- @job_mode: {mode}
-- @batch_size: {batch}
CREATE STREAM {name} AS
SELECT id, symbol, qty FROM src
{HEAVY}
EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      'src.watch' = 'true', 'src.polling_interval' = '50ms',
      '{name}.type' = 'file_sink', '{name}.path' = '{out}', '{name}.format' = 'csv');
"""


def append_trades(path: Path, start: int, stop: int) -> None:
    with open(path, "a", encoding="utf-8") as out:
        for i in range(start, stop):
            _, symbol, qty, _ = trade(i)
            out.write(f"{i},{symbol},{qty},2024-01-01 00:00:00\n")


def mid_stream(server: VeloServer, name: str, at_least: int) -> None:
    def probe() -> bool:
        doc = server.job(name)
        assert doc["state"] == "running", doc
        return bool(doc["records_in"] >= at_least)

    wait_for(f"{name} to be mid-stream", probe, timeout=60, every=0.01)


def committed_rows(data_dir: Path, job: str) -> int:
    position = checkpoint(data_dir, job)["position"]
    assert position is not None, f"{job} committed nothing before the kill"
    return int(position["line"]) - 1  # minus the header line


def ids_of(out: Path) -> list[int]:
    """The ids written so far (none before the sink has written its header)."""
    if not out.exists() or out.stat().st_size == 0:
        return []
    return read_ids(out)


def all_ids(out: Path, total: int) -> list[int] | None:
    ids = ids_of(out)
    return ids if set(ids) >= set(range(total)) else None


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_sigkill_then_restart_lists_the_job_running_and_loses_nothing(
    mode: str, tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, source, out = tmp_path / "data", tmp_path / "trades.csv", tmp_path / "copy.csv"
    write_trades(source, ROWS)
    server = launcher.server(data_dir)
    assert server.deploy(copy_app("copy", source, out, mode=mode)) == ["copy"]
    mid_stream(server, "copy", ROWS // 5)
    server.kill()
    committed = committed_rows(data_dir, "copy")
    assert 0 < committed < ROWS, committed

    restarted = launcher.server(data_dir)
    jobs = restarted.jobs()
    assert list(jobs) == ["copy"], jobs  # deployed again by the server itself
    assert jobs["copy"]["mode"] == mode and jobs["copy"]["version"] == "1"
    restarted.wait_state("copy", "running")
    # Unbounded: rows appended after the restart flow through too.
    append_trades(source, ROWS, ROWS + MORE)
    total = ROWS + MORE
    ids = wait_for("every row in the output", lambda: all_ids(out, total), timeout=180)
    assert restarted.job("copy")["state"] == "running"
    # Resumed from the checkpoint, not from the start.
    wait_for("the counts", lambda: restarted.job("copy")["records_in"] == total - committed)

    counts = Counter(ids)
    if mode == "transactional":
        assert ids == list(range(total)), f"{len(ids) - total:+d} rows"
    else:
        twice = sorted(i for i, n in counts.items() if n > 1)
        assert not twice or twice[0] >= committed, (committed, twice[:5])
        assert set(counts) == set(range(total))
    assert restarted.terminate() == 0, restarted.log()


def test_paused_stopped_and_undeployed_jobs_stay_so_across_a_crash(
    tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, source = tmp_path / "data", tmp_path / "trades.csv"
    write_trades(source, 1_000)
    outs = {name: tmp_path / f"{name}.csv" for name in ("run", "pause", "stop", "gone")}
    server = launcher.server(data_dir)
    for name, out in outs.items():
        server.deploy(copy_app(name, source, out))
    for name, out in outs.items():
        wait_for(f"{name} output", lambda o=out: len(ids_of(o)) == 1_000)
    assert server.http.post("/jobs/pause/pause").status_code == 200
    assert server.http.post("/jobs/stop/stop").status_code == 200
    undeploy = velo_cli("undeploy", "gone", "--url", server.url)
    assert undeploy.returncode == 0, undeploy.stdout + undeploy.stderr
    server.kill()

    restarted = launcher.server(data_dir)
    jobs = restarted.jobs()
    assert sorted(jobs) == ["pause", "run", "stop"]
    assert jobs["stop"]["state"] == "stopped"
    assert jobs["stop"]["reason"] == "stopped before the server restarted"
    restarted.wait_state("pause", "paused")
    restarted.wait_state("run", "running")

    append_trades(source, 1_000, 1_500)
    wait_for("the running job", lambda: len(read_ids(outs["run"])) == 1_500)
    time.sleep(0.5)
    for name in ("pause", "stop", "gone"):
        assert len(read_ids(outs[name])) == 1_000, name  # read nothing more
    assert restarted.http.post("/jobs/pause/resume").status_code == 200
    assert restarted.http.post("/jobs/stop/restart").status_code == 200
    for name in ("pause", "stop"):
        wait_for(f"{name} to catch up", lambda n=name: read_ids(outs[n]) == list(range(1_500)))


def _deploy_errors(server: VeloServer) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = server.http.get("/errors", params={"stage": "deploy"}).json()[
        "groups"
    ]
    return groups


def test_an_application_that_no_longer_deploys_does_not_stop_the_server(
    tmp_path: Path, launcher: Launcher
) -> None:
    """Its folder is no longer under the server's roots at the restart: a `deploy`
    error naming it, logged; the other application runs; undeploy forgets it."""
    data_dir = tmp_path / "data"
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    for folder in (kept, dropped):
        folder.mkdir()
        write_trades(folder / "trades.csv", 500)
    server = launcher.server(data_dir, allow=[tmp_path])
    server.deploy(copy_app("lost", dropped / "trades.csv", dropped / "out.csv"))
    server.deploy(copy_app("fine", kept / "trades.csv", kept / "out.csv"))
    server.kill()

    restarted = launcher.server(data_dir, allow=[kept, data_dir])
    assert list(restarted.jobs()) == ["fine"]
    restarted.wait_state("fine", "running")
    [group] = _deploy_errors(restarted)
    assert "application 'lost' (job(s) lost) cannot be deployed again at start" in group["message"]
    assert "outside the server's roots" in group["message"]
    assert "cannot be deployed again at start" in restarted.log()
    assert restarted.http.get("/health").json()["status"] == "ok"

    undeploy = velo_cli("undeploy", "lost", "--url", restarted.url)
    assert undeploy.returncode == 0, undeploy.stdout + undeploy.stderr
    restarted.kill()
    again = launcher.server(data_dir, allow=[kept, data_dir])
    assert list(again.jobs()) == ["fine"]
    assert _deploy_errors(again) == []


def test_deploy_app_started_again_resumes_its_application(
    tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, source, out = tmp_path / "data", tmp_path / "trades.csv", tmp_path / "copy.csv"
    write_trades(source, ROWS)
    app = tmp_path / "app.sql"
    app.write_text(copy_app("copy", source, out), encoding="utf-8")
    server = launcher.deploy_app(app, data_dir).wait_healthy()
    mid_stream(server, "copy", ROWS // 5)
    server.kill()
    committed = committed_rows(data_dir, "copy")

    again = launcher.deploy_app(app, data_dir).wait_healthy()
    assert list(again.jobs()) == ["copy"]
    again.wait_state("copy", "running")
    ids = wait_for("every row in the output", lambda: all_ids(out, ROWS), timeout=180)
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not twice or twice[0] >= committed
    assert _deploy_errors(again) == []


def test_velo_sql_run_keeps_no_deployment(tmp_path: Path) -> None:
    source, data_dir = write_trades(tmp_path / "trades.csv", 100), tmp_path / "data"
    app = tmp_path / "app.sql"
    app.write_text(
        f"""-- @app: local
CREATE STREAM local_copy AS SELECT id, symbol FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      'local_copy.type' = 'file_sink', 'local_copy.path' = '{tmp_path / "out.csv"}');
""",
        encoding="utf-8",
    )
    result = subprocess.run(
        [console_script("velo-sql"), "run", str(app), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_ids(tmp_path / "out.csv") == list(range(100))
    assert not (data_dir / "apps").exists()
