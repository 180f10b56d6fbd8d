"""benchmarks/bench_server.py runs end to end with a few jobs (no figures checked).

Its latency figures are measured at full size (50 jobs) by the benchmark itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server_process import clean_env

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_server.py"


def test_server_benchmark_runs_with_a_few_jobs() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "3", "--requests", "30", "--rows-per-tick", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "3 of 3 jobs running" in result.stdout, output
    for endpoint in ("/metrics", "/errors", "/health"):
        row = re.search(
            rf"^{endpoint}\s+([\d.]+) ms\s+([\d.]+) ms\s+([\d.]+) ms", result.stdout, re.M
        )
        assert row is not None, output
