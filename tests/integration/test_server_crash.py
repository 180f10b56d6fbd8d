"""The server process killed mid-job (SIGKILL) or stopped by SIGTERM, then restarted.

Each test runs one application of three jobs over the same large CSV: a copy (every
record once), a per-symbol aggregate and a per-hour tumbling window (both EMIT FINAL,
so their executor state must survive the crash). The server is stopped while every
job is mid-stream and started again on the same data dir, which deploys the application
again by itself; it must resume from the checkpoints, not start over, and end with:

- simple mode: every input record in the copy at least once;
- transactional mode: every input record exactly once;
- both: aggregates equal to those of an uninterrupted run (computed here).
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import (
    EPOCH,
    Launcher,
    VeloServer,
    checkpoint,
    launcher,
    read_csv,
    read_ids,
    trade,
    wait_for,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 400_000
JOBS = ("copy", "per_symbol", "per_hour")


@pytest.fixture(scope="module")
def trades_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trades(tmp_path_factory.mktemp("input") / "trades.csv", ROWS)


# A WHERE that holds for every row but costs CPU: the jobs take seconds, not a
# fraction of one, so that a signal can land while they are mid-stream.
HEAVY = "WHERE md5(repeat(CAST(id AS VARCHAR), 400)) <> ''"


def application(
    source: Path,
    out: Path,
    *,
    mode: str,
    batch_size: int,
    jobs: tuple[str, ...] = JOBS,
    heavy: bool = False,
) -> str:
    """The application text, with the statements of `jobs` (default: all three)."""
    where = f"\n{HEAVY}" if heavy else ""
    with_source = f"""'src.type' = 'file_source',
    'src.path' = '{source}',
    'src.format' = 'csv',"""

    def sink(name: str) -> str:
        return f"""'{name}.type' = 'file_sink',
    '{name}.path' = '{out / name}.csv',
    '{name}.format' = 'csv'"""

    statements = {
        "copy": f"""CREATE STREAM copy AS
SELECT id, symbol, qty FROM src{where}
EMIT CHANGES
WITH ({with_source}
    {sink("copy")});
""",
        "per_symbol": f"""CREATE TABLE per_symbol AS
SELECT symbol PRIMARY KEY, COUNT(*) AS n, SUM(qty) AS qty, MIN(id) AS first_id,
       MAX(id) AS last_id
FROM src{where}
GROUP BY symbol
EMIT FINAL
WITH ({with_source}
    {sink("per_symbol")});
""",
        "per_hour": f"""CREATE TABLE per_hour AS
SELECT symbol PRIMARY KEY, _window_start AS hour_start, COUNT(*) AS n, SUM(qty) AS qty
FROM src{where}
GROUP BY symbol
WINDOW TUMBLING(ts, 1h)
EMIT FINAL
WITH ({with_source}
    {sink("per_hour")});
""",
    }
    header = f"""-- @app: crash_{mode}
