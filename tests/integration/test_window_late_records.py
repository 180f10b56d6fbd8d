"""Late rows of sliding and session windows on a real `velo-sql server`.

Events one second apart, then some again at old times. Under `late.data.strategy =
dead_letter` every late row is a dead letter with its source line (peeked through
`/jobs/{name}/dlq`); under the default (drop) one `process` error group counts them.
Either way `/jobs` shows them and in = counted + late.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import Launcher, VeloServer, launcher

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

# 300 events a second apart, then every tenth of the first 200 again at its old time.
TIMES = list(range(300)) + list(range(0, 200, 10))
# SLIDING(ts, 20s, 10s): a repeat at t is late when both its windows ended by the
# watermark 299s; all 20 repeats (t < 200) are. SESSION(ts, 5s): all 300 are one
# session, open until the end, so each repeat joins it and none is late.
CASES = [
    ("SLIDING(ts, 20s, 10s)", 20, "dead_letter"),
    ("SLIDING(ts, 20s, 10s)", 20, "drop"),
    ("SESSION(ts, 5s)", 0, "dead_letter"),
]


def letters(server: VeloServer, job: str) -> list[dict[str, Any]]:
    response = server.http.get(f"/jobs/{job}/dlq", params={"offset": 0, "limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["letters"])


@pytest.mark.parametrize(("window", "late", "strategy"), CASES)
def test_late_rows_of_sliding_and_session_windows_are_counted_and_kept(
    launcher: Launcher, tmp_path: Path, window: str, late: int, strategy: str
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps({"k": "a", "ts": t * 1000}) + "\n" for t in TIMES))
    out = tmp_path / "out.jsonl"
    server = launcher.server(tmp_path / "velo-data")
    server.deploy(
        f"""-- @app: late_windows
CREATE TABLE windowed AS
SELECT k, _window_start AS ws, COUNT(*) AS n FROM src GROUP BY k WINDOW {window} EMIT FINAL
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'jsonl',
      'windowed.type' = 'file_sink', 'windowed.path' = '{out}', 'windowed.format' = 'jsonl',
      'late.data.strategy' = '{strategy}', 'batch.size' = '50');
"""
    )
    doc = server.wait_state("windowed", "completed")
    assert (doc["records_in"], doc["records_failed"], doc["late_records"]) == (
        len(TIMES),
        0,
        late,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    copies = 2 if window.startswith("SLIDING") else 1  # each row is in 2 sliding windows
    assert sum(r["n"] for r in rows) == copies * (len(TIMES) - late)
    groups = server.http.get("/errors", params={"job": "windowed"}).json()["groups"]
    dropped = [g for g in groups if g["message"].startswith("late records dropped")]
    kept = letters(server, "windowed")
    if strategy == "drop":
        assert [(g["stage"], g["count"]) for g in dropped] == [("process", late)]
        assert kept == []
    else:
        assert dropped == []
        assert len(kept) == late
        lines = sorted(int(letter["position"].rsplit(":", 1)[1]) for letter in kept)
        assert lines == list(range(301, 301 + late))  # the repeats: lines 301-320
