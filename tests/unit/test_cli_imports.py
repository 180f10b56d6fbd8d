"""`velo-sql --help` and `velo-sql validate` import what they need, when they need it.

Measured in `benchmarks/bench_cli.py`; pinned here by what is imported, not by time:
the help of every command loads no web framework, no Arrow, DuckDB, sqlglot or
Prometheus client.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("fastapi", "uvicorn", "starlette", "pyarrow", "duckdb", "sqlglot", "prometheus_client")
_PROBE = """
import sys
from typer.testing import CliRunner
from velostream.cli.velo_sql import app
for args in (["--help"], ["run", "--help"], ["server", "--help"], ["validate", "--help"]):
    assert CliRunner().invoke(app, args).exit_code == 0, args
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_help_imports_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "velostream" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
