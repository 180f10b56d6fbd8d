"""A real Prometheus (Debian's package) scraping a real Velostream HTTP server.

The server is `create_app(manager)` under uvicorn on loopback; a scenario thread plays
jobs that read records, fail records at several stages (recorded through
`ErrorTracker.record_error`), write and fail dead letters and observe batches, while
Prometheus scrapes every second with the shipped prometheus.yml (intervals shortened,
targets replaced) and the shipped rule files, unchanged. Through Prometheus' HTTP
API: every dashboard and rule expression parses and returns data, every rule
evaluates cleanly, and the error-ratio and new-error-group alerts become active.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from prometheus_client import CollectorRegistry

from tests.unit.monitoring.assets import (
    PROMETHEUS_CONFIG,
    RULE_FILES,
    SCRAPE_JOB,
    Query,
    all_dashboard_queries,
    exported_metrics,
    require_tool,
    rule_queries,
)
from velostream.api import create_app
from velostream.errors import ErrorKind, Stage
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.error_tracking_helper import ErrorTracker

pytestmark = pytest.mark.integration

NODE = DeploymentContext.with_all("node-it", "Integration Node", "eu-test-1", "3.1.4")
# Grafana's variables, as the dashboards' "All" selection expands them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "5m",
    "$node": ".*",
    "$job": ".*",
}
# Queries that may legitimately return nothing in this scenario, with the reason. The
# scenario below gives every dashboard panel and rule something to show, so none.
MAY_BE_EMPTY: dict[str, str] = {}
DEADLINE_SECONDS = 40.0
# Stage and kind of each error the busy job records per tick.
ERROR_MIX = (
    (Stage.SOURCE, ErrorKind.CONNECTION, "broker unreachable"),
    (Stage.DESERIALIZE, ErrorKind.PARSE, "column 'price': cannot convert 'n/a' to DOUBLE"),
    (Stage.PROCESS, ErrorKind.TYPE, "Conversion Error: could not convert string to INT32"),
    (Stage.SINK, ErrorKind.IO, "sink ./out/orders.csv: No space left on device"),
    (Stage.COMMIT, ErrorKind.TIMEOUT, "offset commit timed out"),
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _letters(n: int) -> str:
    """A digit-free token per n, so each message fingerprints as a new group."""
    word = ""
    while True:
        n, r = divmod(n, 20)
        word += "ghijklmnopqrstuvwxyz"[r]
        if n == 0:
            return word


class Scenario:
    """Jobs of a running server, played in a thread until stopped."""

    def __init__(self, manager: ObservabilityManager, tick: float = 0.2) -> None:
        self.manager = manager
        self.metrics = manager.require_metrics()
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scenario", daemon=True)

    def start(self) -> None:
        m = self.metrics
        for job in ("orders", "payments", "idle", "backfill"):
            self.manager.set_deployment_context_for_job(job, NODE)
            m.set_job_status(job, "starting")
            m.set_job_status(job, "running")
        # payments crashed; idle is Running and never reads; backfill finished.
        ErrorTracker.record_error(
            self.manager,
            "payments",
            "sink topic payments-out not found",
            stage=Stage.JOB,
            kind=ErrorKind.CONFIGURATION,
        )
        m.set_job_status("payments", "failed")
        m.add_records_in("backfill", 5000)
        m.add_records_out("backfill", 5000)
        m.set_job_status("backfill", "completed")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.tick):
            self.step(i)
            i += 1

    def step(self, i: int) -> None:
        m = self.metrics
        m.add_records_in("orders", 50)
        m.add_records_out("orders", 45)
        m.add_records_failed("orders", 5)
        m.add_dlq_records("orders", 5)
        m.add_dlq_write_failure("orders")
        m.observe_batch("orders", 0.005 + (i % 10) * 0.03)
        # 5 errors per 50 records: a 10% error ratio, over the alert's 5%.
        for n, (stage, kind, message) in enumerate(ERROR_MIX):
            if n == 0:
                message = f"{message} via route {_letters(i)}"  # a new group every tick
            ErrorTracker.record_error(
                self.manager, "orders", message, stage=stage, kind=kind, record_ref=f"orders:{i}"
            )


@dataclass
class Stack:
    api: httpx.Client
    server_target: str
    dead_target: str
    log: Path

    def query(self, expr: str) -> dict[str, Any]:
        response = self.api.get("/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            return {"error": body.get("error", response.text)}
        return body


def _wait(
    what: str,
    check: Callable[[], tuple[bool, Any]],
    deadline: float,
    stack: Stack | None = None,
) -> Any:
    """Poll `check` (done?, value) until done; fail with the last value and the log."""
    value: Any = None
    while time.monotonic() < deadline:
        done, value = check()
        if done:
            return value
        time.sleep(0.5)
    log = stack.log.read_text(errors="replace")[-3000:] if stack else ""
    pytest.fail(f"timed out waiting for {what}: {value}\n{log}")


def _test_config(tmp: Path, server: str, dead: str) -> Path:
    """The shipped prometheus.yml with test intervals, loopback targets and absolute
    rule paths. The shipped rule files load unchanged: an alert with `for:` shows as
    pending from its first true evaluation, so no test copy with shorter `for:` is
    needed for "pending or firing"."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(path) for path in RULE_FILES]
    config.pop("alerting", None)  # no Alertmanager in this test
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == SCRAPE_JOB]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job.pop("file_sd_configs", None)
    job["static_configs"] = [
        {"targets": [server], "labels": {"node": "it", "environment": "test"}},
        # nothing listens here: `up` is 0 and VelostreamTargetDown has data
        {"targets": [dead], "labels": {"node": "gone", "environment": "test"}},
    ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig(node_context=NODE, log_throttle_seconds=60.0), CollectorRegistry()
    )
    manager.initialize()
    server_port, dead_port, prom_port = _free_port(), _free_port(), _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(manager),
            host="127.0.0.1",
            port=server_port,
            log_level="warning",
            lifespan="off",
        )
    )
    server_thread = threading.Thread(target=server.run, name="velo-http", daemon=True)
    server_thread.start()
    scenario = Scenario(manager)
    config = _test_config(tmp, f"127.0.0.1:{server_port}", f"127.0.0.1:{dead_port}")
    log = tmp / "prometheus.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=5.0)
    stack = Stack(api, f"127.0.0.1:{server_port}", f"127.0.0.1:{dead_port}", log)
    try:
        deadline = time.monotonic() + 15
        _wait("the HTTP server", lambda: (server.started, None), deadline)
        scenario.start()

        def ready() -> tuple[bool, Any]:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                return api.get("/-/ready").status_code == 200, None
            except httpx.TransportError as exc:
                return False, exc

        _wait("Prometheus to be ready", ready, deadline, stack)
        yield stack
    finally:
        api.close()
        scenario.stop()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        server.should_exit = True
        server_thread.join(timeout=10)


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, expr
    return expr


