"""Two jobs never write one sink (bug 5: the second overwrote the first's committed rows).

A real `velo-sql server`: a deploy whose file sink (by another spelling too), Kafka
topic on the same cluster, or `dlq.path` another deployed job writes is refused with a
409 problem document naming that job and the target, and the first job's output is
left byte for byte as it was; so are two statements of one application on one file.
An upgrade of the job itself keeps its sink; once undeployed, the sink is free again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import Launcher, VeloServer, launcher, read_ids, write_trades

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

ROWS = 2_000
PROBLEM = "application/problem+json"


def copy_stmt(name: str, source: Path, sink: str, extra: str = "") -> str:
    return f"""CREATE STREAM {name} AS SELECT id, symbol, qty FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      '{name}.type' = 'file_sink', '{name}.path' = '{sink}', '{name}.format' = 'csv'{extra});
"""


def app(name: str, *statements: str, version: str = "1") -> str:
    return f"-- @app: {name}\n-- @version: {version}\n" + "\n".join(statements)


def refused(server: VeloServer, sql: str) -> dict[str, Any]:
    response = server.http.post("/jobs", json={"sql": sql})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    doc: dict[str, Any] = response.json()
    assert doc["title"] == "Sink already written" and doc["status"] == 409
    return doc


@pytest.fixture
def first(launcher: Launcher, tmp_path: Path) -> tuple[VeloServer, Path, Path, bytes]:
    """A server whose job `first` has copied every trade into out/first.csv."""
    source = write_trades(tmp_path / "trades.csv", ROWS)
    out = tmp_path / "out" / "first.csv"
    out.parent.mkdir()
    server = launcher.server(tmp_path / "data")
    assert server.deploy(app("one", copy_stmt("first", source, str(out)))) == ["first"]
    server.wait_state("first", "completed")
    assert read_ids(out) == list(range(ROWS))
    return server, source, out, out.read_bytes()


def test_a_second_job_on_the_first_ones_file_is_refused_and_the_file_untouched(
    first: tuple[VeloServer, Path, Path, bytes], tmp_path: Path
) -> None:
    server, source, out, written = first
    (tmp_path / "via-link").symlink_to(out.parent)
    spellings = [str(out), f"{tmp_path}/out/../out/first.csv", f"{tmp_path}/via-link/first.csv"]
    for spelling in spellings:
        doc = refused(server, app("two", copy_stmt("second", source, spelling)))
        assert doc["conflicts_with"] == "first"
        assert doc["target"] == f"file {out}"
        assert "job 'first' of application 'one' already writes" in doc["detail"]
    assert list(server.jobs()) == ["first"]
    assert out.read_bytes() == written
    groups = server.http.get("/errors", params={"stage": "deploy"}).json()["groups"]
    assert groups and all("already writes" in g["message"] for g in groups)


def test_a_dead_letter_file_on_the_first_ones_output_is_refused(
    first: tuple[VeloServer, Path, Path, bytes], tmp_path: Path
) -> None:
    server, source, out, written = first
    extra = f",\n      'dlq.path' = '{out}'"
    doc = refused(server, app("two", copy_stmt("second", source, str(tmp_path / "s.csv"), extra)))
    assert doc["conflicts_with"] == "first"
    assert doc["detail"].startswith("dead-letter file of job 'second' would write file")
    assert out.read_bytes() == written
    assert not (tmp_path / "s.csv").exists()


def test_two_statements_of_one_application_on_one_file_are_refused(
    launcher: Launcher, tmp_path: Path
) -> None:
    source = write_trades(tmp_path / "trades.csv", 10)
    out = str(tmp_path / "both.csv")
    server = launcher.server(tmp_path / "data")
    doc = refused(server, app("pair", copy_stmt("a", source, out), copy_stmt("b", source, out)))
    assert "of application 'pair' both write" in doc["detail"]
    assert server.jobs() == {}
    assert not Path(out).exists()


def test_a_kafka_topic_on_the_same_cluster_is_refused(launcher: Launcher, tmp_path: Path) -> None:
    """Checked before any broker is contacted: none listens here."""

    def kafka_app(name: str, servers: str) -> str:
        return app(
            name,
            f"""CREATE STREAM {name} AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}', 'src.format' = 'csv',
      'src.watch' = 'true',
      '{name}.type' = 'kafka_sink', '{name}.topic' = 'orders',
      '{name}.bootstrap.servers' = '{servers}');
""",
        )

    source = write_trades(tmp_path / "trades.csv", 10)
    server = launcher.server(tmp_path / "data")
    assert server.deploy(kafka_app("k1", "127.0.0.1:1,127.0.0.1:2")) == ["k1"]
    doc = refused(server, kafka_app("k2", "127.0.0.1:2"))
    assert doc["conflicts_with"] == "k1"
    assert doc["target"] == "topic orders on 127.0.0.1:2"
    assert server.deploy(kafka_app("k3", "127.0.0.1:3")) == ["k3"]  # another cluster


def test_an_upgrade_keeps_its_sink_and_undeploy_frees_it(
    first: tuple[VeloServer, Path, Path, bytes], tmp_path: Path
) -> None:
    server, source, out, _ = first
    assert server.deploy(app("one", copy_stmt("first", source, str(out)), version="2")) == ["first"]
    server.wait_state("first", "completed")
    assert read_ids(out) == list(range(ROWS))  # resumed at the end: nothing written twice
    assert server.http.delete("/jobs/first").status_code == 200
    assert server.deploy(app("two", copy_stmt("second", source, str(out)))) == ["second"]
