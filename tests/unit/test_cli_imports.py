"""`velo-sql` and `velo-cli` import what a command needs, when it runs.

Measured in `benchmarks/bench_cli.py`; pinned here by what is imported, not by time:
the help of every command loads no web framework, no Arrow, DuckDB, sqlglot or
Prometheus client (and velo-cli's no HTTP client).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_velo_sql_run_without_metrics_port_imports_no_web_framework(tmp_path: Path) -> None:
    """`run` serves HTTP only with --metrics-port: it loads no web framework otherwise."""
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    (tmp_path / "app.sql").write_text(
        "CREATE STREAM o AS SELECT id FROM t WHERE qty > 10\n"
        "WITH ('t.type' = 'file_source', 't.path' = 'in.csv',\n"
        "      'o.type' = 'file_sink', 'o.path' = 'out.csv');\n"
    )
    commands = [["run", str(tmp_path / "app.sql"), "--data-dir", str(tmp_path / "velo-data")]]
    loaded = _loaded("velo_sql", commands)
    assert (tmp_path / "out.csv").read_text() == "id\n2\n"  # it ran
    web = {"fastapi", "uvicorn", "starlette"}
    assert loaded.isdisjoint(web), sorted(loaded & web)
