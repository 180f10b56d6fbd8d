"""Prometheus configuration, recording and alert rules: promtool, and what they refer to."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from typing import Any

import pytest

from tests.unit.monitoring.assets import (
    ALERT_RULES,
    DOCS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TESTS,
    SCRAPE_JOB,
    Exported,
    alert_rules,
    load_yaml,
    markdown_anchors,
    metric_names,
    rated_metrics,
    recorded_names,
    require_tool,
    rule_queries,
)

SEVERITIES = {"critical", "warning", "info"}
# Alerts about one streaming job (their `job` label is the job's name).
PER_JOB_ALERTS = {
    "VelostreamJobFailed",
    "VelostreamJobNoInput",
    "VelostreamJobErrorRatioHigh",
    "VelostreamDLQWriteFailures",
}
REQUIRED_ALERTS = PER_JOB_ALERTS | {
    "VelostreamNewErrorGroup",
    "VelostreamErrorBufferFull",
    "VelostreamManyErrorTypes",
    "VelostreamTargetDown",
}
# Labels Prometheus or the server already give meaning to; target labels must not reuse them.
_RESERVED_TARGET_LABELS = {"job", "instance", "le"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_config_accepts_the_config_and_its_rule_files() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    result = _promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_test_rules_passes_every_unit_test() -> None:
    assert RULE_TESTS, "no promtool test files in monitoring/prometheus/tests"
    result = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_the_alerts_the_issue_asks_for_are_all_there() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) == REQUIRED_ALERTS


def _alert_cases() -> dict[str, list[dict[str, Any]]]:
    cases: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in RULE_TESTS:
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].append(case)
    return cases


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_every_alert_has_a_firing_and_a_silent_unit_test(alert: str) -> None:
    cases = _alert_cases()[alert]
    firing = [c for c in cases if c.get("exp_alerts")]
    assert firing, f"no promtool case where {alert} fires"
    assert any(not c.get("exp_alerts") for c in cases), f"no case where {alert} stays silent"
    rule = next(r for r in alert_rules() if r["alert"] == alert)
    for case in firing:
        for expected in case["exp_alerts"]:
            # The rendered summary, description and runbook link are checked too.
            assert set(expected.get("exp_annotations", {})) == set(rule["annotations"])


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_description_and_a_runbook_in_the_docs(
    rule: dict[str, Any],
) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["service"] == "velostream"
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert path == "docs/observability.md"
    assert anchor == rule["alert"].lower()
    assert anchor in markdown_anchors(DOCS), f"docs/observability.md has no section #{anchor}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_description_names_instance_node_region_and_version(rule: dict[str, Any]) -> None:
    description = rule["annotations"]["description"]
    for label in ("instance", "node_id", "node_name", "region", "version"):
        assert f"$labels.{label}" in description, label
    # Those labels exist only through the join with velo_build_info.
    assert re.search(
        r"group_left\(node_id, node_name, region, version\)\s+(topk.*\()?\s*"
        r"(last_over_time\()?velo_build_info",
        rule["expr"],
        re.DOTALL,
    ), rule["expr"]
    if rule["alert"] in PER_JOB_ALERTS:
        assert "$labels.job" in rule["annotations"]["summary"]
        assert "$labels.job" in description


def test_target_down_watches_the_scrape_job_of_the_config() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "VelostreamTargetDown")
    assert f'up{{job="{SCRAPE_JOB}"}}' in rule["expr"]


@pytest.mark.parametrize("query", list(rule_queries()), ids=lambda q: q.where)
def test_rules_use_only_exported_or_recorded_metrics(query: Any, exported: Exported) -> None:
    known = exported.names | recorded_names() | {"up"}
    assert metric_names(query.expr) - known == set()


@pytest.mark.parametrize("query", list(rule_queries()), ids=lambda q: q.where)
def test_rules_rate_only_counters(query: Any, exported: Exported) -> None:
    assert rated_metrics(query.expr) <= exported.rateable


def test_rule_unit_tests_feed_series_the_server_exports(exported: Exported) -> None:
    """The promtool cases are about real series, not made-up names."""
    for path in RULE_TESTS:
        for test in load_yaml(path)["tests"]:
            for series in test["input_series"]:
                name = series["series"].split("{", 1)[0]
                assert name in exported.names | {"up"}, f"{path.name}: {name}"


def test_recording_rules_follow_the_level_metric_operation_convention() -> None:
    for name in recorded_names():
        level, metric, operation = name.split(":")
        assert level in {"job", "instance"} and metric.startswith("velo_") and operation, name


# --- the scrape configuration ---------------------------------------------------------


def _scrape_job() -> dict[str, Any]:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs: dict[str, dict[str, Any]] = {job["job_name"]: job for job in config["scrape_configs"]}
    return jobs[SCRAPE_JOB]


def test_config_loads_both_rule_files() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert [PROMETHEUS_DIR / f for f in config["rule_files"]] == list(RULE_FILES)


def test_scrape_job_keeps_the_streaming_job_label() -> None:
    """Without honor_labels, `job` would become `exported_job` and every per-job query
    and alert would select nothing."""
    assert _scrape_job()["honor_labels"] is True


def _check_target_groups(groups: list[dict[str, Any]], exported: Exported) -> None:
    assert groups
    for group in groups:
        for target in group["targets"]:
            assert re.fullmatch(r"[\w.-]+:\d+", target), target
        labels = set(group.get("labels", {}))
        assert "node" in labels
        assert not labels & (exported.labels | _RESERVED_TARGET_LABELS)


def test_static_targets_carry_node_labels_that_do_not_clash(exported: Exported) -> None:
    _check_target_groups(_scrape_job()["static_configs"], exported)


def test_file_discovery_reads_the_targets_folder_and_its_example_is_valid(
    exported: Exported,
) -> None:
    (file_sd,) = _scrape_job()["file_sd_configs"]
    assert file_sd["files"] == ["targets/*.yml"]
    assert load_yaml(PROMETHEUS_DIR / "targets" / "velostream.yml") == []
    example = PROMETHEUS_DIR / "targets" / "velostream-nodes.yml.example"
    _check_target_groups(load_yaml(example), exported)


def test_alert_rules_file_is_the_one_the_config_loads() -> None:
    assert ALERT_RULES in RULE_FILES
