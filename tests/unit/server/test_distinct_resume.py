"""SELECT DISTINCT across a stop and a start of its job: the rows it remembers are part of
its checkpoint, so a row emitted before the stop is not emitted again after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl


def lines(start: int, stop: int) -> list[str]:
    return [
        json.dumps({"id": i, "k": f"k{i % 3 if i < 10 else i % 5}"}) for i in range(start, stop)
    ]


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_a_restarted_distinct_emits_no_row_twice(
    harness: Harness, tmp_path: Path, mode: str
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", lines(0, 10))
    out = tmp_path / "out.jsonl"
    sql = app_sql(
        "job",
        select="SELECT DISTINCT k FROM src",
        source={
            "type": "file_source",
            "path": str(source),
            "format": "jsonl",
            "watch": "true",
            "polling_interval": "20ms",
        },
        sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
        job={"distinct.ttl": "1h"},
        version="1",
        mode=mode,
    )
    h.deploy(sql)
    h.wait_for(lambda: h.status("job")["records_in"] >= 10, what="the first 10 lines")
    h.server.stop("job")
    assert [r["k"] for r in read_jsonl(out)] == ["k0", "k1", "k2"]
    with source.open("a", encoding="utf-8") as more:
        more.writelines(line + "\n" for line in lines(10, 20))

    h.deploy(sql.replace("@version: 1", "@version: 2"))
    h.wait_for(lambda: h.status("job")["records_in"] >= 10, what="the next 10 lines")
    h.server.stop("job")

    # 10..19 give k0..k4: only k3 and k4 are new
    assert [r["k"] for r in read_jsonl(out)] == ["k0", "k1", "k2", "k3", "k4"]
    status = h.status("job")
    assert (status["records_in"], status["records_out"], status["records_failed"]) == (10, 2, 0)
