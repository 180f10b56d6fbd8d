"""User metrics cannot break or flood a real server's /metrics (issue 12, item 6).

A metric named like a built-in family is refused at deploy; one application with many
`@metric` lines and an id label stays within the job's series bound, the overflow
counted; /metrics stays valid (prometheus_client's text and OpenMetrics parsers, and
`promtool check metrics`) throughout and after undeploy, when the families go.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.integration.server_process import Launcher, VeloServer, launcher
from tests.integration.test_promtool_metrics import check_metrics

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

ROWS = 1_500
METRICS = 100


def _assert_valid(server: VeloServer) -> set[str]:
    text = server.http.get("/metrics").text
    families = {f.name for f in parse_text(text)}
    om = server.http.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    list(parse_om(om))
    result = check_metrics(text)
    assert result.returncode == 0, f"promtool said:\n{result.stdout}{result.stderr}"
    return families


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "ids.csv"
    path.write_text("id,v\n" + "".join(f"{i},{i % 7}\n" for i in range(ROWS)), encoding="utf-8")
    return path


def _app(tmp_path: Path, head: str) -> str:
    return f"""-- @app: flood
{head}CREATE STREAM out AS SELECT id, v FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{_source(tmp_path)}',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.csv"}');
"""


@pytest.fixture
def server(launcher: Launcher, tmp_path: Path) -> VeloServer:
    return launcher.server(tmp_path / "velo-data")


@pytest.mark.parametrize("name", ["velo_error_messages", "velo_job_records_in", "process_cpu"])
def test_a_built_in_name_is_refused(server: VeloServer, tmp_path: Path, name: str) -> None:
    response = server.http.post("/jobs", json={"sql": _app(tmp_path, f"-- @metric: {name}\n")})
    assert response.status_code == 400, response.text
    assert f"metric name '{name}' is reserved" in response.text
    assert server.jobs() == {}
    _assert_valid(server)


def test_many_metrics_with_an_id_label_stay_within_the_jobs_bound(
    server: VeloServer, tmp_path: Path
) -> None:
    head = "".join(f"-- @metric: flood_{i}\n-- @metric_labels: id\n" for i in range(METRICS))
    assert server.deploy(_app(tmp_path, head)) == ["out"]
    server.wait_state("out", "completed")
    families = _assert_valid(server)
    text = server.http.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("flood_") and "_total{" in line]
    assert len(series) == 1_000  # the job's bound, across all its metrics
    overflow = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('velo_user_metric_overflow_total{job="out"')
    )
    assert overflow == METRICS * ROWS - 1_000  # every label set left out is counted
    assert "flood_0" in families
    assert "reached the job's bound" in server.log()

    assert httpx.delete(f"{server.url}/jobs/out").status_code == 200
    families = _assert_valid(server)
    assert not [f for f in families if f.startswith("flood_")]
    assert 'velo_user_metric_overflow_total{job="out"' not in server.http.get("/metrics").text
