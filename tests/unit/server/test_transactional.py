"""Transactional mode in one process: an abort (a sink failing mid-batch, retried with
RetryWithBackoff) rewinds outputs and source, so each record is written exactly once;
simple mode keeps the half-written batch (at-least-once) for contrast."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl

N = 40


def run(h: Harness, tmp_path: Path, mode: str, *, fail_writes: int = 3) -> list[int]:
    source = write_jsonl(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "v": str(i)}) for i in range(N)]
    )
    out = tmp_path / "out.jsonl"
    h.deploy(
        app_sql(
            "out",
            select="SELECT id, v FROM src",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={
                "type": "file_sink",
                "path": str(out),
                "format": "jsonl",
                "fail_writes": str(fail_writes),
            },
            job={
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "5",
                "retry_backoff_ms": "1",
                "batch.size": "7",
            },
            mode=mode,
        )
    )
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    assert h.job_errors("out", "sink", "IOError") == fail_writes
    return [r["id"] for r in read_jsonl(out)]


def test_an_abort_rewinds_so_each_record_is_written_exactly_once(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    h = harness
    ids = run(h, tmp_path, "transactional")
    assert ids == list(range(N))
    status = h.status("out")
    assert status["records_in"] == status["records_out"] == N
    assert h.sample("velo_job_records_out_total", job="out") == N
    checkpoint = h.server.checkpoints.load("out")
    assert checkpoint is not None
    assert checkpoint.sink_offsets["out"] == (tmp_path / "out.jsonl").stat().st_size


def test_simple_mode_keeps_the_half_written_batch(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    ids = run(harness, tmp_path, "simple")
    counts = Counter(ids)
    assert set(counts) == set(range(N))  # nothing lost
    assert sum(counts.values()) > N  # the torn writes stay: at-least-once


def test_a_transactional_restart_resumes_exactly_once(
    harness: Harness, faults: None, tmp_path: Path
) -> None:
    h = harness
    run(h, tmp_path, "transactional", fail_writes=1)
    h.server.restart("out")
    h.wait_state("out", "completed")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == list(range(N))
