"""`velo-cli` against a live `velo-sql server` that requires a token.

Every command runs as the installed console script, with `--url`/`--token` or with
VELO_URL/VELO_API_TOKEN from the environment.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    read_csv,
    velo_cli,
    wait_for,
    write_trades,
)
from tests.integration.test_server_deploy_app import BROKEN, BROKEN_PROBLEMS

pytestmark = pytest.mark.integration

TOKEN = "cli-token"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("velo_cli")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[VeloServer]:
    launcher = Launcher(workdir)
    try:
        yield launcher.server(workdir / "data", env={"VELO_API_TOKEN": TOKEN}, token=TOKEN)
    finally:
        launcher.cleanup()


def cli(server: VeloServer, *args: str) -> subprocess.CompletedProcess[str]:
    """velo-cli with --url and --token."""
    return velo_cli(*args, "--url", server.url, "--token", TOKEN)


def cli_env(server: VeloServer, *args: str) -> subprocess.CompletedProcess[str]:
    """velo-cli with the URL and token from VELO_URL and VELO_API_TOKEN."""
    return velo_cli(*args, env={"VELO_URL": server.url, "VELO_API_TOKEN": TOKEN})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}{result.stdout}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, f"exit {result.returncode}: {result.stdout}"
    return " ".join(result.stderr.split())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def write_app(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def watch_app(workdir: Path, source: Path) -> Path:
    """A job on a followed CSV: it runs until stopped."""
    return write_app(
        workdir / "stream.sql",
        f"""-- @app: cli_stream_app
-- @version: 1
CREATE STREAM cli_stream AS SELECT id, symbol FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.watch' = 'true',
      'src.polling_interval' = '50ms',
      'cli_stream.type' = 'file_sink', 'cli_stream.path' = '{workdir}/cli_stream.csv');
""",
    )


def append_trades(path: Path, first: int, count: int) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(f"{i},AAPL,1,2024-01-01 00:00:00\n" for i in range(first, first + count))


def test_deploy_jobs_status_pause_resume_restart_undeploy(
    server: VeloServer, workdir: Path
) -> None:
    source = write_trades(workdir / "stream.csv", 100)
    app = watch_app(workdir, source)

    assert re.fullmatch(
        r"deployed: cli_stream \((starting|running)\)", ok(cli(server, "deploy", str(app))).strip()
    )
    wait_for("100 records in", lambda: server.job("cli_stream")["records_in"] == 100, 30)

    listing = ok(cli_env(server, "jobs"))
    row = next(line for line in listing.splitlines() if "cli_stream" in line)
    assert "running" in row and " 100 " in row, listing

    status = orjson.loads(ok(cli(server, "status", "cli_stream")))
    assert status["name"] == "cli_stream" and status["state"] == "running"
    assert [h["state"] for h in status["history"]] == ["starting", "running"]

    # Paused: it keeps its position and reads nothing new.
    assert ok(cli(server, "pause", "cli_stream")).strip() == "cli_stream: paused"
    append_trades(source, 100, 50)
    time.sleep(0.5)
    assert server.job("cli_stream")["state"] == "paused"
    assert server.job("cli_stream")["records_in"] == 100

    assert ok(cli_env(server, "resume", "cli_stream")).strip() == "cli_stream: running"
    wait_for("the appended records", lambda: server.job("cli_stream")["records_in"] == 150, 30)

    restarted = ok(cli(server, "restart", "cli_stream")).strip()
    assert restarted in ("cli_stream: starting", "cli_stream: running"), restarted
    server.wait_state("cli_stream", "running")
    history = [h["state"] for h in server.job("cli_stream")["history"]]
    assert history[-3:] == ["stopped", "starting", "running"], history
    # From its committed position: nothing read twice, nothing skipped.
    append_trades(source, 150, 10)
    wait_for(
        "every record in the sink",
        lambda: len(read_csv(workdir / "cli_stream.csv")) == 160,
        30,
    )
    assert [int(r["id"]) for r in read_csv(workdir / "cli_stream.csv")] == list(range(160))

    assert ok(cli(server, "undeploy", "cli_stream")).strip() == "undeployed cli_stream"
    assert "cli_stream" not in server.jobs()
    gone = failed(cli(server, "status", "cli_stream"))
    assert "404" in gone and "cli_stream" in gone
    assert "404" in failed(cli(server, "pause", "cli_stream"))


def test_deploy_of_a_broken_file_lists_the_problems_and_changes_nothing(
    server: VeloServer, workdir: Path
) -> None:
    before = server.jobs()
    app = write_app(workdir / "broken.sql", BROKEN)
    message = failed(cli(server, "deploy", str(app)))
    assert "400" in message
    for problem in BROKEN_PROBLEMS:
        assert problem in message, message
    assert server.jobs() == before

    assert failed(cli(server, "deploy", str(workdir / "missing.sql")), code=2)


def test_errors_and_dead_letters_then_replay_after_an_upgrade(
    server: VeloServer, workdir: Path
) -> None:
    source = workdir / "codes.csv"
    source.write_text("id,code\n1,11\n2,x12\n3,13\n4,x14\n5,15\n", encoding="utf-8")

    def app(version: int, expression: str) -> Path:
        return write_app(
            workdir / f"codes_v{version}.sql",
            f"""-- @app: cli_codes_app
