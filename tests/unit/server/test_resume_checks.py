"""A checkpoint resumes only what still fits the deployed version of its job.

Its position is applied only to the source it was read from: an upgrade that reads
another file starts that file from its beginning, with a warning that reaches the error
system. Its executor state must fit the new query: an upgrade with other GROUP BY keys
or aggregates fails at start naming what differs, while a compatible one (a changed
WHERE) goes on with its state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl
from velostream.server import checkpoint
from velostream.sql.model import ConnectorConfig


@pytest.fixture
def warnings_of_jobs() -> Iterator[list[logging.LogRecord]]:
    """WARNING records of `velostream.processor` (attached directly: whatever propagates)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("velostream.processor")
    handler = Keep(logging.WARNING)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def lines(start: int, stop: int, key: str = "k") -> list[str]:
    return [json.dumps({"id": i, "k": f"{key}{i % 2}", "v": i}) for i in range(start, stop)]


def file_source(path: Path | str) -> dict[str, str]:
    return {"type": "file_source", "path": str(path), "format": "jsonl"}


def jsonl_sink(path: Path) -> dict[str, str]:
    return {"type": "file_sink", "path": str(path), "format": "jsonl"}


def job_sql(select: str, source: Path | str, out: Path, version: str, **kw: Any) -> str:
    return app_sql(
        "job",
        select=select,
        source=file_source(source),
        sink=jsonl_sink(out),
        version=version,
        **kw,
    )


def run_to_end(h: Harness, sql: str, *states: str) -> dict[str, Any]:
    h.deploy(sql)
    return h.wait_state("job", *(states or ("completed",)))


def checkpoint_doc(h: Harness) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((h.data_dir / "checkpoints" / "job.json").read_bytes())
    return doc


# --- the source a position belongs to -------------------------------------------------------


