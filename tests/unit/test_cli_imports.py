"""`velo-sql` and `velo-cli` import what a command needs, when it runs.

Measured in `benchmarks/bench_cli.py`; pinned here by what is imported, not by time:
the help of every command loads no web framework, no Arrow, DuckDB, sqlglot or
Prometheus client (and velo-cli's no HTTP client).
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("fastapi", "uvicorn", "starlette", "pyarrow", "duckdb", "sqlglot", "prometheus_client")
_PROBE = """
import sys
from typer.testing import CliRunner
from velostream.cli.{tool} import app
for args in {commands}:
    assert CliRunner().invoke(app, args).exit_code == 0, args
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
SQL_COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["server", "--help"],
    ["validate", "--help"],
    ["init", "--help"],
]
CLI_COMMANDS = [["--help"], ["errors", "--help"], ["deploy", "--help"]]


def _loaded(tool: str, commands: list[list[str]]) -> set[str]:
    probe = _PROBE.format(tool=tool, commands=commands)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_velo_sql_help_imports_no_heavy_module() -> None:
    loaded = _loaded("velo_sql", SQL_COMMANDS)
    assert "velostream" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_velo_cli_help_imports_no_http_client() -> None:
    loaded = _loaded("velo_cli", CLI_COMMANDS)
    assert "velostream" in loaded
    assert loaded.isdisjoint({*HEAVY, "httpx"}), sorted(loaded & {*HEAVY, "httpx"})
