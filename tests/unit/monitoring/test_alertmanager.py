"""The example Alertmanager routing: amtool accepts it and routes each severity."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.unit.monitoring.assets import ALERTMANAGER_CONFIG, alert_rules, require_tool


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_amtool_check_config_accepts_the_routing_file() -> None:
    result = _amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


RECEIVER_BY_SEVERITY = {
    "critical": "velostream-pager",
    "warning": "velostream-team",
    "info": "velostream-digest",
}


def _routes_to(receiver: str, labels: list[str]) -> subprocess.CompletedProcess[str]:
    return _amtool(
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_each_alert_is_routed_by_its_severity(rule: dict[str, Any]) -> None:
    labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
    result = _routes_to(RECEIVER_BY_SEVERITY[rule["labels"]["severity"]], labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_other_alerts_go_to_the_default_receiver() -> None:
    result = _routes_to("default", ["alertname=DiskFull", "severity=critical"])
    assert result.returncode == 0, result.stdout + result.stderr
