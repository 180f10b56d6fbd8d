"""Dead-letter replay: poison records dead-lettered, the job upgraded to a version that
accepts them, replayed into the sink, marked replayed, never replayed twice."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.jobserver import (
    BAD_CAST,
    BROKEN_JSON,
    Harness,
    app_sql,
    poison_lines,
    read_jsonl,
    write_jsonl,
)
from velostream.datasource import registry as connector_registry
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.datasource.traits import SourceBatch

STRICT = "SELECT id, CAST(v AS INTEGER) AS n FROM src"
# v2 accepts `x<n>` as n: what v1 dead-lettered now passes.
LENIENT = "SELECT id, COALESCE(TRY_CAST(v AS INTEGER), CAST(substr(v, 2) AS INTEGER)) AS n FROM src"


def application(source: Path, out: Path, *, version: str, select: str) -> str:
    return app_sql(
        "out",
        select=select,
        source={"type": "file_source", "path": str(source), "format": "jsonl"},
        sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
        job={"failure_strategy": "SendToDLQ", "batch.size": "4"},
        version=version,
    )


def letters(h: Harness) -> list[dict[str, Any]]:
    response = h.client.get("/jobs/out/dlq")
    assert response.status_code == 200, response.text
    docs: list[dict[str, Any]] = response.json()["letters"]
    return docs


def line_of(letter: dict[str, Any]) -> int:
    return int(letter["position"].rsplit(":", 1)[1])


def test_replay_after_an_upgrade_lands_the_records_once(harness: Harness, tmp_path: Path) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", poison_lines())
    out = tmp_path / "out.jsonl"
    h.deploy(application(source, out, version="1", select=STRICT))
    h.wait_state("out", "completed")
    good = [r["id"] for r in read_jsonl(out)]
    assert good == [1, 2, 3, 4, 6, 8, 9, 12]
    dead = letters(h)
    assert sorted(line_of(d) for d in dead) == sorted([*BROKEN_JSON, *BAD_CAST])

    # The fix: version 2 accepts the bad values. It resumes where v1 ended.
    upgraded = h.client.post(
        "/jobs", json={"sql": application(source, out, version="2", select=LENIENT)}
    )
    assert upgraded.status_code == 201, upgraded.text
    h.wait_state("out", "completed")
    assert [r["id"] for r in read_jsonl(out)] == good  # nothing read again, nothing lost

    cast_ids = [d["id"] for d in dead if d["stage"] == "process"]
    response = h.client.post("/jobs/out/dlq/replay", json={"ids": cast_ids})
    assert response.status_code == 200, response.text
    assert response.json() == {"job": "out", "replayed": 2, "rows_out": 2}
    written = read_jsonl(out)
    assert [r["id"] for r in written] == [*good, *BAD_CAST]
    assert written[-2:] == [{"id": i, "n": i} for i in BAD_CAST]
    marked = {line_of(d): d["replayed"] for d in letters(h)}
    assert marked == {5: False, 7: True, 10: False, 11: True}
    assert h.sample("velo_job_records_out_total", job="out") == 10

    # Replaying again sends nothing twice.
    again = h.client.post("/jobs/out/dlq/replay", json={"ids": cast_ids})
    assert again.json() == {"job": "out", "replayed": 0, "rows_out": 0}
    assert len(read_jsonl(out)) == 10

    # Lines that are not JSON still fail: none of them is replayed, the answer says why.
    still = h.client.post("/jobs/out/dlq/replay")
    assert still.status_code == 422
    assert still.headers["content-type"] == "application/problem+json"
    doc = still.json()
    assert "2 of 2 dead letters still fail; none was replayed" in doc["detail"]
    assert {f["kind"] for f in doc["failures"]} == {"ParseError"}
    assert len(read_jsonl(out)) == 10
    assert [line_of(d) for d in letters(h) if d["replayed"]] == list(BAD_CAST)

    # The replayed rows are committed: a restart neither loses nor repeats them.
    h.server.restart("out")
    h.wait_state("out", "completed")
    assert len(read_jsonl(out)) == 10


def test_replay_into_a_running_job(harness: Harness) -> None:
    h = harness
    rows = [{"id": i, "v": f"x{i}" if i % 3 == 0 else str(i)} for i in range(9)]
    source = {"type": "memory_source", "rows": json.dumps(rows), "bounded": "false"}
    job = {"failure_strategy": "SendToDLQ"}
    h.deploy(app_sql("out", select=STRICT, source=source, job=job, version="1"))
    h.wait_for(lambda: h.status("out")["dead_letters"] == 3, what="the dead letters")
    assert all(not d["replayed"] for d in letters(h))
    h.deploy(app_sql("out", select=LENIENT, source=source, job=job, version="2"))
    h.wait_state("out", "running")
    processor = h.server.job("out").processor
    assert processor is not None
    response = h.client.post("/jobs/out/dlq/replay")
    assert response.status_code == 200, response.text
    assert response.json()["replayed"] == 3
    sink = MemorySink.named("out")
    assert sink is not None
    assert sorted(r["id"] for r in sink.rows()) == [0, 3, 6]
    assert all(d["replayed"] for d in letters(h))
    # The job runs on: rows that arrive now are processed by v2.
    source_of = processor.source
    assert isinstance(source_of, MemorySource)
    source_of.add([{"id": 100, "v": "x100"}])
    h.wait_for(lambda: len(sink.rows()) == 4, what="a new row")
    assert sink.rows()[-1] == {"id": 100, "n": 100}
    assert h.state("out") == "running"


def test_replay_of_an_unknown_job_is_a_404(harness: Harness) -> None:
    response = harness.client.post("/jobs/nope/dlq/replay")
    assert response.status_code == 404
    assert harness.client.get("/jobs/nope/dlq").status_code == 404


class WatchfulSource(MemorySource):
    """An unbounded memory source whose reads take a moment and notice a seek meanwhile."""

    overlaps = 0

    def __init__(self, name: str, properties: Mapping[str, str] | None = None, **kw: Any) -> None:
        super().__init__(name, properties, **kw)
        self._reading = False

    def read_batch(self, max_records: int) -> SourceBatch | None:
        self._reading = True
        try:
            time.sleep(0.005)
            return super().read_batch(max_records)
        finally:
            self._reading = False

    def seek(self, position: Any) -> None:
        if self._reading:
            type(self).overlaps += 1
        super().seek(position)


def test_a_failing_replay_never_rewinds_the_source_in_the_middle_of_a_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay's abort rewinds the source; the loop reads outside any batch. Both
    take the job's batch lock, so the rewind waits for the read in flight."""
    monkeypatch.setitem(connector_registry._extra_sources, "memory_source", WatchfulSource)
    WatchfulSource.overlaps = 0
    h = harness
    rows = [{"id": i, "v": f"x{i}" if i % 3 == 0 else str(i)} for i in range(9)]
    source = {"type": "memory_source", "rows": json.dumps(rows), "bounded": "false"}
    h.deploy(app_sql("out", select=STRICT, source=source, job={"failure_strategy": "SendToDLQ"}))
    h.wait_for(lambda: h.status("out")["dead_letters"] == 3, what="the dead letters")
    for _ in range(40):  # each replay still fails (STRICT), so each one aborts
        response = h.client.post("/jobs/out/dlq/replay")
        assert response.status_code == 422, response.text
    assert WatchfulSource.overlaps == 0
    assert h.state("out") == "running"