def test_an_upgrade_to_another_file_reads_it_from_its_start_and_says_so(
    harness: Harness, tmp_path: Path, warnings_of_jobs: list[logging.LogRecord]
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(0, 5))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 112))
    out = tmp_path / "out.jsonl"
    select = "SELECT id FROM src"
    run_to_end(h, job_sql(select, a, out, "1"))
    named_a = checkpoint_doc(h).get("source")

    doc = run_to_end(h, job_sql(select, b, out, "2"))

    # All of B, from its first line; A's output kept.
    assert [r["id"] for r in read_jsonl(out)] == [*range(5), *range(100, 112)]
    assert doc["records_in"] == 12
    assert named_a == {"type": "file_source", "path": str(a)}
    assert checkpoint_doc(h)["source"] == {"type": "file_source", "path": str(b)}
    # Logged as a warning naming the job and both sources ...
    warned = [r.getMessage() for r in warnings_of_jobs if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "'job'" in warned[0] and str(a) in warned[0] and str(b) in warned[0]
    # ... and recorded: catalog, counter.
    groups = h.catalog("source", job="job")
    assert len(groups) == 1, groups
    group = groups[0]
    assert group["kind"] == "ConfigurationError"
    assert group["severity"] == "user"
    assert str(a) in group["message"] and str(b) in group["message"]
    assert "not applied" in group["message"]
    assert h.job_errors("job", "source", "ConfigurationError") == 1.0
    assert h.catalog("job", job="job") == []


def test_an_upgrade_on_the_same_file_resumes_reading_nothing_again(
    harness: Harness, tmp_path: Path, warnings_of_jobs: list[logging.LogRecord]
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(0, 5))
    out = tmp_path / "out.jsonl"
    run_to_end(h, job_sql("SELECT id, 'v1' AS version FROM src", a, out, "1"))
    doc = run_to_end(h, job_sql("SELECT id, 'v2' AS version FROM src", a, out, "2"))
    assert doc["records_in"] == 0
    assert [(r["id"], r["version"]) for r in read_jsonl(out)] == [(i, "v1") for i in range(5)]
    assert h.catalog("source", job="job") == []
    assert not warnings_of_jobs


def test_a_checkpoint_that_does_not_name_its_source_resumes_as_before(
    harness: Harness, tmp_path: Path, warnings_of_jobs: list[logging.LogRecord]
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(0, 5))
    out = tmp_path / "out.jsonl"
    run_to_end(h, job_sql("SELECT id FROM src", a, out, "1"))
    path = h.data_dir / "checkpoints" / "job.json"
    old = checkpoint_doc(h)
    del old["source"]  # as written before checkpoints named their source
    path.write_bytes(orjson.dumps(old))
    doc = run_to_end(h, job_sql("SELECT id, 2 AS two FROM src", a, out, "2"))
    assert doc["records_in"] == 0
    assert h.catalog("source", job="job") == []
    assert not warnings_of_jobs
    assert checkpoint_doc(h)["source"] == {"type": "file_source", "path": str(a)}


def test_a_source_is_known_by_what_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = checkpoint.source_identity(
        ConnectorConfig("src", "File_Source", {"path": "in/*.csv"})
    )
    assert relative == {"type": "file_source", "path": str(tmp_path / "in" / "*.csv")}
    tuned = ConnectorConfig("other", "file_source", {"path": "in/*.csv", "watch": "true"})
    assert checkpoint.source_identity(tuned) == relative  # how it is read is not what it reads
    kafka = ConnectorConfig("trades", "kafka_source", {"brokers": "b:9092, a:9092"})
    assert checkpoint.source_identity(kafka) == {
        "type": "kafka_source",
        "topic": "trades",  # the topic defaults to the source's name
        "bootstrap.servers": "a:9092,b:9092",
    }
    named = ConnectorConfig(
        "x", "kafka_source", {"topic.name": "trades", "bootstrap.servers": "a:9092,b:9092"}
    )
    assert checkpoint.source_identity(named) == checkpoint.source_identity(kafka)
    other = ConnectorConfig("x", "kafka_source", {"topic": "orders", "bootstrap.servers": "a:9092"})
    assert checkpoint.source_identity(other) != checkpoint.source_identity(kafka)
    assert checkpoint.source_identity(ConnectorConfig("src", "memory_source", {"rows": "[]"})) == {
        "type": "memory_source",
        "name": "src",
    }
    assert checkpoint.describe_source(checkpoint.source_identity(other)) == (
        "kafka_source topic=orders bootstrap.servers=a:9092"
    )


def test_the_checkpoint_store_keeps_the_source(tmp_path: Path) -> None:
    store = checkpoint.CheckpointStore(tmp_path)
    identity = {"type": "file_source", "path": "/data/a.jsonl"}
    store.save("job", checkpoint.Checkpoint(position=[0, 10, 1], source=identity))
    loaded = store.load("job")
    assert loaded is not None and loaded.source == identity
    store.save("job", checkpoint.Checkpoint(position=[0, 10, 1]))
    loaded = store.load("job")
    assert loaded is not None and loaded.source is None


# --- the state an upgrade resumes -------------------------------------------------------------

COUNTS = "SELECT k, COUNT(*) AS n FROM src GROUP BY k"
WINDOWED = "SELECT k, COUNT(*) AS n FROM src GROUP BY k WINDOW TUMBLING(id, 4ms)"

INCOMPATIBLE = [
    pytest.param(COUNTS, "SELECT k, COUNT(*) AS n, SUM(v) AS s FROM src GROUP BY k",
                 "EMIT CHANGES", ("aggregates", "SUM(v)"), id="added-aggregate"),
    pytest.param(COUNTS, "SELECT k, v, COUNT(*) AS n FROM src GROUP BY k, v",
                 "EMIT CHANGES", ("GROUP BY", "[k, v]"), id="other-keys"),
    pytest.param(COUNTS, "SELECT k, MAX(v) AS n FROM src GROUP BY k",
                 "EMIT FINAL", ("aggregates", "MAX(v)"), id="final-other-aggregate"),
    pytest.param(WINDOWED, WINDOWED.replace("COUNT(*) AS n", "COUNT(*) AS n, AVG(v) AS a"),
                 "EMIT FINAL", ("aggregates", "AVG(v)"), id="window-added-aggregate"),
]  # fmt: skip


@pytest.mark.parametrize(("v1", "v2", "emit", "named"), INCOMPATIBLE)
@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_an_upgrade_whose_state_does_not_fit_fails_at_start_saying_why(
    harness: Harness, tmp_path: Path, v1: str, v2: str, emit: str, named: tuple[str, ...], mode: str
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", lines(0, 6))
    out = tmp_path / "out.jsonl"
    watched = {"source": {**file_source(source), "watch": "true", "polling_interval": "20ms"}}
    sql = app_sql(
        "job", select=v1, sink=jsonl_sink(out), version="1", emit=emit, mode=mode, **watched
    )
    h.deploy(sql)
    h.wait_for(lambda: h.status("job")["batches"] >= 1, what="version 1's batch")
    h.server.stop("job")  # its state holds the groups (EMIT FINAL: not emitted yet)
    before = checkpoint_doc(h)
    written = out.read_bytes() if out.exists() else b""
    with source.open("a", encoding="utf-8") as more:  # what version 2 would read
        more.writelines(line + "\n" for line in lines(6, 10))

    h.deploy(sql.replace(v1, v2).replace("@version: 1", "@version: 2"))
    doc = h.wait_state("job", "failed")

    reason = doc["reason"]
    assert "version 1" in reason and "version 2" in reason, reason
    for part in named:
        assert part in reason, reason
    assert doc["records_in"] == 0
    groups = h.catalog("job", job="job")
    assert len(groups) == 1, groups
    assert groups[0]["kind"] == "ConfigurationError"
    assert all(part in groups[0]["message"] for part in named)
    # Nothing touched: the checkpoint and the output are version 1's, so it can go back.
    assert checkpoint_doc(h) == before
    assert (out.read_bytes() if out.exists() else b"") == written
    assert h.catalog("source", job="job") == []


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_compatible_upgrade_resumes_with_its_state(
    harness: Harness, tmp_path: Path, mode: str
) -> None:
    h = harness
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "1.jsonl", lines(0, 6))
    pattern = inputs / "*.jsonl"
    out = tmp_path / "out.jsonl"
    run_to_end(h, job_sql(COUNTS, pattern, out, "1", mode=mode))
    write_jsonl(inputs / "2.jsonl", lines(6, 10))
    v2 = COUNTS.replace("FROM src", "FROM src WHERE v >= 0")

    doc = run_to_end(h, job_sql(v2, pattern, out, "2", mode=mode))

    assert doc["records_in"] == 4
    rows = read_jsonl(out)
    # v1 counted three of each key; v2 goes on from there.
    assert [(r["k"], r["n"]) for r in rows[6:]] == [("k0", 4), ("k1", 4), ("k0", 5), ("k1", 5)]
    assert h.catalog("job", job="job") == []


def test_an_upgrade_of_a_job_that_kept_nothing_yet_starts_with_its_own_state(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "1.jsonl", [])
    pattern = inputs / "*.jsonl"
    out = tmp_path / "out.jsonl"
    run_to_end(h, job_sql(COUNTS, pattern, out, "1"))
    write_jsonl(inputs / "2.jsonl", lines(0, 2))
    v2 = "SELECT k, SUM(v) AS s FROM src GROUP BY k"

    doc = run_to_end(h, job_sql(v2, pattern, out, "2"))

    assert doc["records_in"] == 2
    assert [(r["k"], r["s"]) for r in read_jsonl(out)] == [("k0", 0), ("k1", 1)]
    assert h.catalog("job", job="job") == []


# --- the destination a sink offset belongs to ------------------------------------------------


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_sink_pointed_at_another_file_is_not_cut_to_the_old_offset(
    harness: Harness, tmp_path: Path, mode: str
) -> None:
    """v2 appends to another, existing file: its content stays; only new rows follow."""
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", lines(0, 5))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    kept = [json.dumps({"id": -i, "note": "written by someone else, long ago"}) for i in range(9)]
    write_jsonl(second, kept)
    select = "SELECT id FROM src"

    def sql(out: Path, version: str) -> str:
        sink = {**jsonl_sink(out), "append": "true"}
        return app_sql(
            "job", select=select, source=file_source(source), sink=sink, version=version, mode=mode
        )

    run_to_end(h, sql(first, "1"))
    assert checkpoint_doc(h)["sinks"] == {"job": {"type": "file_sink", "path": str(first)}}
    write_jsonl(source, lines(0, 8))  # three more lines for v2
    run_to_end(h, sql(second, "2"))

    assert second.read_text().splitlines()[: len(kept)] == kept
    assert [r["id"] for r in read_jsonl(second)][len(kept) :] == [5, 6, 7]
    assert [r["id"] for r in read_jsonl(first)] == list(range(5))
    (group,) = h.catalog("sink", job="job")
    assert group["kind"] == "ConfigurationError"
    assert str(first) in group["message"] and str(second) in group["message"]
