"""Multi-source jobs (UNION ALL) in the job server: every guarantee of a single source.

Per-source positions in the checkpoint (a restart resumes each source; a single-source
checkpoint still loads), poison isolated per source with each dead letter naming its
source and position, exact accounting per source and in total, transactional rewinds,
and `/jobs` and `/metrics` showing the sources.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.jobserver import BAD_CAST, BROKEN_JSON, Harness, poison_lines, read_jsonl, write_jsonl
from velostream.errors import SqlValidationError

pytestmark = pytest.mark.usefixtures("faults")

UNION = (
    "SELECT id, CAST(v AS BIGINT) AS v, 'a' AS origin FROM a WHERE id > 0\n"
    "UNION ALL\n"
    "SELECT id, v, 'b' AS origin FROM b WHERE v % 2 = 0"
)


def lines(start: int, stop: int) -> list[str]:
    return [json.dumps({"id": i, "v": i}) for i in range(start, stop)]


def union_sql(
    a: Path,
    b: Path,
    out: Path,
    *,
    select: str = UNION,
    version: str = "1",
    mode: str = "simple",
    sink: dict[str, str] | None = None,
    strategy: str = "SendToDLQ",
) -> str:
    props = {
        "a.type": "file_source",
        "a.path": str(a),
        "a.format": "jsonl",
        "b.type": "file_source",
        "b.path": str(b),
        "b.format": "jsonl",
        "out.type": "file_sink",
        "out.path": str(out),
        "out.format": "jsonl",
        **{f"out.{k}": v for k, v in (sink or {}).items()},
        "failure_strategy": strategy,
        "batch.size": "4",
    }
    body = ",\n    ".join(f"'{k}' = '{v}'" for k, v in props.items())
    return (
        f"-- @app: multi\n-- @version: {version}\n-- @job_mode: {mode}\n"
        f"CREATE STREAM out AS\n{select}\nEMIT CHANGES\nWITH (\n    {body}\n);\n"
    )


def run_to_end(h: Harness, sql: str) -> dict[str, Any]:
    h.deploy(sql)
    return h.wait_state("out", "completed")


def checkpoint_doc(h: Harness) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((h.data_dir / "checkpoints" / "out.json").read_bytes())
    return doc


def dead_letters(h: Harness) -> list[dict[str, Any]]:
    return read_jsonl(h.data_dir / "dlq" / "out.jsonl")


def test_a_poison_row_in_one_source_costs_neither_source_a_good_row(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", poison_lines(12))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 110))
    out = tmp_path / "out.jsonl"
    doc = run_to_end(h, union_sql(a, b, out))

    rows = read_jsonl(out)
    poisoned = {*BROKEN_JSON, *BAD_CAST}
    from_a = [r["id"] for r in rows if r["origin"] == "a"]
    from_b = [r["id"] for r in rows if r["origin"] == "b"]
    assert from_a == [i for i in range(1, 13) if i not in poisoned]
    assert from_b == list(range(100, 110, 2))
    assert [r["v"] for r in rows if r["origin"] == "a"] == from_a  # CAST applied in branch a
    # Batches of 4 alternate between the sources: a's rows are not all first.
    assert rows.index(next(r for r in rows if r["origin"] == "b")) < len(from_a)

    letters = dead_letters(h)
    assert len(letters) == 4
    assert {letter["source"] for letter in letters} == {"a"}
    assert sorted(letter["position"] for letter in letters) == sorted(
        f"{a}:{line}" for line in poisoned
    )
    assert {letter["stage"] for letter in letters} == {"deserialize", "process"}

    # Accounting, in total and per source: in = out or filtered + failed + late.
    assert doc["records_in"] == 22 and doc["records_failed"] == 4
    assert doc["records_out"] == len(rows) == 8 + 5
    assert doc["sources"] == ["a", "b"]
    per = doc["per_source"]
    assert per["a"] == {
        "records_in": 12,
        "records_out": 8,
        "records_failed": 4,
        "late_records": 0,
        "dead_letters": 4,
    }
    assert per["b"]["records_in"] == 10 and per["b"]["records_out"] == 5
    assert per["b"]["records_failed"] == 0 and per["b"]["dead_letters"] == 0
    for field in ("records_in", "records_out", "records_failed", "dead_letters"):
        assert per["a"][field] + per["b"][field] == doc[field]
    sample = h.sample("velo_job_source_records_in_total", job="out", source="b")
    assert sample == 10.0
    assert h.sample("velo_job_source_records_failed_total", job="out", source="a") == 4.0


def test_a_restart_resumes_every_source_where_it_was(harness: Harness, tmp_path: Path) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(1, 7))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 103))
    out = tmp_path / "out.jsonl"
    run_to_end(h, union_sql(a, b, out))
    doc = checkpoint_doc(h)
    assert set(doc["position"]) == {"a", "b"}
    assert doc["sources"] == {
        "a": {"type": "file_source", "path": str(a)},
        "b": {"type": "file_source", "path": str(b)},
    }
    assert doc["source"] is None

    with a.open("a") as f:  # new lines in both files
        f.write("".join(line + "\n" for line in lines(7, 9)))
    with b.open("a") as f:
        f.write("".join(line + "\n" for line in lines(103, 107)))
    status = run_to_end(h, union_sql(a, b, out, version="2"))

    assert status["records_in"] == 2 + 4  # only the new lines of each source
    assert status["per_source"]["a"]["records_in"] == 6 + 2  # counts outlive the restart
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == [*range(1, 9), 100, 102, 104, 106]
    assert len(ids) == len(set(ids))


def test_a_single_source_checkpoint_resumes_its_source_in_the_union(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(1, 7))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 104))
    out = tmp_path / "out.jsonl"
    single = "SELECT id, CAST(v AS BIGINT) AS v, 'a' AS origin FROM a WHERE id > 0"
    run_to_end(h, union_sql(a, b, out, select=single))
    old = checkpoint_doc(h)
    assert old["source"] == {"type": "file_source", "path": str(a)} and "sources" in old
    assert old["sources"] is None

    status = run_to_end(h, union_sql(a, b, out, version="2"))

    assert status["records_in"] == 4  # a resumed at its end, b read from its start
    assert status["per_source"]["a"]["records_in"] == 0
    assert [r["origin"] for r in read_jsonl(out)] == ["a"] * 6 + ["b"] * 2
    assert checkpoint_doc(h)["position"]["a"] == old["position"]

    # And back: the union's checkpoint resumes a single-source job on b.
    with b.open("a") as f:
        f.write("".join(line + "\n" for line in lines(104, 106)))
    only_b = "SELECT id, v, 'b' AS origin FROM b WHERE v % 2 = 0"
    status = run_to_end(h, union_sql(a, b, out, select=only_b, version="3"))
    assert status["records_in"] == 2
    assert [r["id"] for r in read_jsonl(out)][-3:] == [100, 102, 104]


def test_a_source_that_now_reads_another_file_starts_it_and_says_so(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(1, 4))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 104))
    c = write_jsonl(tmp_path / "c.jsonl", lines(200, 204))
    out = tmp_path / "out.jsonl"
    run_to_end(h, union_sql(a, b, out))
    status = run_to_end(h, union_sql(a, c, out, version="2"))
    assert status["records_in"] == 4  # c from its start, a resumed
    groups = h.catalog("source", job="out")
    assert len(groups) == 1 and "source 'b' changed" in groups[0]["message"]


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_sink_failure_rewinds_every_source_and_nothing_is_written_twice(
    harness: Harness, tmp_path: Path, mode: str
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(1, 11))
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 110))
    out = tmp_path / "out.jsonl"
    sql = union_sql(
        a, b, out, mode=mode, sink={"fail_writes": "3"}, strategy="RetryWithBackoff"
    ).replace("'batch.size' = '4'", "'batch.size' = '4',\n    'retry_backoff_ms' = '1'")
    status = run_to_end(h, sql)
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == [*range(1, 11), *range(100, 110, 2)]
    assert len(ids) == len(set(ids))
    assert status["records_in"] == 20  # a retried batch is counted once
    per = status["per_source"]
    assert per["a"]["records_in"] == 10 and per["b"]["records_in"] == 10
    assert per["a"]["records_out"] == 10 and per["b"]["records_out"] == 5


def test_a_union_of_a_kafka_and_a_file_source_is_refused_in_transactional_mode(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", lines(1, 3))
    sql = union_sql(a, a, tmp_path / "out.jsonl", mode="transactional").replace(
        f"'b.type' = 'file_source',\n    'b.path' = '{a}',\n    'b.format' = 'jsonl'",
        "'b.type' = 'kafka_source',\n    'b.bootstrap.servers' = '127.0.0.1:1',\n"
        "    'b.value.format' = 'json'",
    )
    with pytest.raises(SqlValidationError) as refused:
        h.deploy(sql)  # refused at validation: no job starts
    [problem] = refused.value.problems
    assert "statement out at 4:1: transactional mode needs every source" in problem
    assert "a (checkpoint), b (kafka_offsets); read Kafka and files in separate jobs" in problem
    assert h.server.list_jobs() == []


def test_dead_letters_of_both_sources_replay_through_their_own_branch(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    a = write_jsonl(tmp_path / "a.jsonl", poison_lines(12))
    b = write_jsonl(tmp_path / "b.jsonl", poison_lines(12))
    out = tmp_path / "out.jsonl"

    def select(cast: str) -> str:
        return " UNION ALL ".join(
            f"SELECT id, {cast} AS n, '{name}' AS origin FROM {name}" for name in ("a", "b")
        )

    strict = select("CAST(v AS INTEGER)")
    lenient = select("COALESCE(TRY_CAST(v AS INTEGER), CAST(substr(v, 2) AS INTEGER))")
    run_to_end(h, union_sql(a, b, out, select=strict))
    dead = h.client.get("/jobs/out/dlq").json()["letters"]
    assert sorted((d["source"], d["stage"]) for d in dead) == sorted(
        (s, stage) for s in ("a", "b") for stage in ("deserialize",) * 2 + ("process",) * 2
    )
    run_to_end(h, union_sql(a, b, out, select=lenient, version="2"))

    cast_ids = [d["id"] for d in dead if d["stage"] == "process"]
    response = h.client.post("/jobs/out/dlq/replay", json={"ids": cast_ids})

    assert response.status_code == 200, response.text
    assert response.json()["rows_out"] == 4
    replayed = read_jsonl(out)[-4:]
    assert sorted((r["origin"], r["id"], r["n"]) for r in replayed) == sorted(
        (s, i, i) for s in ("a", "b") for i in BAD_CAST
    )


def test_a_read_failure_names_its_source_and_is_retried_on_that_source(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 104))
    sql = union_sql(b, b, tmp_path / "out.jsonl", strategy="RetryWithBackoff")
    sql = sql.replace(
        f"'a.type' = 'file_source',\n    'a.path' = '{b}',\n    'a.format' = 'jsonl'",
        "'a.type' = 'memory_source',\n    'a.fail_reads' = '2',\n"
        """    'a.rows' = '[{"id": 1, "v": 1}, {"id": 2, "v": 2}]'""",
    ).replace("'batch.size' = '4'", "'batch.size' = '4',\n    'retry_backoff_ms' = '1'")
    status = run_to_end(h, sql)
    assert status["per_source"]["a"]["records_in"] == 2
    assert status["per_source"]["b"]["records_in"] == 4
    groups = h.catalog("source", job="out")
    assert len(groups) == 1 and groups[0]["count"] == 2
    assert groups[0]["message"].startswith("reading a: source 'a': connection refused")


def test_a_union_with_an_unbounded_source_runs_on_after_the_bounded_one_ends(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    b = write_jsonl(tmp_path / "b.jsonl", lines(100, 104))
    sql = union_sql(b, b, tmp_path / "out.jsonl").replace(
        f"'a.type' = 'file_source',\n    'a.path' = '{b}',\n    'a.format' = 'jsonl'",
        "'a.type' = 'memory_source',\n    'a.bounded' = 'false',\n"
        """    'a.rows' = '[{"id": 1, "v": 1}]'""",
    )
    h.deploy(sql)
    h.wait_for(lambda: h.status("out")["records_in"] == 5, what="both sources read")
    assert h.state("out") == "running"  # b has ended; a is unbounded
    h.server.stop("out")
    assert h.wait_state("out", "stopped")["records_out"] == 1 + 2
