"""Deployed applications kept in the data dir and deployed again at start.

The store: one file per application, written whole and atomically, readable by the
server's user only; an application deployed in parts keeps one entry per deploy. The
server: a deploy is kept before its jobs start; a restarted server (`restore`) deploys
every kept job again from its checkpoint, paused or stopped as the operator left it,
failed ones started again; undeploy forgets; an application that no longer deploys is
a `deploy` error and the rest goes on; `checkpoints=False` keeps nothing.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.jobserver import Harness, app_sql, read_jsonl, write_jsonl
from velostream.errors import ResourceExhaustedError
from velostream.fsutil import PathRoots
from velostream.server.deployments import (
    Deployment,
    DeploymentStore,
    Intent,
    JobRecord,
    UsedVariables,
)
from velostream.server.stream_job_server import DEPLOY_JOB, StreamJobServer

# --- the store -------------------------------------------------------------------------


def deployment(app: str, *jobs: str, sql: str = "SELECT 1", at: float = 1.0) -> Deployment:
    records = {j: JobRecord("1") for j in jobs}
    return Deployment(app, sql, "<api>", "/srv/base", "/srv/app", {"V": "1"}, records, at)


def test_a_recorded_deployment_reads_back_in_a_new_store(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "apps")
    store.record(deployment("trading", "a", "b"))
    store.set_intent("b", Intent.PAUSED)
    loaded, problems = DeploymentStore(tmp_path / "apps").load()
    assert problems == []
    assert [d.as_doc() for d in loaded] == [
        {
            "app": "trading",
            "sql": "SELECT 1",
            "source_name": "<api>",
            "base_dir": "/srv/base",
            "working_dir": "/srv/app",
            "variables": {"V": "1"},
            "deployed_at": 1.0,
            "paths": "base_dir",
            "jobs": {
                "a": {"version": "1", "intent": "running"},
                "b": {"version": "1", "intent": "paused"},
            },
        }
    ]


def test_the_record_is_written_whole_and_private(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "apps")
    store.record(deployment("trading", "a"))
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["trading.json"]  # no temp
    mode = stat.S_IMODE((tmp_path / "apps" / "trading.json").stat().st_mode)
    assert mode == 0o600
    doc = orjson.loads((tmp_path / "apps" / "trading.json").read_bytes())
    assert doc["format"] == 1 and doc["app"] == "trading"


def test_a_job_deployed_again_leaves_its_old_entry(tmp_path: Path) -> None:
    """An upgrade of some jobs of an application keeps the others' entry; an entry
    with no job left goes, and with it a file with no entry."""
    store = DeploymentStore(tmp_path / "apps")
    store.record(deployment("trading", "a", "b", sql="v1", at=1.0))
    store.record(deployment("trading", "a", sql="v2", at=2.0))
    loaded, _ = DeploymentStore(tmp_path / "apps").load()
    assert [(d.sql, sorted(d.jobs)) for d in loaded] == [("v1", ["b"]), ("v2", ["a"])]
    # A job may move to another application: it leaves the first one's file.
    store.record(deployment("other", "b", sql="o1", at=3.0))
    loaded, _ = DeploymentStore(tmp_path / "apps").load()
    assert [(d.app, d.sql, sorted(d.jobs)) for d in loaded] == [
        ("trading", "v2", ["a"]),
        ("other", "o1", ["b"]),
    ]
    assert store.forget("a") is True
    assert store.forget("a") is False
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["other.json"]


def test_an_unsafe_application_name_gets_a_file_name_of_its_own(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "apps")
    store.record(deployment("../../etc/x", "a"))
    store.record(deployment("..", "b"))
    names = sorted(p.name for p in (tmp_path / "apps").iterdir())
    assert len(names) == 2 and all("/" not in n and not n.startswith(".") for n in names)
    loaded, _ = DeploymentStore(tmp_path / "apps").load()
    assert sorted(d.app for d in loaded) == ["..", "../../etc/x"]


def test_an_unreadable_record_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    DeploymentStore(apps).record(deployment("good", "a"))
    (apps / "bad.json").write_text("{not json", encoding="utf-8")
    (apps / "future.json").write_text('{"format": 99}', encoding="utf-8")
    loaded, problems = DeploymentStore(apps).load()
    assert [d.app for d in loaded] == ["good"]
    assert len(problems) == 2
    assert any("bad.json" in p for p in problems) and any(
        "unknown format 99" in p for p in problems
    )


def test_a_record_that_cannot_be_written_raises_a_resource_error(tmp_path: Path) -> None:
    blocker = tmp_path / "apps"
    blocker.write_text("a file where the folder should be", encoding="utf-8")
    with pytest.raises(ResourceExhaustedError, match="cannot record the deployment"):
        DeploymentStore(blocker).record(deployment("trading", "a"))


def test_used_variables_remember_only_what_was_looked_up() -> None:
    variables = UsedVariables({"A": "1", "B": "2"})
    assert variables.get("A") == "1"
    assert variables.get("C", "dflt") == "dflt"
    assert "B" in variables
    assert variables.used == {"A": "1", "B": "2"}
    assert UsedVariables({"A": "1"}).used == {}


# --- the server ------------------------------------------------------------------------


def lines(path: Path, start: int, stop: int) -> None:
    with path.open("a", encoding="utf-8") as out:
        for i in range(start, stop):
            out.write(json.dumps({"id": i}) + "\n")


def copy_sql(name: str, source: Path, out: Path, **job: str) -> str:
    return app_sql(
        name,
        select="SELECT id FROM src",
        source={
            "type": "file_source",
            "path": str(source),
            "format": "jsonl",
            "watch": "true",
            "polling_interval": "20ms",
        },
        sink={"type": "file_sink", "path": str(out), "format": "jsonl"},
        job=job or None,
        app=f"app_{name}",
    )


def restarted(h: Harness, **kwargs: Any) -> StreamJobServer:
    """Stop the harness's server; a new one on the same data dir, restored."""
    h.server.shutdown(10.0)
    server = StreamJobServer(h.manager, h.data_dir, max_jobs=10, **kwargs)
    h.server = server
    h._client = None
    server.restore()
    return server


