"""Where `velo-sql server` binds, and who may change its jobs.

A non-loopback bind without VELO_API_TOKEN is refused unless `--insecure`; with a
token, mutating calls need `Authorization: Bearer <token>`, and reads leave out raw
data (job SQL, dead-letter payloads) without it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import (
    Launcher,
    launcher,
    velo_cli,
    write_trades,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def small_app(tmp_path: Path, name: str = "bind_copy") -> Path:
    source = write_trades(tmp_path / "trades.csv", 100)
    app = tmp_path / f"{name}.sql"
    app.write_text(
        f"""-- @app: {name}
-- @version: 1
CREATE STREAM {name} AS SELECT id, symbol FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      '{name}.type' = 'file_sink', '{name}.path' = '{tmp_path / name}.csv');
""",
        encoding="utf-8",
    )
    return app


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path, launcher: Launcher) -> None:
    server = launcher.server(tmp_path / "data", host="0.0.0.0", wait=False)
    code = server.wait_exit(timeout=30)
    message = " ".join(server.log().split())
    assert code != 0
    assert "refusing to bind 0.0.0.0" in message, message
    assert "VELO_API_TOKEN" in message and "--insecure" in message, message
    with pytest.raises(httpx.TransportError):
        server.http.get("/health", timeout=1)


def test_non_loopback_bind_with_insecure_starts_without_auth(
    tmp_path: Path, launcher: Launcher
) -> None:
    server = launcher.server(tmp_path / "data", host="0.0.0.0", args=["--insecure"])
    assert server.http.get("/health").json()["status"] == "ok"
    # No token configured: mutating calls are open, as --insecure accepted.
    result = velo_cli("deploy", str(small_app(tmp_path)), "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert server.terminate() == 0


def test_token_guards_mutating_calls_and_raw_data(tmp_path: Path, launcher: Launcher) -> None:
    token_env = {"VELO_API_TOKEN": TOKEN}
    # With a token, a non-loopback bind needs no --insecure. (The helper's own client,
    # behind server.jobs() and wait_state, sends the token.)
    server = launcher.server(tmp_path / "data", host="0.0.0.0", env=token_env, token=TOKEN)
    anonymous = httpx.Client(base_url=server.url, timeout=10.0)
    app = small_app(tmp_path)

    refused = velo_cli("deploy", str(app), "--url", server.url)
    assert refused.returncode == 1
    assert "401" in refused.stderr and "Bearer" in refused.stderr, refused.stderr
    wrong = velo_cli("deploy", str(app), "--url", server.url, "--token", "not-it")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert server.jobs() == {}, "a refused deploy changed nothing"
    raw = anonymous.post("/jobs", json={"sql": app.read_text()})
    assert raw.status_code == 401
    assert raw.headers["content-type"].startswith("application/problem+json")
    assert raw.headers["www-authenticate"] == "Bearer"

    # Health, errors and metrics need no token.
    for path in ("/health", "/errors", "/metrics"):
        assert anonymous.get(path).status_code == 200, path

    deployed = velo_cli("deploy", str(app), "--url", server.url, "--token", TOKEN)
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed: bind_copy" in deployed.stdout
    server.wait_state("bind_copy", "completed")

    # The jobs' SQL is raw data: a read without the token leaves it out.
    for path in ("/jobs", "/jobs/bind_copy"):
        read = anonymous.get(path)
        assert read.status_code == 200, path
        assert "SELECT" not in read.text and "bind_copy" in read.text
    assert "SELECT id, symbol" in server.http.get("/jobs/bind_copy").json()["sql"]
    listed = velo_cli("jobs", "--url", server.url)
    assert listed.returncode == 0, listed.stderr
    assert "bind_copy" in listed.stdout
    anonymous.close()

    # The same, with the token and URL from the environment.
    env = {"VELO_URL": server.url, "VELO_API_TOKEN": TOKEN}
    undeployed = velo_cli("undeploy", "bind_copy", env=env)
    assert undeployed.returncode == 0, undeployed.stderr
    assert server.jobs() == {}
    assert server.terminate() == 0
