"""Grafana dashboards: structure Grafana needs, the seed's panels, real metric names.

No Grafana runs here (it is not packaged for Debian); these checks cover what a
provisioned dashboard needs to load, and the PromQL itself runs against a real
Prometheus in tests/integration/test_monitoring_prometheus.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.monitoring.assets import (
    DASHBOARDS,
    Exported,
    all_dashboard_queries,
    load_dashboard,
    metric_names,
    panels,
    rated_metrics,
    variable_query,
)

# Dashboard JSON schema versions of Grafana 9.0 (36) to 11.x (41); Grafana migrates
# older ones on load, and a version it does not know yet would not load.
SUPPORTED_SCHEMA_VERSIONS = range(36, 42)
PANEL_TYPES = {"stat", "timeseries", "table", "bargauge", "gauge", "barchart", "text", "row"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
ERROR_TRACKING, OPS = DASHBOARDS


def _board(path: Path) -> dict[str, Any]:
    return load_dashboard(path)


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [p for p in panels(board) if p["title"] == title]
    assert len(matches) == 1, f"panel {title!r}: {len(matches)} found"
    return matches[0]


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


def _steps(panel: dict[str, Any]) -> list[tuple[str, float | None]]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [(s["color"], s["value"]) for s in steps]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_declares_identity_and_a_supported_schema_version(path: Path) -> None:
    board = _board(path)
    assert isinstance(board["schemaVersion"], int)
    assert board["schemaVersion"] in SUPPORTED_SCHEMA_VERSIONS
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    assert board["id"] is None  # Grafana assigns ids; a fixed one clashes on import
    assert board["title"] and board["panels"] and "velostream" in board["tags"]
    assert board["time"]["from"].startswith("now-")


def test_dashboards_have_distinct_uids_and_titles() -> None:
    boards = [_board(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_datasource_and_queries(path: Path) -> None:
    for panel in panels(_board(path)):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_do_not_overlap_on_the_grid(path: Path) -> None:
    seen_ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(_board(path)):
        assert panel["id"] not in seen_ids
        seen_ids.add(panel["id"])
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in "xywh")
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables_for_datasource_node_and_job(path: Path) -> None:
    variables = {v["name"]: v for v in _board(path)["templating"]["list"]}
    assert set(variables) == {"datasource", "node", "job"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variable_query(variables["node"]).endswith(", instance)")
    assert variable_query(variables["job"]).endswith(", job)")
    for name in ("node", "job"):
        assert variables[name]["includeAll"] and variables[name]["multi"]
        assert variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"] == DATASOURCE


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_use_only_defined_variables_and_filter_by_node_and_job(path: Path) -> None:
    board = _board(path)
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTINS
    for panel in panels(board):
        for expr in _exprs(panel):
            used = set(re.findall(r"\$\{?(\w+)", expr))
            assert used <= defined, f"{panel['title']}: {used - defined}"
            assert 'instance=~"$node"' in expr, panel["title"]
            if re.search(r"velo_(job|dlq)_\w+\{", expr):
                assert 'job=~"$job"' in expr, panel["title"]


@pytest.mark.parametrize("query", all_dashboard_queries(), ids=lambda q: q.where)
def test_dashboard_queries_use_only_metrics_the_server_exports(
    query: Any, exported: Exported
) -> None:
    names = metric_names(query.expr)
    assert names, f"{query.where}: no metric in {query.expr!r}"
    assert names - exported.names == set(), query.expr


@pytest.mark.parametrize("query", all_dashboard_queries(), ids=lambda q: q.where)
def test_dashboard_queries_rate_only_counters(query: Any, exported: Exported) -> None:
    assert rated_metrics(query.expr) <= exported.rateable, query.expr


# --- the seed's five panels, with its thresholds -----------------------------------


def test_total_error_count_stat_has_the_seed_thresholds() -> None:
    panel = _panel(_board(ERROR_TRACKING), "Total Error Count")
    assert panel["type"] == "stat"
    assert "velo_error_messages_total" in _exprs(panel)[0]
    assert _steps(panel) == [("green", None), ("yellow", 5), ("orange", 10), ("red", 20)]


def test_unique_error_types_stat_turns_red_where_the_alert_fires() -> None:
    panel = _panel(_board(ERROR_TRACKING), "Unique Error Types")
    assert panel["type"] == "stat"
    assert metric_names(_exprs(panel)[0]) == {"velo_unique_error_types"}
    assert _steps(panel)[-1] == ("red", 6)  # VelostreamManyErrorTypes: > 5


def test_buffered_errors_stat_is_red_when_the_buffer_is_full() -> None:
    panel = _panel(_board(ERROR_TRACKING), "Buffered Errors")
    assert panel["type"] == "stat"
    assert metric_names(_exprs(panel)[0]) == {"velo_buffered_error_messages"}
    assert _steps(panel)[-1] == ("red", 10)
    assert panel["fieldConfig"]["defaults"]["max"] == 10


def test_error_trends_plot_the_error_counter_and_unique_types() -> None:
    panel = _panel(_board(ERROR_TRACKING), "Error Trends")
    assert panel["type"] == "timeseries"
    names = set().union(*(metric_names(e) for e in _exprs(panel)))
    assert {"velo_error_messages_total", "velo_unique_error_types"} <= names


def test_last_errors_table_is_an_instant_query_of_the_buffered_messages() -> None:
    panel = _panel(_board(ERROR_TRACKING), "Last errors")
    assert panel["type"] == "table"
    (target,) = panel["targets"]
    assert metric_names(target["expr"]) == {"velo_error_message"}
    assert target["instant"] is True and target["range"] is False
    assert target["format"] == "table"
    organize = next(t for t in panel["transformations"] if t["id"] == "organize")["options"]
    assert organize["renameByName"]["message"] == "Message"
    assert organize["renameByName"]["Value"] == "Count"


def test_error_dashboard_shows_errors_by_job_and_stage_and_the_dlq_rate() -> None:
    board = _board(ERROR_TRACKING)
    (by_stage,) = _exprs(_panel(board, "Errors by job and stage"))
    assert "sum by (job, stage)" in by_stage and "velo_job_errors_total" in by_stage
    dlq = _exprs(_panel(board, "Dead-letter queue rate"))
    assert any("rate(velo_dlq_records_total" in e for e in dlq)


# --- the operations dashboard -----------------------------------------------------------


def test_ops_dashboard_covers_jobs_throughput_ratio_latency_dlq_and_process() -> None:
    board = _board(OPS)
    states = _exprs(_panel(board, "Jobs by state"))[0]
    assert "sum by (status)" in states and "velo_job_status" in states
    flow = " ".join(_exprs(_panel(board, "Records in / out / failed per job")))
    for family in ("in", "out", "failed"):
        assert f"rate(velo_job_records_{family}_total" in flow
    (ratio,) = _exprs(_panel(board, "Error ratio per job"))
    assert metric_names(ratio) == {"velo_job_errors_total", "velo_job_records_in_total"}
    assert "/" in ratio
    latency = _exprs(_panel(board, "Batch latency p50 / p95"))
    assert [e.split(",")[0] for e in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
    ]
    assert all("velo_job_batch_duration_seconds_bucket" in e for e in latency)
    dlq = " ".join(_exprs(_panel(board, "Dead-letter rates")))
    assert "velo_dlq_records_total" in dlq and "velo_dlq_write_failures_total" in dlq


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        ("Process CPU per node", "process_cpu_seconds_total"),
        ("Process memory per node", "process_resident_memory_bytes"),
    ],
)
def test_process_panels_are_per_node(title: str, metric: str) -> None:
    panel = _panel(_board(OPS), title)
    (target,) = panel["targets"]
    assert metric in target["expr"]
    assert "{{instance}}" in target["legendFormat"]