def ids(path: Path) -> list[int]:
    return [r["id"] for r in read_jsonl(path)]


def test_a_restarted_server_runs_its_jobs_again_from_their_checkpoints(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    source, out = write_jsonl(tmp_path / "in.jsonl", []), tmp_path / "out.jsonl"
    lines(source, 0, 10)
    h.deploy(copy_sql("copy", source, out))
    h.wait_for(lambda: len(read_jsonl(out)) == 10, what="the first lines")

    restarted(h)
    assert [j["name"] for j in h.server.list_jobs()] == ["copy"]
    h.wait_state("copy", "running")
    lines(source, 10, 15)
    h.wait_for(lambda: len(read_jsonl(out)) == 15, what="the new lines")
    assert ids(out) == list(range(15))  # resumed, not started over
    assert h.status("copy")["records_in"] == 5
    assert h.status("copy")["sql"] in copy_sql("copy", source, out)


def test_paused_and_stopped_jobs_come_back_paused_and_stopped(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", [])
    lines(source, 0, 5)
    for name in ("p", "s", "r"):
        h.deploy(copy_sql(name, source, tmp_path / f"{name}.jsonl"))
    for name in ("p", "s", "r"):
        h.wait_for(lambda n=name: len(read_jsonl(tmp_path / f"{n}.jsonl")) == 5, what=name)
    h.server.pause("p")
    h.server.stop("s")

    restarted(h)
    h.wait_state("r", "running")
    h.wait_state("p", "paused")
    assert h.status("p")["reason"] == "paused before the server restarted"
    assert h.status("s")["state"] == "stopped"
    assert h.status("s")["reason"] == "stopped before the server restarted"
    lines(source, 5, 8)
    h.wait_for(lambda: len(read_jsonl(tmp_path / "r.jsonl")) == 8, what="the running job")
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 5  # paused: reads nothing
    assert h.status_metric("p") == "paused" and h.status_metric("s") == "stopped"

    h.server.resume("p")
    h.server.restart("s")
    for name in ("p", "s"):
        h.wait_for(lambda n=name: ids(tmp_path / f"{n}.jsonl") == list(range(8)), what=name)
    # Resumed and restarted: running again after the next restart too.
    restarted(h)
    for name in ("p", "s", "r"):
        h.wait_state(name, "running")


def test_deploy_app_deploying_its_file_again_keeps_paused_and_stopped_jobs(
    harness: Harness, tmp_path: Path
) -> None:
    """`deploy-app` deploys its file before the kept deployments are restored: the same
    version comes back as the operator left it; a new version starts running."""
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", [])
    lines(source, 0, 5)
    sqls = {name: copy_sql(name, source, tmp_path / f"{name}.jsonl") for name in ("p", "s")}
    for name, sql in sqls.items():
        h.deploy(sql)
        h.wait_for(lambda n=name: len(read_jsonl(tmp_path / f"{n}.jsonl")) == 5, what=name)
    h.server.pause("p")
    h.server.stop("s")

    h.server.shutdown(10.0)
    h.server = StreamJobServer(h.manager, h.data_dir, max_jobs=10)
    h._client = None
    for sql in sqls.values():  # what deploy-app does with its file, before restoring
        h.deploy(sql)
    assert h.server.restore() == []
    h.wait_state("p", "paused")
    assert h.status("s")["state"] == "stopped"
    lines(source, 5, 8)
    time.sleep(0.3)
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 5  # paused: reads nothing

    h.server.shutdown(10.0)
    h.server = StreamJobServer(h.manager, h.data_dir, max_jobs=10)
    h._client = None
    h.deploy(sqls["p"].replace("@version: 1", "@version: 2"))  # an upgrade in the file: it runs
    h.wait_state("p", "running")
    h.wait_for(lambda: ids(tmp_path / "p.jsonl") == list(range(8)), what="the upgraded job")


def test_a_failed_job_is_started_again(harness: Harness, tmp_path: Path) -> None:
    """Failed is not an intent: like a Kafka Connect task after a worker restart, the
    job runs again from its checkpoint (and fails again if the cause is still there)."""
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}', "not json"])
    h.deploy(copy_sql("fragile", source, tmp_path / "out.jsonl", failure_strategy="FailBatch"))
    h.wait_state("fragile", "failed")
    write_jsonl(source, ['{"id": 1}', '{"id": 2}'])  # the operator mends the input
    restarted(h)
    h.wait_state("fragile", "running")
    h.wait_for(lambda: ids(tmp_path / "out.jsonl") == [1, 2], what="the mended rows")


def test_a_restored_job_that_failed_at_once_is_logged_as_failed_at_warning(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    """The restart log says each job's state: "deployed again" at INFO must not hide a
    job that failed before the line was written."""
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    h.deploy(copy_sql("healthy", source, tmp_path / "healthy.jsonl"))
    h.deploy(copy_sql("broken", source, tmp_path / "broken.jsonl"))
    status = StreamJobServer.get_job_status

    def failed_at_once(server: StreamJobServer, name: str) -> dict[str, Any]:
        doc = status(server, name)
        return {**doc, "state": "failed", "reason": "disk gone"} if name == "broken" else doc

    monkeypatch.setattr(StreamJobServer, "get_job_status", failed_at_once)
    with caplog.at_level("INFO", logger="velostream"):
        restarted(h)
    said = {
        r.getMessage().split(": ", 1)[1]: r.levelname
        for r in caplog.records
        if " deployed again from " in r.getMessage()
    }
    assert said.pop("job 'broken' failed (disk gone)") == "WARNING", said
    ((healthy, level),) = said.items()
    assert healthy in ("job 'healthy' starting", "job 'healthy' running") and level == "INFO"


def test_undeploy_forgets_the_job(harness: Harness, tmp_path: Path) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    h.deploy(copy_sql("gone", source, tmp_path / "gone.jsonl"))
    h.deploy(copy_sql("kept", source, tmp_path / "kept.jsonl"))
    response = h.client.delete("/jobs/gone")
    assert response.status_code == 200, response.text
    restarted(h)
    assert [j["name"] for j in h.server.list_jobs()] == ["kept"]
    assert sorted(p.name for p in (h.data_dir / "apps").iterdir()) == ["app_kept.json"]


def test_an_application_that_no_longer_deploys_is_a_deploy_error(
    harness: Harness, tmp_path: Path
) -> None:
    """Its file root is gone at the restart: recorded under `deploy`, logged; the other
    application is deployed; undeploying the job forgets it."""
    h = harness
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    for folder in (inside, outside):
        write_jsonl(folder / "in.jsonl", ['{"id": 1}'])
    h.server.roots = PathRoots.of([tmp_path, h.data_dir])
    h.deploy(copy_sql("lost", outside / "in.jsonl", outside / "out.jsonl"))
    h.deploy(copy_sql("fine", inside / "in.jsonl", inside / "out.jsonl"))

    restarted(h, roots=PathRoots.of([inside, h.data_dir]))
    assert [j["name"] for j in h.server.list_jobs()] == ["fine"]
    groups = h.catalog("deploy", DEPLOY_JOB)
    assert len(groups) == 1
    message = groups[0]["message"]
    assert "application 'app_lost' (job(s) lost) cannot be deployed again at start" in message
    assert "outside the server's roots" in message
    assert h.logged("deploy", DEPLOY_JOB)

    response = h.client.delete("/jobs/lost")
    assert response.status_code == 200, response.text
    assert h.client.delete("/jobs/lost").status_code == 404
    assert not (h.data_dir / "apps" / "app_lost.json").exists()


def test_variables_are_kept_with_the_values_the_application_used(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    out = tmp_path / "out.jsonl"
    h.server.variables = {"IN": str(source), "UNUSED_SECRET": "hunter2"}
    sql = copy_sql("var", Path("${IN}"), out)
    h.deploy(sql)
    kept = orjson.loads((h.data_dir / "apps" / "app_var.json").read_bytes())
    assert kept["deployments"][0]["variables"] == {"IN": str(source)}
    assert "hunter2" not in (h.data_dir / "apps" / "app_var.json").read_text()

    restarted(h)  # the operator no longer gives IN: the kept value resolves it
    h.wait_for(lambda: ids(out) == [1], what="the output")
    assert h.status("var")["sql"] in sql  # the text as deployed, ${IN} and all


def test_a_relative_path_keeps_the_folder_it_was_deployed_from(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths are taken from the deployment's folder, not from wherever the
    restarted server runs."""
    h = harness
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write_jsonl(first / "in.jsonl", ['{"id": 1}'])
    monkeypatch.chdir(first)
    h.deploy(copy_sql("rel", Path("in.jsonl"), Path("out.jsonl")))
    h.wait_for(lambda: ids(first / "out.jsonl") == [1], what="the output")
    kept = orjson.loads((h.data_dir / "apps" / "app_rel.json").read_bytes())
    assert kept["deployments"][0]["base_dir"] == str(first.resolve())
    monkeypatch.chdir(second)
    restarted(h)
    assert [job["name"] for job in h.server.list_jobs()] == ["rel"]
    assert h.catalog("deploy", DEPLOY_JOB) == []
    assert not (second / "out.jsonl").exists()


def test_the_folder_a_client_sends_is_kept_with_the_deployment(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /jobs` with `base_dir` (as `velo-cli deploy` sends it): the application's
    relative paths are taken from there, now and after a restart elsewhere."""
    h = harness
    app, server_dir, later = tmp_path / "app", tmp_path / "server", tmp_path / "later"
    for folder in (app, server_dir, later):
        folder.mkdir()
    write_jsonl(app / "in.jsonl", ['{"id": 1}'])
    monkeypatch.chdir(server_dir)
    sql = copy_sql("sent", Path("in.jsonl"), Path("out/out.jsonl"))
    response = h.client.post("/jobs", json={"sql": sql, "base_dir": str(app)})
    assert response.status_code == 201, response.text
    h.wait_for(lambda: ids(app / "out" / "out.jsonl") == [1], what="the output")
    kept = orjson.loads((h.data_dir / "apps" / "app_sent.json").read_bytes())
    assert kept["deployments"][0]["base_dir"] == str(app.resolve())
    monkeypatch.chdir(later)
    restarted(h)
    assert [job["name"] for job in h.server.list_jobs()] == ["sent"]
    assert list(server_dir.iterdir()) == [] and list(later.iterdir()) == []


def test_a_sent_folder_outside_the_roots_is_refused(harness: Harness, tmp_path: Path) -> None:
    h = harness
    (tmp_path / "allowed").mkdir()
    (tmp_path / "app").mkdir()
    h.server.roots = PathRoots.of([tmp_path / "allowed"])
    sql = copy_sql("out_of_roots", Path("in.jsonl"), Path("out.jsonl"))
    response = h.client.post("/jobs", json={"sql": sql, "base_dir": str(tmp_path / "app")})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert f"base_dir '{tmp_path / 'app'}' is outside the server's roots" in detail
    assert h.server.list_jobs() == []
    assert "outside the server's roots" in h.catalog("deploy", DEPLOY_JOB)[0]["message"]


def _as_kept_by_an_earlier_version(h: Harness, app: str) -> None:
    """The record of `app` as a version that took relative data paths from the working
    directory wrote it: without `paths`."""
    path = h.data_dir / "apps" / f"{app}.json"
    doc = orjson.loads(path.read_bytes())
    for entry in doc["deployments"]:
        del entry["paths"]
    path.write_bytes(orjson.dumps(doc))


def test_an_earlier_record_whose_relative_paths_would_move_is_not_restored(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    app, work = tmp_path / "app", tmp_path / "work"
    app.mkdir()
    work.mkdir()
    write_jsonl(app / "in.jsonl", ['{"id": 1}'])
    monkeypatch.chdir(work)
    h.server.deploy(copy_sql("moved", Path("in.jsonl"), app / "out.jsonl"), base_dir=app)
    h.wait_for(lambda: ids(app / "out.jsonl") == [1], what="the output")
    _as_kept_by_an_earlier_version(h, "app_moved")
    restarted(h)
    assert h.server.list_jobs() == []
    message = h.catalog("deploy", DEPLOY_JOB)[0]["message"]
    assert "was kept by an earlier version" in message
    assert "moved: src.path would now name other files" in message
    assert str(work) in message and str(app.resolve()) in message


def test_an_earlier_record_with_absolute_paths_is_restored(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    app, work = tmp_path / "app", tmp_path / "work"
    app.mkdir()
    work.mkdir()
    source = write_jsonl(app / "in.jsonl", ['{"id": 1}'])
    monkeypatch.chdir(work)
    h.server.deploy(copy_sql("fixed", source, app / "out.jsonl"), base_dir=app)
    h.wait_for(lambda: ids(app / "out.jsonl") == [1], what="the output")
    _as_kept_by_an_earlier_version(h, "app_fixed")
    restarted(h)
    assert [job["name"] for job in h.server.list_jobs()] == ["fixed"]
    assert h.catalog("deploy", DEPLOY_JOB) == []


def test_restore_runs_once_and_leaves_deployed_jobs_alone(harness: Harness, tmp_path: Path) -> None:
    """`deploy-app` deploys its file before the API starts: the kept copy of that
    application is already deployed, and restoring it again would be a conflict."""
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    sql = copy_sql("once", source, tmp_path / "out.jsonl")
    h.deploy(sql)
    h.server.shutdown(10.0)
    server = StreamJobServer(h.manager, h.data_dir, max_jobs=10)
    h.server, h._client = server, None
    assert server.deploy(sql) == ["once"]  # as deploy-app does, before the API
    assert server.restore() == []
    assert server.restore() == []
    assert h.catalog("deploy") == []


def test_without_checkpoints_nothing_is_kept(harness: Harness, tmp_path: Path) -> None:
    h = harness
    data = tmp_path / "run-data"
    server = StreamJobServer(h.manager, data, checkpoints=False)
    try:
        source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
        server.deploy(copy_sql("local", source, tmp_path / "out.jsonl"))
        assert not (data / "apps").exists()
        assert server.restore() == []
    finally:
        server.shutdown(10.0)


def test_a_deploy_that_cannot_be_kept_is_refused(harness: Harness, tmp_path: Path) -> None:
    """It would not survive a restart: nothing starts, and the refusal is recorded."""
    h = harness
    h.data_dir.mkdir(parents=True, exist_ok=True)
    (h.data_dir / "apps").write_text("in the way", encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    response = h.client.post("/jobs", json={"sql": copy_sql("nope", source, tmp_path / "o.jsonl")})
    assert response.status_code == 409, response.text
    assert "cannot record the deployment" in response.json()["detail"]
    assert h.server.list_jobs() == []
    assert not (tmp_path / "o.jsonl").exists()


def test_the_api_restores_when_it_starts(harness: Harness, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from velostream.api.app import create_app

    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    h.deploy(copy_sql("api", source, tmp_path / "out.jsonl"))
    h.server.shutdown(10.0)
    h.server = StreamJobServer(h.manager, h.data_dir, max_jobs=10)
    with TestClient(create_app(h.manager, h.server)) as client:
        assert [j["name"] for j in client.get("/jobs").json()["jobs"]] == ["api"]
    assert os.path.exists(h.data_dir / "apps" / "app_api.json")


def test_a_bug_while_restoring_one_application_spares_the_others(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    source = write_jsonl(tmp_path / "in.jsonl", ['{"id": 1}'])
    h.deploy(copy_sql("broken", source, tmp_path / "a.jsonl"))
    h.deploy(copy_sql("whole", source, tmp_path / "b.jsonl"))
    h.server.shutdown(10.0)
    server = StreamJobServer(h.manager, h.data_dir, max_jobs=10)
    h.server, h._client = server, None
    validate = server.validate

    def flaky(sql: str, **kwargs: Any) -> Any:
        if "broken" in sql:
            raise RuntimeError("an invariant did not hold")
        return validate(sql, **kwargs)

    monkeypatch.setattr(server, "validate", flaky)
    assert server.restore() == ["whole"]
    [group] = h.catalog("deploy", DEPLOY_JOB)
    assert "'app_broken' was not deployed again: an invariant did not hold" in group["message"]
