"""`late.data.strategy = 'dead_letter'`: late rows go to the DLQ whatever the failure
strategy, and are counted as late, never also as failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobserver import Harness, app_sql, write_jsonl


@pytest.mark.parametrize("strategy", ["LogAndContinue", "FailBatch", "SendToDLQ"])
def test_late_rows_are_dead_lettered_and_counted_once(
    harness: Harness, tmp_path: Path, strategy: str
) -> None:
    times = [0, 10, 20, 30, 5, 40, 1, 50]  # 5 and 1: their 10 ms windows closed
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"k": "a", "ts": t}) for t in times])
    harness.deploy(
        app_sql(
            "out",
            select="SELECT k, COUNT(*) AS n FROM src GROUP BY k WINDOW TUMBLING(ts, 10ms)",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(tmp_path / "out.jsonl"), "format": "jsonl"},
            job={"failure_strategy": strategy, "late.data.strategy": "dead_letter"},
            emit="EMIT FINAL",
        )
    )
    status = harness.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    assert (status["records_in"], status["records_failed"]) == (8, 0)
    assert (status["late_records"], status["dead_letters"]) == (2, 2)
    letters = harness.client.get("/jobs/out/dlq").json()["letters"]
    assert sorted(json.loads(letter["payload"])["ts"] for letter in letters) == [1, 5]
