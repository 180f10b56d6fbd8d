"""`velo-sql run --metrics-port`: says where it serves, `--linger` keeps serving after
the jobs end until Ctrl-C, and a busy port is refused before any job runs."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.server_process import (
    clean_env,
    console_script,
    free_port,
    velo_sql,
    wait_for,
)

pytestmark = pytest.mark.integration

QUICKSTART = Path(__file__).resolve().parents[2] / "demo" / "quickstart"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    target = tmp_path / "quickstart"
    target.mkdir()
    shutil.copytree(QUICKSTART / "data", target / "data")
    shutil.copy(QUICKSTART / "02_filter.sql", target)
    return target


@contextmanager
def lingering(demo: Path, port: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`velo-sql run 02_filter.sql --metrics-port PORT --linger`, once its jobs have ended
    and it lingers: the process and its stderr file. Killed afterwards if still alive."""
    command = [console_script("velo-sql"), "run", "02_filter.sql", "--metrics-port", port]
    stderr = demo / "stderr.txt"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [*command, "--linger"],
            cwd=demo,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        wait_for("the linger notice", lambda: "the jobs have ended" in stderr.read_text())
        yield process, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_linger_serves_the_finished_jobs_metrics_until_interrupted(demo: Path) -> None:
    port = free_port()
    with lingering(demo, str(port)) as (process, stderr):
        said = stderr.read_text()
        assert f"serving /metrics on http://127.0.0.1:{port}/metrics" in said
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # The finished job's counts are still there to scrape: 12 in, 5 out.
        assert 'velo_job_records_in_total{job="big_trades"} 12.0' in body
        assert 'velo_job_records_out_total{job="big_trades"} 5.0' in body
        assert process.poll() is None  # still lingering
        process.send_signal(signal.SIGINT)
        out = process.communicate(timeout=20)[0]
    assert process.returncode == 0, out + stderr.read_text()
    assert "big_trades" in out  # the summary was printed before lingering


def test_port_0_prints_the_port_it_bound_and_serves_there(demo: Path) -> None:
    with lingering(demo, "0") as (process, stderr):
        lines = stderr.read_text().splitlines()
        served = re.findall(r"http://127\.0\.0\.1:(\d+)/metrics", "\n".join(lines))
        assert len(served) == 2, lines  # the serving line and the linger notice
        assert served[0] == served[1] != "0"
        assert all(len(line) <= 80 for line in lines), lines  # no notice wraps
        body = httpx.get(f"http://127.0.0.1:{served[0]}/metrics", timeout=5).text
        assert 'velo_job_records_out_total{job="big_trades"} 5.0' in body
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    assert process.returncode == 0, stderr.read_text()


def test_a_busy_metrics_port_is_refused_before_any_job_runs(demo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = velo_sql("run", "02_filter.sql", "--metrics-port", str(port), cwd=demo)
    assert result.returncode == 1
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in result.stderr
    assert not (demo / "output").exists()  # no job ran


def test_linger_needs_a_metrics_port(demo: Path) -> None:
    result = velo_sql("run", "02_filter.sql", "--linger", cwd=demo)
    assert result.returncode == 2
    assert "--metrics-port" in result.stderr
