"""The monitoring bundle's files, the PromQL in them, and what the server exports.

Shared by the unit tests here and the integration tests that run a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from velostream.errors import ErrorKind, Stage
from velostream.observability.manager import ObservabilityManager, StreamingConfig

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RECORDING_RULES = PROMETHEUS_DIR / "rules" / "velostream-recording.yml"
ALERT_RULES = PROMETHEUS_DIR / "rules" / "velostream-alerts.yml"
RULE_FILES = (RECORDING_RULES, ALERT_RULES)
RULE_TESTS = tuple(sorted((PROMETHEUS_DIR / "tests").glob("*.yml")))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
DASHBOARDS = (
    MONITORING / "grafana" / "dashboards" / "velostream-error-tracking.json",
    MONITORING / "grafana" / "dashboards" / "velostream-ops.json",
)
DOCS = ROOT / "docs" / "observability.md"
SCRAPE_JOB = "velostream"

# Debian package that provides each program the tests run.
_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def require_tool(name: str) -> str:
    """Path of a program the monitoring tests need; fail (never skip) when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make system-deps` "
            f"(Debian package {_PACKAGES.get(name, name)})",
            pytrace=False,
        )
    return path


# --- what the server exports -----------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """Sample names of a real server's exposition, which of them rate() may use, and
    the label names its samples carry."""

    names: frozenset[str]
    rateable: frozenset[str]
    labels: frozenset[str]


def exported_metrics() -> Exported:
    """Exposition of a server's observability on a fresh registry, every family populated.

    Labelled families have no samples until first used, so every job-level method runs
    once; histogram `_bucket`/`_sum`/`_count` and counter `_total` samples count as
    exported, exactly as Prometheus ingests them.
    """
    manager = ObservabilityManager(StreamingConfig(process_metrics=True), CollectorRegistry())
    metrics = manager.require_metrics()
    manager.record_error("orders", Stage.PROCESS, "cannot convert 'x'", kind=ErrorKind.TYPE)
    metrics.set_job_status("orders", "running")
    metrics.observe_batch("orders", 0.02)
    metrics.add_records_in("orders", 10)
    metrics.add_records_out("orders", 9)
    metrics.add_records_failed("orders", 1)
    metrics.add_dlq_records("orders", 1)
    metrics.add_dlq_write_failure("orders")
    text = generate_latest(metrics.registry).decode("utf-8")
    names: set[str] = set()
    rateable: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
            if family.type == "counter" and sample.name.endswith("_total"):
                rateable.add(sample.name)
            if family.type in ("histogram", "summary") and sample.name.endswith(
                ("_bucket", "_sum", "_count")
            ):
                rateable.add(sample.name)
    return Exported(frozenset(names), frozenset(rateable), frozenset(labels))


# --- PromQL -------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
# Words of the language that look like metric names where they stand.
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)
_RATE_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\s*\(\s*([A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: strings, label matchers, ranges, label
    lists, Grafana variables, function names and keywords removed."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}


def rated_metrics(expr: str) -> set[str]:
    """Metrics passed straight to rate(), irate() or increase()."""
    return {name for _, name in _RATE_FUNCTIONS.findall(_STRING.sub('""', expr))}


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?(\w+)\s*\)\s*$", re.DOTALL)


def variable_query_expr(query: str) -> str | None:
    """The PromQL selector inside a Grafana `label_values(selector, label)` query."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"unsupported variable query {query!r}")
    return match.group(1)


# --- files ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules(ALERT_RULES) if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for r in rules(path) if "record" in r}


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the bundle, named by where it stands."""

    where: str
    expr: str


def rule_queries() -> Iterator[Query]:
    for path in RULE_FILES:
        for rule in rules(path):
            name = rule.get("alert") or rule["record"]
            yield Query(f"{path.name}: {name}", rule["expr"])


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_queries(path: Path) -> Iterator[Query]:
    """Panel targets and variable queries of one dashboard, as written."""
    board = load_dashboard(path)
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield Query(f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            expr = variable_query_expr(variable_query(variable))
            if expr is not None:
                yield Query(f"{path.name}: variable ${variable['name']}", expr)


def all_dashboard_queries() -> list[Query]:
    return [q for path in DASHBOARDS for q in dashboard_queries(path)]


def markdown_anchors(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors
