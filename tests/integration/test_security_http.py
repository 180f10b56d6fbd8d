"""The HTTP API of a real `velo-sql server` trusts no one it should not.

DNS rebinding (a foreign Host), cross-site posts (a foreign Origin) and oversized
bodies are refused before anything is parsed or deployed, and the server keeps
answering.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import Launcher, VeloServer, launcher, write_trades

__all__ = ["launcher"]

pytestmark = pytest.mark.integration


def _sql(tmp_path: Path) -> str:
    source = write_trades(tmp_path / "trades.csv", 5)
    return f"""-- @app: guard
CREATE STREAM out AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.csv"}');
"""


def _nothing_deployed(server: VeloServer, tmp_path: Path) -> None:
    assert server.jobs() == {}
    assert not (tmp_path / "out.csv").exists()


@pytest.fixture
def server(launcher: Launcher, tmp_path: Path) -> VeloServer:
    return launcher.server(
        tmp_path / "velo-data", args=["--allowed-host", "velo.internal", "--max-body", "65536"]
    )


@pytest.mark.parametrize("host", ["attacker.example.com", "attacker.example.com:8080", "[::2]"])
def test_a_foreign_host_is_refused(server: VeloServer, tmp_path: Path, host: str) -> None:
    """DNS rebinding: the attacker's page reaches 127.0.0.1 under its own name."""
    for method, path, body in (("POST", "/jobs", {"sql": _sql(tmp_path)}), ("GET", "/jobs", None)):
        response = server.http.request(method, path, json=body, headers={"Host": host})
        assert response.status_code == 400, response.text
        assert response.json()["title"] == "Host not allowed"
        assert response.headers["content-type"] == "application/problem+json"
    _nothing_deployed(server, tmp_path)
    assert "refused a request (400 Host not allowed)" in server.log()  # the operator sees it


def test_loopback_names_and_an_allowed_host_are_answered(server: VeloServer) -> None:
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "velo.internal", "VELO.internal:80"):
        assert server.http.get("/health", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_cross_site_post_is_refused(server: VeloServer, tmp_path: Path, origin: str) -> None:
    response = server.http.post("/jobs", json={"sql": _sql(tmp_path)}, headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert response.json()["title"] == "Cross-origin request refused"
    _nothing_deployed(server, tmp_path)


def test_the_consoles_own_origin_may_post(server: VeloServer, tmp_path: Path) -> None:
    own = f"http://127.0.0.1:{server.port}"
    response = server.http.post("/jobs", json={"sql": _sql(tmp_path)}, headers={"Origin": own})
    assert response.status_code == 201, response.text


def test_a_large_body_is_refused_before_it_is_read(server: VeloServer, tmp_path: Path) -> None:
    big = b'{"sql": "' + b"x" * (40 * 1024 * 1024) + b'"}'
    started = time.monotonic()
    try:
        response = server.http.post(
            "/jobs", content=big, headers={"Content-Type": "application/json"}
        )
        status = response.status_code
        assert response.json()["title"] == "Request body too large"
    except httpx.TransportError:
        status = 413  # the server answered and closed before the upload ended
    assert status == 413
    assert time.monotonic() - started < 10
    assert server.http.get("/health").status_code == 200
    _nothing_deployed(server, tmp_path)


def test_a_chunked_body_is_read_only_up_to_the_limit(server: VeloServer, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"sql": "'
        for _ in range(200):
            yield b"y" * 1024
        yield b'"}'

    response = server.http.post(
        "/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    _nothing_deployed(server, tmp_path)
    # Under the limit, a chunked body is passed on whole.
    sql = _sql(tmp_path).encode()
    small = server.http.post(
        "/jobs",
        content=iter([b'{"sql": ', httpx.Response(200, json=sql.decode()).content, b"}"]),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 201, small.text
