"""The one rule for paths: a relative path in an application is taken from its file's
folder, whatever the working directory of `velo-sql` or `velo-cli`.

Each command runs as a real process in a folder that is not the application's (a copy
of demo/quickstart in a temporary folder, never the repository's own): `run`,
`validate` and `deploy-app` read the lesson's data and write its output next to it;
`velo-cli deploy` sends the file's folder, which a server takes only under its roots.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.server_process import (
    Launcher,
    clean_env,
    console_script,
    free_port,
    launcher,
    velo_sql,
    wait_for,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ROOT / "demo" / "quickstart" / "expected" / "02_big_trades.csv"
LESSON = "02_filter.sql"
OUTPUT = Path("output") / "02_big_trades.csv"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with nothing of the application in it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def velo_cli_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("velo-cli"), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_from_another_folder_writes_next_to_the_application(
    demo: Path, elsewhere: Path
) -> None:
    result = velo_sql("run", str(demo / LESSON), cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (demo / OUTPUT).read_bytes() == EXPECTED.read_bytes()
    assert not (elsewhere / "output").exists()


def test_run_with_a_relative_file_name_from_another_folder(demo: Path, elsewhere: Path) -> None:
    relative = os.path.relpath(demo / LESSON, elsewhere)
    assert relative.startswith("..")
    result = velo_sql("run", relative, cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (demo / OUTPUT).read_bytes() == EXPECTED.read_bytes()


def test_validate_from_another_folder(demo: Path, elsewhere: Path) -> None:
    result = velo_sql("validate", str(demo / LESSON), cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (1 job(s): big_trades)" in result.stdout
    assert "warning" not in result.stderr  # the source was found and its columns checked


def test_deploy_app_from_another_folder(demo: Path, launcher: Launcher) -> None:
    # The server runs in the test's working directory, not in the application's.
    server = launcher.deploy_app(demo / LESSON, demo.parent / "server-data", args=["--once"])
    assert server.wait_exit() == 0, server.log()
    assert (demo / OUTPUT).read_bytes() == EXPECTED.read_bytes()


def test_velo_cli_deploy_sends_the_application_folder(
    demo: Path, elsewhere: Path, launcher: Launcher
) -> None:
    server = launcher.server(demo.parent / "server-data")
    relative = os.path.relpath(demo / LESSON, elsewhere)
    result = velo_cli_in(elsewhere, "deploy", relative, "--url", server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deployed: big_trades" in result.stdout
    server.wait_state("big_trades", "completed")
    assert (demo / OUTPUT).read_bytes() == EXPECTED.read_bytes()
    assert "output" not in os.listdir(elsewhere)


def test_a_folder_outside_the_roots_is_refused(
    demo: Path, elsewhere: Path, launcher: Launcher, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server = launcher.server(tmp_path / "server-data", allow=[allowed])
    result = velo_cli_in(elsewhere, "deploy", str(demo / LESSON), "--url", server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"base_dir '{demo.resolve()}' is outside the server's roots" in message, message
    assert "--allow-path" in message
    assert server.jobs() == {}
    assert not (demo / "output").exists()
    errors = wait_for("the refusal on /errors", lambda: server.http.get("/errors").json()["groups"])
    assert any("outside the server's roots" in g["message"] for g in errors)


def test_the_api_refuses_a_relative_base_dir(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.server(tmp_path / "server-data")
    sql = (ROOT / "demo" / "quickstart" / LESSON).read_text(encoding="utf-8")
    response = server.http.post("/jobs", json={"sql": sql, "base_dir": "demo/quickstart"})
    assert response.status_code == 400, response.text
    assert "is not an absolute path" in response.json()["detail"]


def test_the_make_demo_hint_works_from_the_repository_root(tmp_path: Path) -> None:
    """The server command `make demo` prints last (demo/quickstart/run.sh), as printed."""
    script = (ROOT / "demo" / "quickstart" / "run.sh").read_text(encoding="utf-8")
    line = next(x for x in script.splitlines() if x.startswith("echo") and "deploy-app" in x)
    command = shlex.split(shlex.split(line)[1])
    assert command[0] == ".venv/bin/velo-sql", command
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT / "demo" / "quickstart",
        repo / "demo" / "quickstart",
        ignore=shutil.ignore_patterns("output", "velo-data", "measurements*.txt", "__pycache__"),
    )
    port = str(free_port())
    result = subprocess.run(
        [console_script("velo-sql"), *command[1:], "--once", "--port", port],
        cwd=repo,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lesson = repo / "demo" / "quickstart"
    expected = ROOT / "demo" / "quickstart" / "expected" / "07_clean_trades.csv"
    assert (lesson / "output" / "07_clean_trades.csv").read_bytes() == expected.read_bytes()
    assert (lesson / "velo-data").is_dir()


def test_server_paths_sends_no_folder(
    demo: Path, elsewhere: Path, launcher: Launcher, tmp_path: Path
) -> None:
    """An application whose files lie under the roots, deployed from a folder outside
    them (a server on another machine): `--server-paths` sends no folder."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(demo / "data" / "trades.csv", allowed / "trades.csv")
    sql = (demo / LESSON).read_text(encoding="utf-8")
    sql = sql.replace("./data/trades.csv", str(allowed / "trades.csv"))
    sql = sql.replace("./output/02_big_trades.csv", str(allowed / "big_trades.csv"))
    (elsewhere / "app.sql").write_text(sql, encoding="utf-8")
    server = launcher.server(tmp_path / "server-data", allow=[allowed])
    refused = velo_cli_in(elsewhere, "deploy", "app.sql", "--url", server.url)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "--server-paths" in " ".join(refused.stderr.split())
    sent = velo_cli_in(elsewhere, "deploy", "app.sql", "--server-paths", "--url", server.url)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    server.wait_state("big_trades", "completed")
    assert (allowed / "big_trades.csv").read_bytes() == EXPECTED.read_bytes()
