"""SQL an attacker sends to a real `velo-sql server` stays in the sandbox: a metric
condition is one checked SQL condition, and what would fail only at run time is refused
at deploy (issue 12, items 2 and 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import RUN_TIME_FAILURES
from tests.integration.server_process import Launcher, VeloServer, launcher, write_trades

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

SPLICE = (
    "true GROUP BY 1; CREATE OR REPLACE MACRO m() AS 1; "
    "SELECT name AS symbol, 1 FROM duckdb_settings() --"
)


@pytest.fixture
def server(launcher: Launcher, tmp_path: Path) -> VeloServer:
    return launcher.server(tmp_path / "velo-data")


def _app(tmp_path: Path, select: str, head: str = "") -> str:
    source = write_trades(tmp_path / "trades.csv", 20)
    return f"""-- @app: attack
{head}CREATE STREAM out AS
{select}
EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.csv"}');
"""


def test_a_spliced_metric_condition_is_refused(server: VeloServer, tmp_path: Path) -> None:
    head = f"-- @metric: trades_seen\n-- @metric_labels: symbol\n-- @metric_condition: {SPLICE}\n"
    response = server.http.post(
        "/jobs", json={"sql": _app(tmp_path, "SELECT id, symbol FROM src", head)}
    )
    assert response.status_code == 400, response.text
    assert "@metric_condition" in response.text and "several statements" in response.text
    assert server.jobs() == {}
    assert not (tmp_path / "out.csv").exists()
    metrics = server.http.get("/metrics").text
    families = {f.name for f in text_string_to_metric_families(metrics)}  # still valid
    assert "trades_seen" not in families  # no metric of the refused job
    assert "enable_external_access" not in metrics  # nothing of duckdb_settings()


@pytest.mark.parametrize(
    ("select", "reason"),
    RUN_TIME_FAILURES,
)
def test_sql_that_would_fail_only_at_run_time_is_refused_at_deploy(
    server: VeloServer, tmp_path: Path, select: str, reason: str
) -> None:
    response = server.http.post("/jobs", json={"sql": _app(tmp_path, select)})
    assert response.status_code == 400, response.text
    assert reason in response.text
    assert server.jobs() == {}
    assert not (tmp_path / "out.csv").exists()
