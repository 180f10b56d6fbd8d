"""Late rows under the default `late.data.strategy` (drop) are counted, never vanish.

A real `velo-sql server` runs a tumbling-window job over a real file whose events come
out of order: the dropped rows show in `/jobs/{name}`, in `velo_late_records_total`, as
one `process` error group in `/errors`, and in = counted + late.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server_process import Launcher, launcher

__all__ = ["launcher"]

pytestmark = pytest.mark.integration


def test_dropped_late_rows_are_counted_and_recorded(launcher: Launcher, tmp_path: Path) -> None:
    # 500 events one second apart, then every tenth again at its old time: 50 late rows
    # (their one-minute window closed long before), as in a ported example.
    times = list(range(500)) + list(range(0, 450, 10))
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps({"k": "a", "ts": t * 1000}) + "\n" for t in times))
    server = launcher.server(tmp_path / "velo-data")
    server.deploy(
        f"""-- @app: late
CREATE TABLE per_minute AS
SELECT k, COUNT(*) AS n FROM src GROUP BY k WINDOW TUMBLING(ts, 1m) EMIT FINAL
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'jsonl',
      'per_minute.type' = 'file_sink', 'per_minute.path' = '{tmp_path / "out.jsonl"}',
      'per_minute.format' = 'jsonl');
"""
    )
    doc = server.wait_state("per_minute", "completed")
    late = 45
    assert (doc["records_in"], doc["records_failed"], doc["late_records"]) == (545, 0, late)
    counted = sum(
        json.loads(line)["n"] for line in (tmp_path / "out.jsonl").read_text().splitlines()
    )
    assert doc["records_in"] == counted + doc["late_records"]
    families = {f.name: f for f in text_string_to_metric_families(server.http.get("/metrics").text)}
    [sample] = [
        s
        for s in families["velo_late_records"].samples
        if s.name == "velo_late_records_total" and s.labels["job"] == "per_minute"
    ]
    assert sample.value == late
    groups = server.http.get("/errors", params={"job": "per_minute"}).json()["groups"]
    [group] = [g for g in groups if g["message"].startswith("late records dropped")]
    assert (group["stage"], group["count"]) == ("process", late)
