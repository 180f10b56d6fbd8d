"""A LISTAGG past `listagg.max.bytes` through the job runtime: the refused rows are
record errors of the process stage, dead-lettered, counted and on `/errors`, and the
groups' strings are never cut."""

from __future__ import annotations

import json
from pathlib import Path

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl


def test_rows_past_the_bound_are_dead_lettered_and_counted(
    harness: Harness, tmp_path: Path
) -> None:
    rows = [("a", "xxxx"), ("b", "y"), ("a", "zzzz"), ("a", "w"), ("b", None), ("a", "v")]
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"k": k, "s": s}) for k, s in rows])
    out = tmp_path / "out.jsonl"
    harness.deploy(
        app_sql(
            "out",
            select="SELECT k, LISTAGG(s, ',') AS l, COUNT(*) AS n FROM src GROUP BY k",
            source={"type": "file_source", "path": str(source), "format": "jsonl"},
            sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
            job={"failure_strategy": "SendToDLQ", "listagg.max.bytes": "9"},
            emit="EMIT FINAL",
        )
    )
    status = harness.wait_state("out", "completed", "failed")
    assert status["state"] == "completed", status["reason"]
    # "xxxx,zzzz" is 9 bytes: "w" would make 11, so it and every later value of a go
    assert sorted(read_jsonl(out), key=lambda r: r["k"]) == [
        {"k": "a", "l": "xxxx,zzzz", "n": 2},
        {"k": "b", "l": "y", "n": 2},
    ]
    assert (status["records_in"], status["records_failed"], status["dead_letters"]) == (6, 2, 2)
    letters = harness.client.get("/jobs/out/dlq").json()["letters"]
    assert [json.loads(letter["payload"])["s"] for letter in letters] == ["w", "v"]
    assert harness.job_errors("out", "process", "ResourceError") == 2
    (group,) = harness.catalog("process", "out")
    assert group["count"] == 2 and group["kind"] == "ResourceError"
    assert "LISTAGG(s, ',') of this row's group would exceed 9 bytes" in group["message"]
