"""Job lifecycle in one server process: every transition logged, metered, timestamped
and visible over HTTP; real pause; restart and upgrade from the committed position;
all-or-nothing deploys; max_jobs; a crashing job goes to Failed, the server lives on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytest

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl
from velostream.datasource.memory import MemorySink, MemorySource
from velostream.errors import JobStateError
from velostream.server.jobs import JobState
from velostream.server.stream_job_server import DEPLOY_JOB

PROBLEM = "application/problem+json"


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "k": "even" if i % 2 == 0 else "odd"} for i in range(start, start + n)]


def memory_source(data: list[dict[str, Any]], *, bounded: bool = True) -> dict[str, str]:
    return {
        "type": "memory_source",
        "rows": json.dumps(data),
        "bounded": "true" if bounded else "false",
    }


def source_of(h: Harness, name: str) -> MemorySource:
    processor = h.server.job(name).processor
    assert processor is not None
    return cast(MemorySource, processor.source)


def sink_rows(name: str) -> list[dict[str, Any]]:
    sink = MemorySink.named(name)
    assert sink is not None
    return sink.rows()


def states(history: list[dict[str, Any]]) -> list[str]:
    return [change["state"] for change in history]


def assert_visible(h: Harness, name: str, expected: list[str]) -> None:
    """The history, in order and timestamped, the same in the server, /jobs and /jobs/{name};
    every transition logged; `velo_job_status` marking the last one."""
    doc = h.client.get(f"/jobs/{name}").json()
    assert states(doc["history"]) == expected
    times = [change["at"] for change in doc["history"]]
    assert times == sorted(times)
    assert doc["state"] == expected[-1]
    assert doc["state_since"] == times[-1]
    listed = {job["name"]: job for job in h.client.get("/jobs").json()["jobs"]}
    assert states(listed[name]["history"]) == expected
    assert h.status_metric(name) == expected[-1]
    for state in JobState:
        value = h.sample("velo_job_status", job=name, status=state.value)
        assert value == (1.0 if state.value == expected[-1] else 0.0)
    logged = [
        r.getMessage().split("-> ", 1)[1].split(" ")[0]
        for r in h.server_records
        if f"job {name!r} -> " in r.getMessage()
    ]
    assert logged == expected


# --- every transition --------------------------------------------------------------------


def deploy_running(h: Harness) -> None:
    """Deploy `out` on an unbounded source and wait until it runs."""
    h.deploy(app_sql("out", source=memory_source(rows(3), bounded=False)))
    h.wait_state("out", "running")


def test_a_bounded_job_goes_starting_running_completed(harness: Harness) -> None:
    h = harness
    assert h.deploy(app_sql("out", source=memory_source(rows(5)))) == ["out"]
    h.wait_state("out", "completed")
    assert_visible(h, "out", ["starting", "running", "completed"])
    assert [r["id"] for r in sink_rows("out")] == list(range(5))
    assert h.sample("velo_active_jobs") == 0


def test_stop_by_request(harness: Harness) -> None:
    h = harness
    deploy_running(h)
    response = h.client.post("/jobs/out/stop")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "stopped"
    assert response.json()["reason"] == "stopped by request"
    assert_visible(h, "out", ["starting", "running", "stopped"])
    # A stopped job cannot be stopped, paused or resumed again.
    for action in ("stop", "pause", "resume"):
        refused = h.client.post(f"/jobs/out/{action}")
        assert refused.status_code == 409
        assert refused.headers["content-type"] == PROBLEM


def test_pause_and_resume_are_visible(harness: Harness) -> None:
    h = harness
    deploy_running(h)
    paused = h.client.post("/jobs/out/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    assert h.client.post("/jobs/out/pause").status_code == 409
    resumed = h.client.post("/jobs/out/resume")
    assert resumed.json()["state"] == "running"
    assert h.client.post("/jobs/out/resume").status_code == 409
    h.server.stop("out")
    assert_visible(h, "out", ["starting", "running", "paused", "running", "stopped"])
    history = h.status("out")["history"]
    assert history[2]["reason"] == "paused by request"
    assert history[3]["reason"] == "resumed by request"


def test_a_paused_job_can_be_stopped(harness: Harness) -> None:
    h = harness
    deploy_running(h)
    h.server.pause("out")
    h.server.stop("out")
    assert_visible(h, "out", ["starting", "running", "paused", "stopped"])


def test_a_crashing_job_fails_with_its_reason_and_the_server_keeps_serving(
    harness: Harness, faults: None
) -> None:
    h = harness
    h.deploy(
        app_sql("out", source=memory_source(rows(4)), sink={"type": "memory_sink", "crash": "true"})
    )
    doc = h.wait_state("out", "failed")
    assert "the disk caught fire" in doc["reason"]
    assert_visible(h, "out", ["starting", "running", "failed"])
    # The reason is a job-stage error, everywhere errors go.
    assert h.job_errors("out", "job", "IOError") == 1
    assert h.job_errors("out", "sink", "IOError") == 1
    [group] = h.catalog("job", job="out")
    assert "the disk caught fire" in group["message"]
    assert h.buffered("job failed: ", job="out")
    assert [r.getMessage() for r in h.logged("job", "out")]
    # The server lives on: it answers, reports the failure, and takes new jobs.
    health = h.client.get("/health")
    assert health.status_code == 503
    assert health.json()["jobs"]["failed"] == 1
    assert h.client.get("/jobs").status_code == 200
    deployed = h.client.post("/jobs", json={"sql": app_sql("other", source=memory_source(rows(2)))})
    assert deployed.status_code == 201, deployed.text
    h.wait_state("other", "completed")


def test_restart_after_failure_goes_through_starting_again(harness: Harness, faults: None) -> None:
    h = harness
    h.deploy(
        app_sql("out", source=memory_source(rows(4)), sink={"type": "memory_sink", "crash": "true"})
    )
    h.wait_state("out", "failed")
    response = h.client.post("/jobs/out/restart")
    assert response.status_code == 200, response.text
    h.wait_state("out", "failed")
    expected = ["starting", "running", "failed", "starting", "running", "failed"]
    assert states(h.status("out")["history"]) == expected
    assert h.status("out")["history"][3]["reason"] == "restarted by request"
    assert h.job_errors("out", "job") == 2


# --- pause is real ---------------------------------------------------------------------


def test_a_paused_job_reads_nothing_and_keeps_its_position_and_state(harness: Harness) -> None:
    h = harness
    select = "SELECT k, COUNT(*) AS n, SUM(id) AS total FROM src GROUP BY k"
    h.deploy(
        app_sql(
            "agg",
            select=select,
            source=memory_source(rows(10), bounded=False),
            job={"batch.size": "3"},
        )
    )
    h.wait_for(lambda: h.status("agg")["records_in"] == 10, what="the first rows")
    h.server.pause("agg")
    source = source_of(h, "agg")
    position = source._pos
    written = len(sink_rows("agg"))
    source.add(rows(10, start=10))
    time.sleep(0.4)  # a running job would have read these within a few milliseconds
    assert h.status("agg")["records_in"] == 10
    assert h.sample("velo_job_records_in_total", job="agg") == 10
    assert source._pos == position
    assert len(sink_rows("agg")) == written

    h.server.resume("agg")
    h.wait_for(lambda: h.status("agg")["records_in"] == 20, what="the rows added while paused")
    h.server.stop("agg")
    # Each row counted once, and the counts carry on from the state before the pause.
    final = {}
    for row in sink_rows("agg"):
        final[row["k"]] = (row["n"], row["total"])
    assert final == {
        "even": (10, sum(range(0, 20, 2))),
        "odd": (10, sum(range(1, 20, 2))),
    }
    assert h.sample("velo_job_records_in_total", job="agg") == 20


def test_pause_while_a_batch_is_in_flight_waits_for_its_commit(harness: Harness) -> None:
    h = harness
    h.deploy(
        app_sql("out", source=memory_source(rows(2000), bounded=False), job={"batch.size": "10"})
    )
    h.wait_for(lambda: h.status("out")["records_in"] > 0, what="the first batch")
    h.server.pause("out")
    # Once pause returns, what was read is written: no batch is half done.
    status = h.status("out")
    time.sleep(0.2)
    assert h.status("out")["records_in"] == status["records_in"]
    assert len(sink_rows("out")) == status["records_in"] == status["records_out"]
    h.server.resume("out")
    h.wait_for(lambda: h.status("out")["records_out"] == 2000, what="every row")
    assert [r["id"] for r in sink_rows("out")] == list(range(2000))


# --- restart and upgrade resume from the committed position ------------------------------------


def watched_source(path: Path) -> dict[str, str]:
    return {
        "type": "file_source",
        "path": str(path),
        "format": "jsonl",
        "watch": "true",
        "polling_interval": "20ms",
    }


def jsonl_sink(path: Path) -> dict[str, str]:
    return {"type": "file_sink", "path": str(path), "format": "jsonl"}


def append_lines(path: Path, start: int, stop: int) -> None:
    with path.open("a", encoding="utf-8") as out:
        for i in range(start, stop):
            out.write(json.dumps({"id": i, "v": str(i)}) + "\n")


def test_restart_resumes_from_the_committed_position(harness: Harness, tmp_path: Path) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", [])
    append_lines(source, 0, 10)
    out = tmp_path / "out.jsonl"
    h.deploy(
        app_sql(
            "copy", select="SELECT id FROM src", source=watched_source(source), sink=jsonl_sink(out)
        )
    )
    h.wait_for(lambda: len(read_jsonl(out)) == 10, what="the first lines")
    response = h.client.post("/jobs/copy/restart")
    assert response.status_code == 200, response.text
    h.wait_state("copy", "running")
    append_lines(source, 10, 20)
    # Written, not only read: a stop interrupts a batch in flight, uncommitted.
    h.wait_for(lambda: len(read_jsonl(out)) == 20, what="the new lines")
    h.server.stop("copy")
    # Nothing read twice, nothing lost, the output of before kept.
    assert h.status("copy")["records_in"] == 10
    assert [r["id"] for r in read_jsonl(out)] == list(range(20))
    assert states(h.status("copy")["history"]) == [
        "starting",
        "running",
        "stopped",
        "starting",
        "running",
        "stopped",
    ]
    assert h.status("copy")["history"][2]["reason"] == "restarting"


def test_restart_of_a_completed_job_reads_nothing_again(harness: Harness) -> None:
    h = harness
    h.deploy(app_sql("out", source=memory_source(rows(5))))
    h.wait_state("out", "completed")
    h.server.restart("out")
    doc = h.wait_state("out", "completed")
    assert doc["records_in"] == 0
    assert states(doc["history"])[-3:] == ["starting", "running", "completed"]


def test_upgrade_keeps_the_source_position_and_the_history(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", [])
    append_lines(source, 0, 10)
    out = tmp_path / "out.jsonl"
    v1 = app_sql(
        "copy",
        select="SELECT id, 'v1' AS version FROM src",
        source=watched_source(source),
        sink=jsonl_sink(out),
        version="1.0.0",
    )
    v2 = v1.replace("'v1' AS version", "'v2' AS version").replace("1.0.0", "2.0.0")
    h.deploy(v1)
    h.wait_for(lambda: len(read_jsonl(out)) == 10, what="v1's lines")
    response = h.client.post("/jobs", json={"sql": v2})
    assert response.status_code == 201, response.text
    h.wait_state("copy", "running")
    append_lines(source, 10, 20)
    h.wait_for(lambda: len(read_jsonl(out)) == 20, what="v2's lines")
    h.server.stop("copy")
    written = read_jsonl(out)
    assert [r["id"] for r in written] == list(range(20))
    assert {r["version"] for r in written[:10]} == {"v1"}
    assert {r["version"] for r in written[10:]} == {"v2"}
    doc = h.client.get("/jobs/copy").json()
    assert doc["version"] == "2.0.0"
    assert states(doc["history"]) == [
        "starting",
        "running",
        "stopped",
        "starting",
        "running",
        "stopped",
    ]
    assert doc["history"][2]["reason"] == "upgrading: version 1.0.0 -> 2.0.0"
    assert doc["history"][3]["reason"] == "upgraded: version 1.0.0 -> 2.0.0"


def test_the_same_version_is_refused_and_the_running_job_is_untouched(harness: Harness) -> None:
    h = harness
    sql = app_sql("out", source=memory_source(rows(3), bounded=False), version="1.0.0")
    h.deploy(sql)
    h.wait_state("out", "running")
    response = h.client.post("/jobs", json={"sql": sql})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    detail = response.json()["detail"]
    assert "'out' version '1.0.0' is already deployed" in detail
    assert "change @version" in detail
    assert h.state("out") == "running"
    assert states(h.status("out")["history"]) == ["starting", "running"]
    assert h.job_errors("out", "deploy", "ConfigurationError") == 1


# --- all-or-nothing deploys ------------------------------------------------------------------


def test_an_application_with_one_bad_statement_deploys_nothing(harness: Harness) -> None:
    h = harness
    good = app_sql("first", source=memory_source(rows(3)))
    bad = app_sql("second", source=memory_source(rows(3)), select="SELECT id, FROM src WHERE")
    second = bad.split("CREATE STREAM", 1)[1]
    response = h.client.post("/jobs", json={"sql": good + "\nCREATE STREAM" + second})
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert h.client.get("/jobs").json()["jobs"] == []
    assert h.server.list_jobs() == []


def test_a_statement_whose_connector_cannot_be_built_deploys_nothing(harness: Harness) -> None:
    h = harness
    good = app_sql("first", source=memory_source(rows(3)))
    broken = app_sql("second", source={"type": "memory_source", "rows": "not json"})
    with pytest.raises(Exception, match="'rows' must be a JSON list"):
        h.deploy(good + broken.split("\n", 2)[2])
    assert h.server.list_jobs() == []
    assert h.sample("velo_active_jobs") == 0
    assert h.job_errors(DEPLOY_JOB, "deploy", "ConfigurationError") == 1
    [group] = h.catalog("deploy")
    assert "deploy of job 'second' rejected" in group["message"]


def test_broken_sql_is_a_400_with_line_and_column_and_changes_nothing(harness: Harness) -> None:
    h = harness
    h.deploy(app_sql("kept", source=memory_source(rows(3), bounded=False)))
    before = h.client.get("/jobs").json()
    sql = (
        "-- @app: broken\nCREATE STREAM out AS\n  SELEC id FROM src\n"
        "WITH ('src.type' = 'memory_source');\n"
    )
    response = h.client.post("/jobs", json={"sql": sql})
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    doc = response.json()
    assert doc["status"] == 400
    assert doc["title"] == "Invalid application"
    [problem] = doc["problems"]
    assert "at 2:" in problem or "at 3:" in problem, problem
    line_col = problem.split(" at ", 1)[1].split(":")[:2]
    assert all(part.isdigit() for part in line_col), problem
    assert problem in doc["detail"]
    after = h.client.get("/jobs").json()
    assert [j["name"] for j in after["jobs"]] == [j["name"] for j in before["jobs"]] == ["kept"]
    assert after["jobs"][0]["history"] == before["jobs"][0]["history"]
    assert h.job_errors(DEPLOY_JOB, "deploy", "ParseError") == 1


def test_max_jobs_is_enforced_for_whole_applications(harness: Harness) -> None:
    h = harness
    h.server.max_jobs = 2
    h.deploy(app_sql("a", source=memory_source(rows(1)), app="one"))
    two = (
        app_sql("b", source=memory_source(rows(1)), app="two")
        + app_sql("c", source=memory_source(rows(1)), app="two").split("\n", 2)[2]
    )
    response = h.client.post("/jobs", json={"sql": two})
    assert response.status_code == 409
    assert "max_jobs=2" in response.json()["detail"]
    assert h.job_errors(DEPLOY_JOB, "deploy", "ResourceError") == 1
    assert [j["name"] for j in h.server.list_jobs()] == ["a"]
    # An upgrade takes no new slot; a new job takes the last one.
    h.deploy(app_sql("a", source=memory_source(rows(1)), app="one", version="2"))
    h.deploy(app_sql("b", source=memory_source(rows(1)), app="two"))
    assert sorted(j["name"] for j in h.server.list_jobs()) == ["a", "b"]
    assert h.client.get("/jobs").json()["max_jobs"] == 2


def test_undeploy_forgets_the_job_and_its_series(harness: Harness) -> None:
    h = harness
    h.deploy(app_sql("out", source=memory_source(rows(3), bounded=False)))
    h.wait_for(lambda: h.status("out")["records_in"] == 3, what="the rows")
    response = h.client.delete("/jobs/out")
    assert response.status_code == 200, response.text
    assert response.json() == {"job": "out", "undeployed": True}
    assert h.client.get("/jobs/out").status_code == 404
    assert h.status_metric("out") is None
    assert h.sample("velo_job_records_in_total", job="out") == 0
    assert h.client.delete("/jobs/out").status_code == 404


@pytest.mark.parametrize("action", ["pause", "resume", "restart", "stop"])
def test_control_of_an_unknown_job_is_a_404(harness: Harness, action: str) -> None:
    response = harness.client.post(f"/jobs/nope/{action}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "no job named 'nope'" in response.json()["detail"]


def test_illegal_transitions_name_the_state(harness: Harness) -> None:
    h = harness
    h.deploy(app_sql("out", source=memory_source(rows(2))))
    h.wait_state("out", "completed")
    with pytest.raises(JobStateError, match="is completed; only a running job pauses"):
        h.server.pause("out")
    response = h.client.post("/jobs/out/resume")
    assert response.status_code == 409
    assert "only a paused job resumes" in response.json()["detail"]
