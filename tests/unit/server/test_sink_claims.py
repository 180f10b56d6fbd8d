"""A file or topic is written by one deployed job: a deploy that would share one is
refused (409) before anything starts, naming the other job and what both write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl
from velostream.errors import SinkConflictError
from velostream.server.sink_claims import check_sink_claims, claims_of

PROBLEM = "application/problem+json"


def file_job(name: str, source: Path, out: Path | str, *, app: str, version: str = "1") -> str:
    return app_sql(
        name,
        select="SELECT id FROM src",
        source={"type": "file_source", "path": str(source), "format": "jsonl"},
        sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
        app=app,
        version=version,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [json.dumps({"id": i}) for i in range(5)])


def deploy_first(h: Harness, source: Path, out: Path) -> bytes:
    """Job `first` writes `out` to completion; returns what it wrote."""
    h.deploy(file_job("first", source, out, app="one"))
    h.wait_state("first", "completed")
    assert len(read_jsonl(out)) == 5
    return out.read_bytes()


@pytest.mark.parametrize("spelling", ["same", "dotted", "linked", "relative"])
def test_a_second_job_on_the_same_file_is_refused_however_it_is_spelled(
    harness: Harness,
    source: Path,
    tmp_path: Path,
    spelling: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = harness
    out = tmp_path / "out" / "result.jsonl"
    out.parent.mkdir()
    written = deploy_first(h, source, out)
    (tmp_path / "link").symlink_to(out.parent)
    monkeypatch.chdir(tmp_path)
    other = {
        "same": str(out),
        "dotted": str(tmp_path / "out" / ".." / "out" / "result.jsonl"),
        "linked": str(tmp_path / "link" / "result.jsonl"),
        "relative": "out/result.jsonl",
    }[spelling]
    response = h.client.post("/jobs", json={"sql": file_job("second", source, other, app="two")})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    doc = response.json()
    assert doc["title"] == "Sink already written"
    assert doc["conflicts_with"] == "first"
    assert doc["target"] == f"file {out}"
    assert "job 'first' of application 'one' already writes (its sink 'first')" in doc["detail"]
    assert f"sink 'second' of job 'second' would write file {out}" in doc["detail"]
    assert [j["name"] for j in h.server.list_jobs()] == ["first"]
    assert out.read_bytes() == written  # untouched
    # Recorded as a refused deploy, like every other.
    assert h.catalog("deploy")[0]["kind"] == "ConfigurationError"


def test_two_statements_of_one_application_on_one_file_are_refused(
    harness: Harness, source: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "both.jsonl"
    sql = (
        file_job("a", source, out, app="pair")
        + file_job("b", source, out, app="pair").split("\n", 2)[2]
    )
    with pytest.raises(SinkConflictError) as refused:
        h.deploy(sql)
    message = str(refused.value)
    assert "sink 'b' of job 'b' and sink 'a' of job 'a' of application 'pair' both write" in message
    assert refused.value.other_job == "a" and refused.value.target == f"file {out}"
    assert h.server.list_jobs() == [] and not out.exists()


def test_an_upgrade_keeps_its_own_sink(harness: Harness, source: Path, tmp_path: Path) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    deploy_first(h, source, out)
    assert h.deploy(file_job("first", source, out, app="one", version="2")) == ["first"]


def test_a_stopped_job_holds_its_sink_until_it_is_undeployed(
    harness: Harness, source: Path, tmp_path: Path
) -> None:
    h = harness
    out = tmp_path / "out.jsonl"
    deploy_first(h, source, out)
    with pytest.raises(SinkConflictError):
        h.deploy(file_job("second", source, out, app="two"))
    h.server.undeploy("first")
    assert h.deploy(file_job("second", source, out, app="two")) == ["second"]


def test_dead_letter_files_are_claimed_too(harness: Harness, source: Path, tmp_path: Path) -> None:
    """`dlq.path` on another job's sink, and on another job's default DLQ file."""
    h = harness
    out = tmp_path / "out.jsonl"
    deploy_first(h, source, out)
    onto_sink = app_sql(
        "second",
        select="SELECT id FROM src",
        source={"type": "file_source", "path": str(source), "format": "jsonl"},
        sink={"type": "file_sink", "path": str(tmp_path / "second.jsonl"), "format": "jsonl"},
        job={"dlq.path": str(out)},
        app="two",
    )
    with pytest.raises(
        SinkConflictError, match=r"dead-letter file of job 'second' would write file"
    ):
        h.deploy(onto_sink)
    default_dlq = h.data_dir / "dlq" / "first.jsonl"
    onto_dlq = onto_sink.replace(str(out), str(default_dlq))
    with pytest.raises(SinkConflictError, match=r"already writes \(its dead-letter file\)"):
        h.deploy(onto_dlq)


def kafka_app(h: Harness, name: str, topic: str, servers: str, app: str) -> object:
    sql = app_sql(
        name,
        source={"type": "memory_source", "rows": "[]"},
        sink={"type": "kafka_sink", "topic": topic, "bootstrap.servers": servers},
        app=app,
    )
    return h.server.validate(sql)


@pytest.mark.parametrize(
    ("topic", "servers", "conflict"),
    [
        ("orders", "b1:9092,b2:9092", True),
        ("orders", "B2:9092", True),  # the same cluster, listed otherwise
        ("orders", "other:9092", False),
        ("invoices", "b1:9092", False),
    ],
)
def test_kafka_topics_are_claimed_per_cluster(
    harness: Harness, topic: str, servers: str, conflict: bool
) -> None:
    h = harness
    first = kafka_app(h, "first", "orders", "b1:9092, b2:9092", "one")
    second = kafka_app(h, "second", topic, servers, "two")
    deployed = [("one", job) for job in first.jobs]  # type: ignore[attr-defined]
    if conflict:
        with pytest.raises(SinkConflictError, match="already writes") as refused:
            check_sink_claims(second, deployed, h.data_dir)  # type: ignore[arg-type]
        assert refused.value.other_job == "first"
        assert refused.value.target == f"topic orders on {servers.lower()}"
    else:
        check_sink_claims(second, deployed, h.data_dir)  # type: ignore[arg-type]


def test_stdout_memory_and_kafka_dead_letter_sinks_claim_nothing(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    app = h.server.validate(
        app_sql(
            "quiet",
            sink={"type": "stdout_sink"},
            job={"dlq.type": "kafka", "dlq.bootstrap.servers": "b:9092"},
        )
    )
    assert claims_of(app.jobs[0], h.data_dir) == []