def test_prometheus_scrapes_every_family_the_server_exports(stack: Stack) -> None:
    expected = {n for n in exported_metrics().names if n.startswith("velo_")}

    def missing() -> tuple[bool, Any]:
        names = set(stack.api.get("/api/v1/label/__name__/values").json()["data"])
        return not expected - names, sorted(expected - names)

    _wait("every velo_* family in Prometheus", missing, time.monotonic() + DEADLINE_SECONDS, stack)
    # `job` stays the streaming job's name (honor_labels), not `exported_job`.
    result = stack.query('velo_job_status{job="orders", status="running"}')["data"]["result"]
    assert [r["metric"]["node"] for r in result] == ["it"]


def test_every_dashboard_and_rule_expression_parses_and_returns_data(stack: Stack) -> None:
    queries: list[Query] = [
        Query(q.where, _substitute(q.expr)) for q in [*all_dashboard_queries(), *rule_queries()]
    ]
    assert len(queries) > 30
    errors: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    pending = list(queries)
    while pending and time.monotonic() < deadline:
        still = []
        for q in pending:
            body = stack.query(q.expr)
            if "error" in body:
                errors[q.where] = str(body["error"])
            elif not body["data"]["result"]:
                still.append(q)
        pending = still
        if pending:
            time.sleep(1)
    empty = {q.where for q in pending}
    assert errors == {}, errors
    assert empty == set(MAY_BE_EMPTY), f"no data for: {sorted(empty - set(MAY_BE_EMPTY))}"


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    def evaluated() -> tuple[bool, Any]:
        groups = stack.api.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        unevaluated = [r["name"] for r in rules if r["health"] != "ok"]
        return bool(rules) and not unevaluated, rules if rules and not unevaluated else unevaluated

    rules = _wait("every rule evaluated", evaluated, time.monotonic() + DEADLINE_SECONDS, stack)
    expected = sum(len(yaml.safe_load(p.read_text())["groups"][0]["rules"]) for p in RULE_FILES)
    assert len(rules) == expected
    assert [r["name"] for r in rules if r.get("lastError")] == []


def _active_alerts(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    alerts: dict[str, list[dict[str, Any]]] = {}
    for alert in stack.api.get("/api/v1/alerts").json()["data"]["alerts"]:
        if alert["state"] in ("pending", "firing"):
            alerts.setdefault(alert["labels"]["alertname"], []).append(alert)
    return alerts


def test_error_ratio_and_new_error_group_alerts_become_active(stack: Stack) -> None:
    wanted = {"VelostreamJobErrorRatioHigh", "VelostreamNewErrorGroup"}

    def active() -> tuple[bool, Any]:
        alerts = _active_alerts(stack)
        return wanted <= set(alerts), alerts

    alerts = _wait("the alerts", active, time.monotonic() + DEADLINE_SECONDS, stack)
    (ratio,) = alerts["VelostreamJobErrorRatioHigh"]
    assert ratio["labels"]["job"] == "orders"
    assert ratio["state"] == "pending"  # for: 5m
    # The description carries the node's identity from velo_build_info.
    for value in ("node-it", "Integration Node", "eu-test-1", "orders"):
        assert value in ratio["annotations"]["description"]
    assert 0.05 < float(ratio["value"]) < 0.2
    (group,) = alerts["VelostreamNewErrorGroup"]
    assert group["state"] == "firing"  # no for:
    assert group["labels"]["node_id"] == "node-it"
    assert group["labels"]["instance"] == stack.server_target


def test_job_failed_and_target_down_name_the_job_and_the_dead_target(stack: Stack) -> None:
    def active() -> tuple[bool, Any]:
        alerts = _active_alerts(stack)
        return {"VelostreamJobFailed", "VelostreamTargetDown"} <= set(alerts), alerts

    alerts = _wait("the alerts", active, time.monotonic() + DEADLINE_SECONDS, stack)
    assert [a["labels"]["job"] for a in alerts["VelostreamJobFailed"]] == ["payments"]
    assert [a["labels"]["instance"] for a in alerts["VelostreamTargetDown"]] == [stack.dead_target]
