"""A pipeline survives its server: the second statement reads the first's output, the
server is SIGKILLed while both run, started again on the same data dir, and both jobs
finish from their checkpoints.

The reader reads only what the writer committed, so after the crash the writer's file
(cut back to its commit) still holds every row the reader read. Transactional mode:
every row exactly once at both ends. Simple mode: every row, and a repeat only past a
job's last commit.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.integration.server_process import (
    Launcher,
    checkpoint,
    launcher,
    read_ids,
    wait_for,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 30_000
# A WHERE that holds for every row but costs CPU: the jobs take seconds, so that the
# kill lands while both are mid-stream.
HEAVY = "md5(repeat(CAST(id AS VARCHAR), 300)) <> ''"


def two_statements(source: Path, tmp: Path, mode: str) -> str:
    return f"""-- @app: piped
-- @version: 1
-- @job_mode: {mode}
-- @batch_size: 1000
CREATE STREAM copied AS
SELECT id, symbol, qty FROM trades WHERE {HEAVY}
WITH ('trades.type' = 'file_source', 'trades.path' = '{source}',
      'copied.type' = 'file_sink', 'copied.path' = '{tmp}/copied.csv');

CREATE STREAM doubled AS
SELECT id, qty * 2 AS twice FROM copied WHERE {HEAVY}
WITH ('doubled.type' = 'file_sink', 'doubled.path' = '{tmp}/doubled.csv');
"""


def read_position(data_dir: Path, job: str) -> int:
    position = checkpoint(data_dir, job)["position"]
    return int(position["line"]) - 1 if position else 0  # minus the header line


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_killed_pipeline_restarts_and_loses_nothing(
    mode: str, tmp_path: Path, launcher: Launcher
) -> None:
    data_dir, source = tmp_path / "data", write_trades(tmp_path / "trades.csv", ROWS)
    server = launcher.server(data_dir)
    assert server.deploy(two_statements(source, tmp_path, mode)) == ["copied", "doubled"]
    wait_for(
        "the reader mid-stream",
        lambda: server.job("doubled")["records_in"] >= ROWS // 10,
        timeout=120,
        every=0.01,
    )
    server.kill()
    read_before = read_position(data_dir, "doubled")
    assert 0 < read_before < ROWS

    restarted = launcher.server(data_dir)
    for job in ("copied", "doubled"):
        restarted.wait_state(job, "completed", timeout=180)
    copied, doubled = read_ids(tmp_path / "copied.csv"), read_ids(tmp_path / "doubled.csv")
    if mode == "transactional":
        assert copied == list(range(ROWS)), f"{len(copied) - ROWS:+d} rows copied"
        assert doubled == list(range(ROWS)), f"{len(doubled) - ROWS:+d} rows doubled"
    else:
        for ids in (copied, doubled):
            counts = Counter(ids)
            assert set(counts) == set(range(ROWS))
            twice = sorted(i for i, n in counts.items() if n > 1)
            assert not twice or twice[0] >= read_before - 1000, twice[:5]
    # The reader resumed where it was: it did not read the writer's file again.
    assert restarted.job("doubled")["records_in"] <= ROWS - read_before + 1000
    assert restarted.terminate() == 0, restarted.log()
