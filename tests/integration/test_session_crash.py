"""A session-window job in transactional mode, its server killed (SIGKILL) mid-stream.

The trades (one a second) are grouped by `id // 1000 % 3`: each key is active for 1,000
seconds, then idle for 2,000, so with a 60-second gap every block of 1,000 trades is one
session, closed by the watermark a minute after its last trade and emitted then (EMIT
FINAL). The open sessions' rows are executor state: they must come back from the
checkpoint after the crash, and every session must be in the output exactly once, with
the values of an uninterrupted run.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import (
    EPOCH,
    Launcher,
    checkpoint,
    launcher,
    read_csv,
    trade,
    wait_for,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 300_000
BLOCK = 1_000
JOB = "sessions"
# Costs CPU for every row, so the job takes seconds and the kill lands mid-stream.
HEAVY = "WHERE md5(repeat(CAST(id AS VARCHAR), 200)) <> ''"


def application(source: Path, out: Path) -> str:
    return f"""-- @app: session_crash
-- @version: 1.0.0
-- @job_mode: transactional
-- @batch_size: 5000
CREATE TABLE {JOB} AS
SELECT id // {BLOCK} % 3 AS block_key PRIMARY KEY, _window_start AS started,
       _window_end AS ended, COUNT(*) AS n, SUM(qty) AS qty, MIN(id) AS first_id,
       COUNT(DISTINCT symbol) AS symbols
FROM src
{HEAVY}
GROUP BY id // {BLOCK} % 3
WINDOW SESSION(ts, 60s)
EMIT FINAL
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      '{JOB}.type' = 'file_sink', '{JOB}.path' = '{out / JOB}.csv', '{JOB}.format' = 'csv',
      'watermark.max_out_of_orderness' = '10s');
"""


def expected() -> Counter[tuple[Any, ...]]:
    sessions: Counter[tuple[Any, ...]] = Counter()
    for block in range((ROWS + BLOCK - 1) // BLOCK):
        ids = range(block * BLOCK, min(ROWS, (block + 1) * BLOCK))
        rows = [trade(i) for i in ids]
        start = EPOCH + timedelta(seconds=rows[0][3])
        end = EPOCH + timedelta(seconds=rows[-1][3] + 60)
        qty = sum(r[2] for r in rows)
        symbols = len({r[1] for r in rows})
        sessions[(block % 3, start, end, len(rows), qty, ids[0], symbols)] += 1
    return sessions


def got(path: Path) -> Counter[tuple[Any, ...]]:
    return Counter(
        (
            int(r["block_key"]),
            datetime.fromisoformat(r["started"]),
            datetime.fromisoformat(r["ended"]),
            int(r["n"]),
            int(r["qty"]),
            int(r["first_id"]),
            int(r["symbols"]),
        )
        for r in read_csv(path)
    )


def test_sigkill_mid_session_job_then_restart_emits_every_session_exactly_once(
    tmp_path: Path, launcher: Launcher
) -> None:
    source = write_trades(tmp_path / "trades.csv", ROWS)
    data_dir, out = tmp_path / "data", tmp_path / "out"
    sql = application(source, out)

    server = launcher.server(data_dir)
    assert server.deploy(sql) == [JOB]

    def mid_stream() -> bool:
        doc = server.job(JOB)
        assert doc["state"] == "running", f"the job ended before the kill: {doc['state']}"
        return bool(doc["records_in"] >= ROWS // 4)

    wait_for("the job to be mid-stream", mid_stream, timeout=60, every=0.01)
    server.kill()
    position = checkpoint(data_dir, JOB)["position"]
    assert position is not None, "nothing committed before the kill"
    committed = int(position["line"]) - 1
    assert 0 < committed < ROWS, position
    emitted = got(out / f"{JOB}.csv")
    assert 0 < sum(emitted.values()) < sum(expected().values())  # some sessions, not all

    restarted = launcher.server(data_dir)  # deploys the application again by itself
    doc = restarted.wait_state(JOB, "completed", timeout=120)
    assert doc["records_in"] == ROWS - committed  # resumed from the checkpoint
    assert doc["records_failed"] == 0 and doc["late_records"] == 0
    assert got(out / f"{JOB}.csv") == expected()