-- @version: {version}
-- @failure_strategy: SendToDLQ
CREATE STREAM cli_codes AS SELECT id, {expression} AS code FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'cli_codes.type' = 'file_sink', 'cli_codes.path' = '{workdir}/cli_codes.csv');
""",
        )

    ok(cli(server, "deploy", str(app(1, "CAST(code AS INTEGER)"))))
    server.wait_state("cli_codes", "completed")

    table = ok(cli(server, "errors", "--job", "cli_codes"))
    assert "cli_codes" in table and "process" in table, table
    groups = json_lines(ok(cli_env(server, "errors", "--job", "cli_codes", "--json")))
    assert groups and all(g["job"] == "cli_codes" for g in groups)
    assert sum(g["count"] for g in groups if g["stage"] == "process") == 2
    staged = json_lines(ok(cli(server, "errors", "--stage", "process", "--json")))
    assert staged and all(g["stage"] == "process" for g in staged)
    no_sink_errors = cli(server, "errors", "--job", "cli_codes", "--stage", "sink", "--json")
    assert json_lines(ok(no_sink_errors)) == []
    assert "400" in failed(cli(server, "errors", "--stage", "nonsense"))

    letters = json_lines(ok(cli(server, "dlq", "cli_codes", "--json")))
    assert [d["payload"] for d in letters] == ["2,x12", "4,x14"]
    assert all(d["stage"] == "process" and not d["replayed"] for d in letters)
    assert {d["position"] for d in letters} == {f"{source}:3", f"{source}:5"}
    shown = ok(cli(server, "dlq", "cli_codes"))
    assert "2,x12" in shown and "4,x14" in shown, shown

    # v1 cannot take them; v2 can: upgrade, replay, and they land in the sink.
    ok(cli(server, "deploy", str(app(2, "CAST(REPLACE(code, 'x', '') AS INTEGER)"))))
    server.wait_state("cli_codes", "completed")
    assert server.job("cli_codes")["version"] == "2"
    replayed = ok(cli_env(server, "dlq", "cli_codes", "--replay")).strip()
    assert replayed == "replayed 2 dead letters; 2 rows written"
    rows = sorted((int(r["id"]), int(r["code"])) for r in read_csv(workdir / "cli_codes.csv"))
    assert rows == [(1, 11), (2, 12), (3, 13), (4, 14), (5, 15)]
    after = json_lines(ok(cli(server, "dlq", "cli_codes", "--json")))
    assert [d["replayed"] for d in after] == [True, True]
    assert ok(cli(server, "dlq", "cli_codes", "--replay")).startswith("replayed 0 dead letters")
    ok(cli(server, "undeploy", "cli_codes"))


def test_health_exits_one_while_a_job_has_failed(server: VeloServer, workdir: Path) -> None:
    assert orjson.loads(ok(cli(server, "health")))["status"] == "ok"
    source = write_trades(workdir / "poison.csv", 10)
    append_trades(source, 10, 1)
    with open(source, "a", encoding="utf-8") as out:
        out.write("poison,AAPL,1,2024-01-01 00:00:00\n")
    app = write_app(
        workdir / "failing.sql",
        f"""-- @app: cli_failing_app
-- @version: 1
-- @failure_strategy: FailBatch
CREATE STREAM cli_failing AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'cli_failing.type' = 'file_sink', 'cli_failing.path' = '{workdir}/cli_failing.csv');
""",
    )
    ok(cli(server, "deploy", str(app)))
    server.wait_state("cli_failing", "failed")

    result = cli_env(server, "health")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = orjson.loads(result.stdout)
    assert doc["status"] == "critical" and doc["jobs"]["failed"] == 1

    ok(cli(server, "undeploy", "cli_failing"))
    assert orjson.loads(ok(cli(server, "health")))["status"] == "ok"


def test_unreachable_server_exits_two() -> None:
    result = velo_cli("jobs", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr
