"""A job's resource limits in the in-process server: what fails, how, and what does not.

The real-server attacks (a long batch, a memory-hungry batch, a stop mid-query) are in
tests/integration/test_security_limits.py; these cover the paths around them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from tests.jobserver import Harness, app_sql, write_jsonl
from velostream.errors import JobLimitError
from velostream.server.processors.limits import (
    STOP_GRACE_SECONDS,
    BatchWatch,
    JobLimits,
    Watchdog,
)
from velostream.sql.model import JobSpec, StatementKind

SLOW = "SELECT id, list_sum(range(0, id % 7 + 8000)) AS v FROM src"
# As slow in all, in chunks a third as long: DuckDB sees an interrupt between chunks.
LONG = "SELECT id, list_sum(range(0, id % 7 + 3000)) AS v FROM src"


def _source(tmp_path: Path, rows: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [json.dumps({"id": i}) for i in range(rows)])


def _deploy(h: Harness, tmp_path: Path, select: str, rows: int, **job: str) -> None:
    h.deploy(
        app_sql(
            "out",
            select=select,
            source={"type": "file_source", "path": str(_source(tmp_path, rows)), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(tmp_path / "out.jsonl"), "format": "jsonl"},
            job=job,
        )
    )


def test_duckdbs_own_memory_limit_fails_the_job_naming_the_limit(
    harness: Harness, tmp_path: Path
) -> None:
    """What the buffer manager holds (here a DISTINCT's hash table) is bounded by DuckDB."""
    _deploy(
        harness,
        tmp_path,
        "SELECT id % 40000 AS k, COUNT(DISTINCT id) AS c FROM src GROUP BY id % 40000",
        50_000,
        **{"job.memory.limit": "1MiB"},
    )
    status = harness.wait_state("out", "failed", timeout=60)
    assert "job.memory.limit (1.0 MiB) exceeded: DuckDB: Out of Memory Error" in status["reason"]
    [group] = harness.catalog("process", "out")
    assert group["kind"] == "ResourceError"
    assert status["records_out"] == 0


def test_a_limit_is_not_retried_by_retry_with_backoff(harness: Harness, tmp_path: Path) -> None:
    """The same batch would only go over its limit again: the job fails at once."""
    _deploy(
        harness,
        tmp_path,
        SLOW,
        50_000,
        failure_strategy="RetryWithBackoff",
        retry_backoff_ms="10",
        **{"job.batch.timeout": "300ms"},
    )
    status = harness.wait_state("out", "failed", timeout=60)
    assert "job.batch.timeout (0.3s) exceeded" in status["reason"]
    assert harness.sample("velo_job_retries_total", job="out") in (0.0, None)
    assert len(harness.catalog("process", "out")) == 1


def test_a_job_under_its_limits_runs_to_the_end(harness: Harness, tmp_path: Path) -> None:
    _deploy(
        harness,
        tmp_path,
        "SELECT id, id * 2 AS v FROM src",
        5_000,
        **{"job.memory.limit": "256MiB", "job.batch.timeout": "30s"},
    )
    status = harness.wait_state("out", "completed", timeout=60)
    assert status["records_out"] == 5_000


def test_a_stopped_batch_is_read_again_when_the_job_starts(
    harness: Harness, tmp_path: Path
) -> None:
    """Interrupted mid-query, the batch is not committed: a restart reads all of it.

    Not committed is what the counts say: a batch that ran to its end would have been
    committed before the loop saw the stop. The stop takes the grace (0.3 s), up to a
    watchdog tick (0.1 s) and the DuckDB chunk in flight: about 0.5 s on an idle
    machine, but each of those steps waits for a core, and with both cores busy many
    times over 1.2 s (SLOW's longer chunks) and 2.5 s were seen. The one batch of
    600,000 rows takes about 9 s on an idle machine, far more on a busy one.
    """
    _deploy(harness, tmp_path, LONG, 600_000, **{"batch.size": "600000"})
    harness.wait_for(lambda: harness.status("out")["records_in"] > 0, 30, "the first batch")
    time.sleep(0.3)
    started = time.monotonic()
    harness.server.stop("out")
    assert time.monotonic() - started < 5.0
    status = harness.status("out")
    assert harness.state("out") == "stopped"
    assert (status["records_in"], status["records_out"]) == (0, 0)
    checkpoint = harness.server.checkpoints.load("out") if harness.server.checkpoints else None
    assert checkpoint is None or checkpoint.position in (None, 0) or not checkpoint.position


def test_the_job_keys_override_the_server_defaults() -> None:
    job = JobSpec(
        name="j",
        statement_name="j",
        kind=StatementKind.STREAM,
        select_sql="SELECT 1",
        emit=None,
        sources=(),
        sinks=(),
        memory_limit_bytes=1024,
    )
    limits = JobLimits(memory_bytes=2048, batch_timeout_ms=500).for_job(job)
    assert (limits.memory_bytes, limits.batch_timeout_ms) == (1024, 500)
    assert limits.timeout_exceeded(0.61).args[0] == (
        "job.batch.timeout (0.5s) exceeded: the batch ran 0.6s and was interrupted"
    )
    assert isinstance(limits.memory_exceeded("x"), JobLimitError)


def test_the_watchdog_interrupts_until_the_batch_ends() -> None:
    watchdog = Watchdog(tick=0.01)
    calls: list[float] = []
    watch = watchdog.begin(JobLimits(batch_timeout_ms=50), lambda: calls.append(time.monotonic()))
    deadline = time.monotonic() + 30  # a starved watchdog thread ticks late, never early
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    watchdog.end(watch)
    count = len(calls)
    time.sleep(0.05)
    assert watch.tripped is not None and count >= 3  # asked again each tick
    assert len(calls) == count  # and never after the batch ended
    done = threading.Event()
    quiet = watchdog.begin(JobLimits(), done.set)
    time.sleep(0.05)
    watchdog.end(quiet)
    assert not done.is_set() and quiet.tripped is None


def test_ending_a_watch_waits_for_its_interrupt_in_progress() -> None:
    """`end` returns only once no check of the batch is under way: an interrupt that
    came after would stop the next batch's query on the same connection."""
    watchdog = Watchdog(tick=0.01)
    entered, release, ended = threading.Event(), threading.Event(), threading.Event()
    calls: list[bool] = []

    def interrupt() -> None:  # the first call holds the check until released
        calls.append(ended.is_set())
        if len(calls) == 1:
            entered.set()
            release.wait(30)

    watch = watchdog.begin(JobLimits(batch_timeout_ms=1), interrupt)
    assert entered.wait(30)
    ender = threading.Thread(target=lambda: (watchdog.end(watch), ended.set()))
    ender.start()
    assert not ended.wait(0.2)  # the check is under way: `end` waits for it
    release.set()
    ender.join(30)
    assert ended.is_set()
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count and not any(calls)  # none after `end` returned


def test_a_stopped_batch_gets_a_short_grace_before_it_is_interrupted() -> None:
    """The grace is measured from the stop to the watchdog's check, never by the test's
    own sleeps: on a busy machine a sleep of half the grace can last longer than all
    of it, and a starved watchdog thread checks late (never early)."""
    calls: list[float] = []
    watch = BatchWatch(JobLimits(), lambda: calls.append(time.monotonic()))
    watch.stop()
    assert watch.stopped_at is not None
    watch.check(watch.stopped_at + STOP_GRACE_SECONDS * 0.99, None)
    assert calls == []  # a batch that ends now is committed, not interrupted
    watch.check(watch.stopped_at + STOP_GRACE_SECONDS * 1.01, None)
    watch.check(watch.stopped_at + STOP_GRACE_SECONDS * 1.02, None)
    assert len(calls) == 2  # and once the grace is over, interrupted at every tick

    # The watchdog's thread applies it: its first interrupt comes after the grace.
    watchdog = Watchdog(tick=0.01)
    fired = threading.Event()
    first: list[float] = []

    def interrupt() -> None:
        first.append(time.monotonic())
        fired.set()

    live = watchdog.begin(JobLimits(), interrupt)
    live.stop()
    assert fired.wait(30), "the watchdog never interrupted the stopped batch"
    watchdog.end(live)
    assert live.stopped_at is not None
    assert first[0] - live.stopped_at >= STOP_GRACE_SECONDS


def test_a_failing_interrupt_does_not_end_the_watchdog() -> None:
    """A job whose connection is gone must not stop the limits of every other job."""
    watchdog = Watchdog(tick=0.01)

    def broken() -> None:
        raise RuntimeError("connection closed")

    first = watchdog.begin(JobLimits(batch_timeout_ms=1), broken)
    calls: list[float] = []
    second = watchdog.begin(JobLimits(batch_timeout_ms=30), lambda: calls.append(1.0))
    time.sleep(0.2)
    watchdog.end(first)
    watchdog.end(second)
    assert first.tripped is not None and second.tripped is not None and calls
