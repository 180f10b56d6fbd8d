"""The rest of the bundle: Grafana provisioning, the compose file, `make monitor`, docs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

from tests.unit.monitoring.assets import (
    DASHBOARDS,
    DOCS,
    MONITORING,
    ROOT,
    Exported,
    alert_rules,
    load_yaml,
)

COMPOSE = MONITORING / "docker-compose.yml"
PROVISIONING = MONITORING / "grafana" / "provisioning"
SCRIPT = ROOT / "scripts" / "monitor.sh"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts = {}
    for volume in _compose()["services"][service]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def _flag(service: str, name: str) -> str:
    for arg in _compose()["services"][service]["command"]:
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"{service} has no --{name}")


def test_compose_runs_prometheus_alertmanager_and_grafana_on_loopback() -> None:
    services = _compose()["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana"}
    for service in services.values():
        assert service["network_mode"] == "host"  # to reach a server bound to 127.0.0.1
    assert _flag("prometheus", "web.listen-address") == "127.0.0.1:9090"
    assert _flag("alertmanager", "web.listen-address") == "127.0.0.1:9093"
    assert _flag("alertmanager", "cluster.listen-address") == ""
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_compose_mounts_the_bundle_where_each_service_reads_it() -> None:
    prometheus = _mounts("prometheus")
    config = PurePosixPath(_flag("prometheus", "config.file"))
    assert prometheus[str(config.parent)] / config.name == MONITORING / "prometheus" / config.name
    alertmanager = _mounts("alertmanager")
    config = PurePosixPath(_flag("alertmanager", "config.file"))
    assert alertmanager[str(config.parent)] / config.name == (
        MONITORING / "alertmanager" / "alertmanager.yml"
    )
    grafana = _mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == PROVISIONING
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "velostream.yml")["providers"]
    dashboards_dir = grafana[provider["options"]["path"]]
    assert sorted(dashboards_dir.glob("*.json")) == sorted(DASHBOARDS)
    home = _compose()["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert dashboards_dir / PurePosixPath(home).name in DASHBOARDS


def test_provisioned_datasource_is_the_compose_prometheus() -> None:
    (source,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "velostream-prometheus"
    assert source["url"] == f"http://{_flag('prometheus', 'web.listen-address')}"
    assert source["isDefault"] is True
    scrape = load_yaml(MONITORING / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape


def test_makefile_monitor_target_runs_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^monitor: system-deps\n\tbash scripts/monitor\.sh$", makefile, re.M)
    assert "prometheus-alertmanager" in makefile


def test_monitor_script_is_valid_bash_and_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_docs_describe_every_exported_family(exported: Exported) -> None:
    text = DOCS.read_text(encoding="utf-8")
    families = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        if name.startswith("velo_job_batch_duration_seconds")
        else name
        for name in exported.names
        if not name.endswith("_created")
    }
    assert sorted(f for f in families if f"`{f}`" not in text) == []


def test_docs_have_a_runbook_section_per_alert_and_the_logging_options() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for rule in alert_rules():
        assert f"\n### {rule['alert']}\n" in text
    for option in ("VELO_LOG_FILE", "velo_deployment.log", "--log-format json", "--log-syslog"):
        assert option in text, option
