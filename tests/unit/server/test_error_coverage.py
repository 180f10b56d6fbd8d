"""One error at every stage, each found in all five places it must reach: the log
(`velostream.errors`), the buffer (/errors/recent), the catalog (/errors?stage=), the
counter (`velo_job_errors_total{stage}`) and /errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.jobserver import Harness, app_sql, poison_lines, write_jsonl
from velostream.errors import SqlValidationError, Stage
from velostream.server.stream_job_server import DEPLOY_JOB

ROWS = json.dumps([{"id": i, "v": str(i)} for i in range(6)])
RETRY = {"failure_strategy": "RetryWithBackoff", "max_retries": "3", "retry_backoff_ms": "1"}


@dataclass(frozen=True)
class Case:
    """How to make one error happen, and how to recognise it."""

    stage: Stage
    kind: str
    needle: str  # a piece of the error's message
    trigger: Callable[[Harness, Path], None]
    job: str = "out"
    final: tuple[str, ...] = ("completed",)


def memory_job(
    *,
    source: dict[str, str] | None = None,
    sink: dict[str, str] | None = None,
    job: dict[str, str] | None = None,
) -> str:
    """Six rows from a memory source (faults from `source`) into a memory sink."""
    props = {"type": "memory_source", "rows": ROWS, **(source or {})}
    return app_sql("out", source=props, sink=sink, job=job)


def deploy_broken_sql(h: Harness, tmp: Path) -> None:
    with pytest.raises(SqlValidationError):
        h.deploy("CREATE STREAM out AS SELECT FROM WHERE;")


def file_job(h: Harness, tmp: Path, strategy: str = "LogAndContinue", **job: str) -> None:
    source = write_jsonl(tmp / "in.jsonl", poison_lines())
    h.deploy(
        app_sql(
            "out",
            select="SELECT id, CAST(v AS INTEGER) AS n FROM src",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            job={"failure_strategy": strategy, "batch.size": "4", **job},
        )
    )


def dlq_unwritable(h: Harness, tmp: Path) -> None:
    (tmp / "dlq-dir").mkdir()
    file_job(h, tmp, "SendToDLQ", **{"dlq.path": str(tmp / "dlq-dir")})


CASES = [
    Case(Stage.DEPLOY, "ParseError", "deploy rejected", deploy_broken_sql, job=DEPLOY_JOB),
    Case(
        Stage.SOURCE,
        "IOError",
        "connection refused",
        lambda h, _: h.deploy(memory_job(source={"fail_reads": "1"}, job=RETRY)),
    ),
    Case(Stage.DESERIALIZE, "ParseError", "not a JSON object", file_job),
    Case(Stage.PROCESS, "TypeError", "cannot CAST v = ", file_job),
    Case(
        Stage.SINK,
        "IOError",
        "broker unavailable",
        lambda h, _: h.deploy(
            memory_job(sink={"type": "memory_sink", "fail_writes": "1"}, job=RETRY)
        ),
    ),
    Case(
        Stage.SINK,
        "IOError",
        "flush timed out",
        lambda h, _: h.deploy(
            memory_job(sink={"type": "memory_sink", "fail_flushes": "1"}, job=RETRY)
        ),
    ),
    Case(
        Stage.COMMIT,
        "IOError",
        "offset commit rejected",
        lambda h, _: h.deploy(memory_job(source={"fail_commits": "1"}, job=RETRY)),
    ),
    Case(Stage.DLQ, "IOError", "dead-letter write failed", dlq_unwritable, final=("failed",)),
    Case(
        Stage.JOB,
        "IOError",
        "job failed: ",
        lambda h, _: h.deploy(memory_job(sink={"type": "memory_sink", "crash": "true"})),
        final=("failed",),
    ),
]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.stage.value}-{c.needle.split()[0]}" for c in CASES]
)
def test_an_error_at_each_stage_reaches_all_five_places(
    harness: Harness, faults: None, tmp_path: Path, case: Case
) -> None:
    h = harness
    case.trigger(h, tmp_path)
    if case.stage != Stage.DEPLOY:
        status = h.wait_state(case.job, "completed", "failed")
        assert status["state"] in case.final, status["reason"]
    stage = case.stage.value

    # 1. the log: a structured record on `velostream.errors`
    logged = [r for r in h.logged(stage, case.job) if case.needle in r.getMessage()]
    assert logged, [r.getMessage() for r in h.error_records]
    assert getattr(logged[0], "kind", None) == case.kind

    # 2. the buffer: the server's, and the job's own
    assert h.buffered(case.needle), h.client.get("/errors/recent").json()
    assert h.buffered(case.needle, job=case.job)

    # 3. the catalog, filtered by stage (and the catalog object behind it)
    groups = [g for g in h.catalog(stage) if case.needle in g["message"]]
    assert groups, h.catalog(stage)
    assert {(g["job"], g["kind"]) for g in groups} == {(case.job, case.kind)}
    assert all(g["count"] >= 1 and g["node_id"] == "node-1" for g in groups)
    metrics = h.manager.require_metrics()
    assert [g for g in metrics.catalog.groups(stage=stage) if case.needle in g.sample_message]

    # 4. the counter
    assert h.job_errors(case.job, stage, case.kind) >= 1
    assert h.sample("velo_error_messages_total") >= 1

    # 5. /errors, unfiltered (and the text report)
    everything = h.client.get("/errors", params={"limit": "1000"}).json()["groups"]
    assert [g for g in everything if g["stage"] == stage and case.needle in g["message"]]
    assert case.needle in h.client.get("/errors/report").text


def test_every_stage_is_covered() -> None:
    assert {case.stage for case in CASES} == set(Stage)
