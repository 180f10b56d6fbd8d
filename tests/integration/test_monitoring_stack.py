"""`make monitor`'s script: Prometheus and Alertmanager on loopback, stopped by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.unit.monitoring.assets import ROOT, require_tool

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "monitor.sh"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_monitor_starts_prometheus_and_alertmanager_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    prom_port, am_port = _free_port(), _free_port()
    target = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "PROMETHEUS_PORT": str(prom_port),
        "ALERTMANAGER_PORT": str(am_port),
        "VELO_TARGET": target,
        "TMPDIR": str(tmp_path),
    }
    # Its own session, so that a failing test can still end the children it started.
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any(line.startswith("  Logs, data:") for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        output = "".join(lines)
        assert f"http://127.0.0.1:{prom_port}" in output
        assert f"http://127.0.0.1:{am_port}" in output
        assert f"http://{target}/metrics" in output
        state = Path(re.search(r"Logs, data:\s+(\S+)", output).group(1))  # type: ignore[union-attr]
        assert state.parent == tmp_path

        with httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=5) as api:
            assert httpx.get(f"http://127.0.0.1:{am_port}/-/ready", timeout=5).status_code == 200
            groups = api.get("/api/v1/rules").json()["data"]["groups"]
            assert {g["name"] for g in groups} == {"velostream.recording", "velostream.alerts"}

            # Service discovery settles a few seconds after start.
            def discovered() -> tuple[list[str], list[str]]:
                targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
                managers = api.get("/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
                return [t["scrapeUrl"] for t in targets], [m["url"] for m in managers]

            while discovered() != (
                [f"http://{target}/metrics"],
                [f"http://127.0.0.1:{am_port}/api/v2/alerts"],
            ):
                assert time.monotonic() < deadline, discovered()
                time.sleep(0.5)

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output + rest
        assert "stopping" in rest
        assert not _listening(prom_port) and not _listening(am_port)
        assert not state.exists()
    finally:
        if process.poll() is None:
            process.terminate()  # the script's trap stops Prometheus and Alertmanager
            try:
                process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate(timeout=10)


def test_monitor_refuses_a_malformed_target(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "VELO_TARGET": "http://x/metrics", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "VELO_TARGET must be host:port" in result.stderr
    assert list(tmp_path.iterdir()) == []
