"""Each failure strategy on a source with known poison records: exact counts in the sink,
the dead-letter queue, the metrics, /errors and the final job state.

The source is `poison_lines()`: 12 JSON lines read 4 at a time. Lines 5 and 10 are not
JSON (deserialize errors), lines 7 and 11 hold a `v` that `CAST(v AS INTEGER)` refuses
(process errors); the first batch (lines 1-4) is clean.
"""

from __future__ import annotations

import json
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
from velostream.datasource.file.source import FilePosition

POISON = set(BROKEN_JSON) | set(BAD_CAST)
ALL_IDS = list(range(1, 13))
GOOD_IDS = [i for i in ALL_IDS if i not in POISON]
SELECT = "SELECT id, CAST(v AS INTEGER) AS n FROM src"


@pytest.fixture
def poisoned(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", poison_lines())


def deploy(h: Harness, source: Path, out: Path, strategy: str, **job: str) -> dict[str, Any]:
    props = {"failure_strategy": strategy, "batch.size": "4", **job}
    h.deploy(
        app_sql(
            "out",
            select=SELECT,
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
            job=props,
            version="1.2.3",
        )
    )
    return h.wait_state("out", "completed", "failed")


def committed_lines(h: Harness) -> int:
    """Lines of the source before the job's committed position."""
    checkpoint = h.server.checkpoints.load("out")
    assert checkpoint is not None
    return FilePosition.coerce(checkpoint.position).line


def groups_by_stage(h: Harness) -> dict[str, int]:
    """Occurrences per stage in GET /errors?job=out."""
    response = h.client.get("/errors", params={"job": "out", "limit": "1000"})
    assert response.status_code == 200
    counts: dict[str, int] = {}
    for group in response.json()["groups"]:
        counts[group["stage"]] = counts.get(group["stage"], 0) + group["count"]
    return counts


def assert_counts(
    h: Harness, *, records_in: int, out: int, failed: int, dead: int, status: dict[str, Any]
) -> None:
    assert h.sample("velo_job_records_in_total", job="out") == records_in
    assert h.sample("velo_job_records_out_total", job="out") == out
    assert h.sample("velo_job_records_failed_total", job="out") == failed
    assert h.sample("velo_dlq_records_total", job="out") == dead
    assert h.sample("velo_dlq_write_failures_total", job="out") == 0
    assert (status["records_in"], status["records_out"]) == (records_in, out)
    assert (status["records_failed"], status["dead_letters"]) == (failed, dead)


def test_log_and_continue_skips_each_bad_record_and_commits_the_rest(
    harness: Harness, poisoned: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    status = deploy(h, poisoned, out, "LogAndContinue")
    assert status["state"] == "completed"
    assert [r["id"] for r in read_jsonl(out)] == GOOD_IDS
    assert all(r["n"] == r["id"] for r in read_jsonl(out))
    assert_counts(h, records_in=12, out=8, failed=4, dead=0, status=status)
    assert h.job_errors("out", "deserialize", "ParseError") == 2
    assert h.job_errors("out", "process", "TypeError") == 2
    assert h.job_errors("out", "job") == 0
    assert groups_by_stage(h) == {"deserialize": 2, "process": 2}
    assert not (h.data_dir / "dlq" / "out.jsonl").exists()
    assert h.client.get("/jobs/out/dlq").json()["letters"] == []
    # Each bad record is logged where it is.
    refs = sorted(getattr(r, "record_ref", "") for r in h.error_records)
    assert refs == sorted(f"{poisoned}:{i}" for i in POISON)


def test_send_to_dlq_keeps_each_original_record_with_its_context(
    harness: Harness, poisoned: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    status = deploy(h, poisoned, out, "SendToDLQ")
    assert status["state"] == "completed"
    assert [r["id"] for r in read_jsonl(out)] == GOOD_IDS
    assert_counts(h, records_in=12, out=8, failed=4, dead=4, status=status)
    assert h.job_errors("out", "deserialize", "ParseError") == 2
    assert h.job_errors("out", "process", "TypeError") == 2
    assert groups_by_stage(h) == {"deserialize": 2, "process": 2}

    lines = poison_lines()
    letters = read_jsonl(h.data_dir / "dlq" / "out.jsonl")
    by_line = {int(letter["position"].rsplit(":", 1)[1]): letter for letter in letters}
    assert sorted(by_line) == sorted(POISON)
    for line, letter in by_line.items():
        assert letter["payload"] == lines[line - 1]  # the original record, byte for byte
        assert letter["position"] == f"{poisoned}:{line}"
        expected_stage = "deserialize" if line in BROKEN_JSON else "process"
        assert letter["stage"] == expected_stage
        assert letter["kind"] == ("ParseError" if line in BROKEN_JSON else "TypeError")
        assert letter["message"]
        assert letter["fingerprint"]
        assert letter["timestamp"] > 0
        assert (letter["job"], letter["app"], letter["version"]) == ("out", "test_app", "1.2.3")
        assert letter["source"] == "src"
        assert (letter["node_id"], letter["node_name"], letter["region"]) == (
            "node-1",
            "Test Node",
            "eu-west-1",
        )
    # The dead letter's fingerprint is its error group in /errors.
    fingerprints = {g["fingerprint"] for g in h.client.get("/errors?job=out").json()["groups"]}
    assert {letter["fingerprint"] for letter in letters} == fingerprints
    # GET /jobs/{name}/dlq pages through them, none replayed yet.
    first = h.client.get("/jobs/out/dlq", params={"limit": 3}).json()
    assert len(first["letters"]) == 3 and first["next_offset"] == 3
    rest = h.client.get("/jobs/out/dlq", params={"offset": 3}).json()
    assert len(rest["letters"]) == 1 and rest["next_offset"] is None
    paged = first["letters"] + rest["letters"]
    assert [d["id"] for d in paged] == [d["id"] for d in letters]
    assert not any(d["replayed"] for d in paged)


def test_fail_batch_commits_nothing_of_the_batch_and_fails_the_job(
    harness: Harness, poisoned: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    status = deploy(h, poisoned, out, "FailBatch")
    assert status["state"] == "failed"
    assert status["reason"].startswith("FailBatch: 2 bad record(s) in the batch; first at ")
    assert f"{poisoned}:5" in status["reason"]
    # The clean first batch is committed; nothing of the second one is.
    assert [r["id"] for r in read_jsonl(out)] == [1, 2, 3, 4]
    assert_counts(h, records_in=8, out=4, failed=2, dead=0, status=status)
    assert h.job_errors("out", "deserialize", "ParseError") == 1
    assert h.job_errors("out", "process", "TypeError") == 1
    # The job's failure is filed under the kind of what failed it, not as a bug.
    assert h.job_errors("out", "job", "ParseError") == 1
    assert groups_by_stage(h) == {"deserialize": 1, "process": 1, "job": 1}
    assert h.status_metric("out") == "failed"
    assert committed_lines(h) == 4


def test_retry_with_backoff_on_poison_retries_then_fails(
    harness: Harness, poisoned: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    status = deploy(h, poisoned, out, "RetryWithBackoff", max_retries="2", retry_backoff_ms="1")
    assert status["state"] == "failed"
    assert status["reason"].startswith("RetryWithBackoff: the batch still fails after 2 retries")
    assert [r["id"] for r in read_jsonl(out)] == [1, 2, 3, 4]
    # Records count once however often their batch is tried; each attempt's errors count.
    assert_counts(h, records_in=8, out=4, failed=2, dead=0, status=status)
    assert h.job_errors("out", "deserialize", "ParseError") == 3
    assert h.job_errors("out", "process", "TypeError") == 3
    assert h.job_errors("out", "job", "ParseError") == 1
    assert groups_by_stage(h) == {"deserialize": 3, "process": 3, "job": 1}


def memory_rows(n: int) -> dict[str, str]:
    return {"type": "memory_source", "rows": json.dumps([{"id": i} for i in range(n)])}


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_retry_with_backoff_survives_a_transient_sink_failure(
    harness: Harness, faults: None, mode: str
) -> None:
    from velostream.datasource.memory import MemorySink

    h = harness
    h.deploy(
        app_sql(
            "out",
            source=memory_rows(20),
            sink={"type": "memory_sink", "fail_writes": "2"},
            job={
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "3",
                "retry_backoff_ms": "1",
                "batch.size": "5",
            },
            mode=mode,
        )
    )
    status = h.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    sink = MemorySink.named("out")
    assert sink is not None
    # Nothing lost, nothing twice (a failed write wrote nothing).
    assert [r["id"] for r in sink.rows()] == list(range(20))
    assert_counts(h, records_in=20, out=20, failed=0, dead=0, status=status)
    assert h.job_errors("out", "sink", "IOError") == 2
    assert h.job_errors("out", "job") == 0
    assert groups_by_stage(h) == {"sink": 2}


def test_retry_with_backoff_fails_the_job_after_max_retries(harness: Harness, faults: None) -> None:
    from velostream.datasource.memory import MemorySink

    h = harness
    h.deploy(
        app_sql(
            "out",
            source=memory_rows(10),
            sink={"type": "memory_sink", "fail_writes": "100"},
            job={
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "2",
                "retry_backoff_ms": "1",
            },
        )
    )
    status = h.wait_state("out", "failed")
    assert "still fails after 2 retries" in status["reason"]
    assert "broker unavailable" in status["reason"]
    sink = MemorySink.named("out")
    assert sink is not None and sink.rows() == []
    assert sink.write_calls == 3  # the first try and two retries
    assert_counts(h, records_in=10, out=0, failed=0, dead=0, status=status)
    assert h.job_errors("out", "sink", "IOError") == 3
    assert h.job_errors("out", "job", "IOError") == 1
    assert groups_by_stage(h) == {"sink": 3, "job": 1}


def test_retry_with_backoff_waits_longer_each_time(harness: Harness, faults: None) -> None:
    """Exponential: 40 ms then 80 ms then 160 ms between the attempts."""
    import time

    h = harness
    started = time.monotonic()
    h.deploy(
        app_sql(
            "out",
            source=memory_rows(3),
            sink={"type": "memory_sink", "fail_writes": "3"},
            job={
                "failure_strategy": "RetryWithBackoff",
                "max_retries": "3",
                "retry_backoff_ms": "40",
            },
        )
    )
    h.wait_state("out", "completed")
    assert time.monotonic() - started >= 0.27


def test_a_dlq_write_failure_fails_the_job(
    harness: Harness, poisoned: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    status = deploy(h, poisoned, out, "SendToDLQ", **{"dlq.path": str(unwritable)})
    assert status["state"] == "failed"
    assert "dead-letter write failed" in status["reason"]
    assert h.sample("velo_dlq_write_failures_total", job="out") == 1
    assert h.sample("velo_dlq_records_total", job="out") == 0
    assert h.job_errors("out", "dlq", "IOError") == 1
    assert h.job_errors("out", "job", "IOError") == 1
    # The batch whose dead letters could not be kept is not committed: its good rows
    # come again on restart, and its bad ones are not silently lost.
    assert [r["id"] for r in read_jsonl(out)] == [1, 2, 3, 4, 6, 8]
    assert committed_lines(h) == 4