-- @version: 1.0.0
-- @job_mode: {mode}
-- @batch_size: {batch_size}
"""
    return header + "\n".join(statements[job] for job in jobs)


# --- what an uninterrupted run produces ---------------------------------------------


@functools.cache
def expected_per_symbol() -> Counter[tuple[Any, ...]]:
    groups: dict[str, list[int]] = {}
    for i in range(ROWS):
        _, symbol, qty, _ = trade(i)
        g = groups.setdefault(symbol, [0, 0, i, i])
        g[0] += 1
        g[1] += qty
        g[3] = i
    return Counter((s, n, q, first, last) for s, (n, q, first, last) in groups.items())


@functools.cache
def expected_per_hour() -> Counter[tuple[Any, ...]]:
    groups: Counter[tuple[str, int]] = Counter()
    qty: Counter[tuple[str, int]] = Counter()
    for i in range(ROWS):
        _, symbol, q, _ = trade(i)
        key = (symbol, i // 3600)
        groups[key] += 1
        qty[key] += q
    return Counter((s, h, n, qty[(s, h)]) for (s, h), n in groups.items())


def per_symbol_rows(path: Path) -> Counter[tuple[Any, ...]]:
    return Counter(
        (r["symbol"], int(r["n"]), int(r["qty"]), int(r["first_id"]), int(r["last_id"]))
        for r in read_csv(path)
    )


def per_hour_rows(path: Path) -> Counter[tuple[Any, ...]]:
    def hour(text: str) -> int:
        return int((datetime.fromisoformat(text) - EPOCH).total_seconds()) // 3600

    return Counter(
        (r["symbol"], hour(r["hour_start"]), int(r["n"]), int(r["qty"])) for r in read_csv(path)
    )


# --- the scenario ---------------------------------------------------------------------


def run_until_mid_stream(server: VeloServer, sql: str, at_least: int) -> None:
    """Deploy, then return once every job has read `at_least` records and none ended."""
    assert sorted(server.deploy(sql)) == sorted(JOBS)

    def mid_stream() -> bool:
        jobs = server.jobs()
        ended = [n for n, j in jobs.items() if j["state"] != "running"]
        assert not ended, f"jobs ended before the stop: {ended}; use more rows"
        return all(jobs[n]["records_in"] >= at_least for n in JOBS)

    wait_for("every job to be mid-stream", mid_stream, timeout=60, every=0.01)


def assert_stopped_mid_stream(data_dir: Path, out: Path) -> dict[str, int]:
    """Each job has a checkpoint short of the end; return the lines each committed."""
    committed = {}
    for job in JOBS:
        position = checkpoint(data_dir, job)["position"]
        assert position is not None, f"{job} committed nothing before the stop"
        committed[job] = int(position["line"]) - 1  # minus the header line
        assert 0 < committed[job] < ROWS, f"{job} was not mid-stream: {position}"
    assert len(read_csv(out / "copy.csv")) < ROWS
    return committed


def restart_and_finish(
    launcher: Launcher, data_dir: Path, sql: str, committed: dict[str, int]
) -> VeloServer:
    """A new server on the same data dir, which deploys the application again by itself
    (deploying it again by hand is refused: that version is deployed); run to the end."""
    server = launcher.server(data_dir)
    assert sorted(server.jobs()) == sorted(JOBS)
    assert server.http.post("/jobs", json={"sql": sql}).status_code == 409
    for job in JOBS:
        doc = server.wait_state(job, "completed", timeout=90)
        # Resumed where its checkpoint says, not from the start.
        assert doc["records_in"] == ROWS - committed[job], (job, doc["records_in"])
        assert doc["records_failed"] == 0
    return server


def assert_results(out: Path, *, exactly_once: bool) -> None:
    ids = read_ids(out / "copy.csv")
    if exactly_once:
        assert len(ids) == ROWS, f"{len(ids) - ROWS:+d} records"
        assert ids == sorted(ids) and set(ids) == set(range(ROWS))
    else:
        missing = set(range(ROWS)) - set(ids)
        assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    assert per_symbol_rows(out / "per_symbol.csv") == expected_per_symbol()
    hours = per_hour_rows(out / "per_hour.csv")
    if exactly_once:
        assert hours == expected_per_hour()
    else:
        assert set(hours) == set(expected_per_hour())


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_sigkill_mid_job_then_restart_loses_nothing(
    mode: str, trades_csv: Path, tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "out"
    sql = application(trades_csv, out, mode=mode, batch_size=5_000)

    server = launcher.server(data_dir)
    run_until_mid_stream(server, sql, at_least=ROWS // 5)
    server.kill()
    committed = assert_stopped_mid_stream(data_dir, out)

    restart_and_finish(launcher, data_dir, sql, committed)
    assert_results(out, exactly_once=mode == "transactional")


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_sigterm_mid_batch_commits_then_restart_completes(
    mode: str, trades_csv: Path, tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "out"
    # Large, slow batches, so the signal lands while one is being processed.
    sql = application(trades_csv, out, mode=mode, batch_size=40_000, heavy=True)

    server = launcher.server(data_dir)
    run_until_mid_stream(server, sql, at_least=ROWS // 5)
    assert server.terminate() == 0, server.log()
    log = server.log()
    for job in JOBS:
        assert f"job '{job}' -> stopped (server shutdown)" in log, log
    assert "forced" not in log and "abandoned" not in log, log
    committed = assert_stopped_mid_stream(data_dir, out)

    # The final commit covers everything written: the copy holds exactly the committed
    # records, its file ends at the committed length, and no aggregate was emitted.
    copy = out / "copy.csv"
    assert read_ids(copy) == list(range(committed["copy"]))
    assert checkpoint(data_dir, "copy")["sink_offsets"] == {"copy": copy.stat().st_size}
    assert read_csv(out / "per_symbol.csv") == []

    restart_and_finish(launcher, data_dir, sql, committed)
    assert_results(out, exactly_once=mode == "transactional")


def test_sigterm_past_the_shutdown_deadline_reports_the_forced_job(
    trades_csv: Path, tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "out"
    # One slow batch of the whole file: the signal lands while it is processed.
    sql = f"""-- @app: deadline
-- @version: 1
-- @job_mode: transactional
-- @batch_size: {ROWS}
CREATE STREAM slow_copy AS
SELECT id, md5(repeat(symbol || CAST(qty AS VARCHAR), 100)) AS digest FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{trades_csv}',
      'slow_copy.type' = 'file_sink', 'slow_copy.path' = '{out / "slow_copy.csv"}');
"""
    server = launcher.server(data_dir, args=["--shutdown-deadline", "0.05"])
    assert server.deploy(sql) == ["slow_copy"]
    wait_for("the batch in flight", lambda: server.job("slow_copy")["records_in"] > 0)
    assert server.terminate() == 0, server.log()
    log = " ".join(server.log().split())
    assert "forced to abandon jobs at shutdown: slow_copy" in log, log
    assert not (data_dir / "checkpoints" / "slow_copy.json").exists(), "nothing committed"

    # What the abandoned job had not committed is rolled back when it resumes.
    restarted = launcher.server(data_dir)  # deploys it again by itself
    restarted.wait_state("slow_copy", "completed", timeout=90)
    assert read_ids(out / "slow_copy.csv") == list(range(ROWS))
