"""A deployed job touches files only under the server's roots (issue 12, item 3).

A real `velo-sql server` whose roots are the test's folder (`--allow-path`): a source,
sink, `dlq.path` or `config_file` outside it, by name, by `..` or through a symbolic
link, is refused at deploy naming the path and the roots; nothing is read or written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.server_process import Launcher, VeloServer, launcher, write_trades

__all__ = ["launcher"]

pytestmark = pytest.mark.integration


@pytest.fixture
def server(launcher: Launcher, tmp_path: Path) -> VeloServer:
    return launcher.server(tmp_path / "velo-data", allow=[tmp_path])


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the server may not touch, holding a secret file."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "secret.csv").write_text("id,symbol\n1,TOP-SECRET\n", encoding="utf-8")
    return folder


def _app(source: str, sink: str, extra: str = "") -> str:
    return f"""-- @app: paths
CREATE STREAM out AS SELECT id, symbol FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      'out.type' = 'file_sink', 'out.path' = '{sink}', 'out.format' = 'csv'{extra});
"""


def _refused(server: VeloServer, sql: str, path: str) -> str:
    response = server.http.post("/jobs", json={"sql": sql})
    assert response.status_code == 400, response.text
    assert "outside the server's roots" in response.text and path in response.text
    assert "TOP-SECRET" not in response.text
    assert server.jobs() == {}
    return response.text


def test_a_source_outside_the_roots_is_refused(
    server: VeloServer, tmp_path: Path, outside: Path
) -> None:
    for source in ("/etc/passwd", str(outside / "secret.csv"), f"{tmp_path}/../../etc/passwd"):
        _refused(server, _app(source, str(tmp_path / "out.csv")), source)
    assert not (tmp_path / "out.csv").exists()


def test_a_sink_or_dead_letter_file_outside_the_roots_is_refused(
    server: VeloServer, tmp_path: Path, outside: Path
) -> None:
    source = str(write_trades(tmp_path / "trades.csv", 5))
    _refused(server, _app(source, str(outside / "owned.csv")), str(outside / "owned.csv"))
    dlq = f", 'dlq.path' = '{outside / 'dlq.jsonl'}'"
    _refused(server, _app(source, str(tmp_path / "out.csv"), dlq), str(outside / "dlq.jsonl"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]


def test_a_symbolic_link_under_a_root_does_not_lead_out(
    server: VeloServer, tmp_path: Path, outside: Path
) -> None:
    link = tmp_path / "link"
    os.symlink(outside, link)
    _refused(server, _app(str(link / "secret.csv"), str(tmp_path / "out.csv")), "link")


def test_a_config_file_outside_the_roots_is_not_read(
    server: VeloServer, tmp_path: Path, outside: Path
) -> None:
    config = outside / "kafka.yaml"
    config.write_text("bootstrap.servers: TOP-SECRET:9092\n", encoding="utf-8")
    source = str(write_trades(tmp_path / "trades.csv", 5))
    sql = _app(source, str(tmp_path / "out.csv"), f", 'src.config_file' = '{config}'")
    _refused(server, sql, str(config))


def test_files_under_the_roots_are_deployed(server: VeloServer, tmp_path: Path) -> None:
    source = str(write_trades(tmp_path / "trades.csv", 5))
    assert server.deploy(_app(source, str(tmp_path / "sub" / "out.csv"))) == ["out"]
    server.wait_state("out", "completed")
    assert (tmp_path / "sub" / "out.csv").read_text(encoding="utf-8").startswith("id,symbol")
