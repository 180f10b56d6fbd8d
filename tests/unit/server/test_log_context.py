"""Every log line about a job carries `job` (and `stage` where there is one) as JSON fields."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobserver import Harness, app_sql, poison_lines, write_jsonl
from velostream.observability.logging import bind_job, bind_stage, configure_logging


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """The `velostream` logger writing JSON lines to a file, as `--log-format json` does."""
    root = logging.getLogger("velostream")
    saved = root.handlers[:], root.level, root.propagate
    path = tmp_path / "velo.log"
    configure_logging("DEBUG", "json", str(path), console=False, env={})
    try:
        yield path
    finally:
        for handler in root.handlers[:]:
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        root.propagate = saved[2]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_jobs_lifecycle_lines_all_carry_its_name(
    harness: Harness, json_log: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", poison_lines())
    sql = app_sql(
        "out",
        select="SELECT id, CAST(v AS INTEGER) AS v FROM src",
        source={"type": "file_source", "path": str(source), "format": "json"},
        sink={"type": "file_sink", "path": str(tmp_path / "out.jsonl"), "format": "json"},
    )
    harness.deploy(sql)
    harness.wait_state("out", "completed")
    harness.server.undeploy("out")

    lines = _lines(json_log)
    about_out = [d for d in lines if "'out'" in d["message"] or d["message"].startswith("[out]")]
    messages = [d["message"] for d in about_out]
    # starting, running, completed, undeployed, and the bad records' error lines
    assert any("-> starting" in m for m in messages), messages
    assert any("-> completed" in m for m in messages), messages
    assert any("undeployed" in m for m in messages), messages
    assert sum(d["logger"] == "velostream.errors" for d in about_out) >= 2, messages
    assert [d for d in about_out if d.get("job") != "out"] == []
    for doc in about_out:
        if doc["logger"] == "velostream.errors":
            assert doc["stage"] in ("deserialize", "process"), doc


def test_a_line_logged_in_a_jobs_thread_gets_its_job_and_stage(json_log: Path) -> None:
    """A connector's own line (it knows no job) is filed under the job running it."""

    def job_thread() -> None:
        with bind_job("orders"):
            logging.getLogger("velostream.datasource.demo").warning("reading")
            with bind_stage("sink"):
                logging.getLogger("velostream.datasource.demo").warning("writing")
            logging.getLogger("velostream.datasource.demo").warning(
                "explicit", extra={"job": "other", "stage": "commit"}
            )

    thread = threading.Thread(target=job_thread)
    thread.start()
    thread.join()
    logging.getLogger("velostream.datasource.demo").warning("outside")
    docs = {d["message"]: d for d in _lines(json_log)}
    assert (docs["reading"].get("job"), docs["reading"].get("stage")) == ("orders", None)
    assert (docs["writing"]["job"], docs["writing"]["stage"]) == ("orders", "sink")
    assert (docs["explicit"]["job"], docs["explicit"]["stage"]) == ("other", "commit")
    assert "job" not in docs["outside"] and "stage" not in docs["outside"]
