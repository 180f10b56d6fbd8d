"""`velo-sql` and `velo-cli` import what a command needs, when it runs.

Measured in `benchmarks/bench_cli.py`; pinned here by what is imported, not by time:
the help of every command loads no web framework, no Arrow, DuckDB, sqlglot or
Prometheus client (and velo-cli's no HTTP client); `velo-sql validate FILE` loads what
binding needs (DuckDB, Arrow, sqlglot's DuckDB dialect) and nothing of the command-line
app (Typer, the Pydantic it coerces with), the server, the engine or observability.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from velostream.cli.velo_sql import _plain_run

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
# The console script's own path (`main`), as a user's shell runs it.
# `exit_now` ends the process at once; here it raises, so the probe can print.
_MAIN_PROBE = """
import sys
import velostream.cli.velo_sql as velo_sql
def exit_now(code):
    raise SystemExit(code)
velo_sql.exit_now = exit_now
main = velo_sql.main
sys.argv = ["velo-sql", *{args}]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(" ".join(sorted(sys.modules)))
"""
# What `velo-sql validate` needs none of: the app's argument parsing, the output
# colouring of a clean result, the server, Kafka, metrics, config-file YAML.
NOT_FOR_VALIDATE = (
    *HEAVY[:3],
    *HEAVY[-1:],
    "typer",
    "click",
    "pydantic",
    "rich",
    "yaml",
    "httpx",
    "confluent_kafka",
    "pandas",
    "polars",
    "velostream.server",
    "velostream.api",
    "velostream.engine",
    "velostream.observability",
    "velostream.dlq",
    "pyarrow.parquet",
    "pyarrow.dataset",
)


# What a stateless file job runs without: Kafka's codec (only a query setting headers
# needs it), the executors of the other kinds of query, the Prometheus client (only a
# scrape needs it: `--metrics-port`).
NOT_FOR_A_FILE_FILTER = (
    "velostream.datasource.kafka",
    "confluent_kafka",
    "prometheus_client",
    "velostream.engine.aggregate",
    "velostream.engine.distinct",
    "velostream.engine.row_window",
    "velostream.engine.stream_join",
    "velostream.engine.union",
)


def _loaded(tool: str, commands: list[list[str]]) -> set[str]:
    probe = _PROBE.format(tool=tool, commands=commands)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _main_loaded(args: list[str], cwd: Path) -> tuple[str, set[str]]:
    """What `velo-sql ARGS` printed before its module list, and the modules it loaded."""
    probe = _MAIN_PROBE.format(args=args)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    printed, _, modules = done.stdout.rstrip("\n").rpartition("\n")
    return printed, set(modules.split())


def _under(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules of `loaded` that are one of `names` or inside one."""
    return sorted(m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in names))


def test_velo_sql_help_imports_no_heavy_module() -> None:
    loaded = _loaded("velo_sql", SQL_COMMANDS)
    assert "velostream" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_velo_cli_help_imports_no_http_client() -> None:
    loaded = _loaded("velo_cli", CLI_COMMANDS)
    assert "velostream" in loaded
    unneeded = {*HEAVY, "httpx", "orjson"}  # orjson: only the commands printing JSON
    assert loaded.isdisjoint(unneeded), sorted(loaded & unneeded)


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


def test_velo_sql_validate_loads_what_binding_needs_and_no_more(tmp_path: Path) -> None:
    """`velo-sql validate` binds against the sampled file (DuckDB, Arrow, sqlglot) and
    loads neither the command-line app nor anything that runs or serves jobs."""
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    (tmp_path / "app.sql").write_text(
        "CREATE STREAM o AS SELECT id, qty * 2 AS q2 FROM t WHERE qty > 10\n"
        "WITH ('t.type' = 'file_source', 't.path' = 'in.csv',\n"
        "      'o.type' = 'file_sink', 'o.path' = 'out.csv');\n"
    )
    printed, loaded = _main_loaded(["validate", "app.sql"], tmp_path)
    assert printed == "app.sql: valid (1 job(s): o)"
    assert {"duckdb", "pyarrow", "sqlglot.dialects.duckdb"} <= loaded  # it did bind
    assert not _under(loaded, NOT_FOR_VALIDATE), _under(loaded, NOT_FOR_VALIDATE)
    dialects = {m for m in loaded if m.startswith(("sqlglot.dialects.", "sqlglot.parsers."))}
    others = {m for m in dialects if m.rpartition(".")[2] not in {"dialect", "duckdb", "base"}}
    assert not others, sorted(others)


def test_velo_sql_help_through_main_imports_no_heavy_module(tmp_path: Path) -> None:
    """The console script's `--help` (not only the app's) loads Typer but no Pydantic."""
    printed, loaded = _main_loaded(["--help"], tmp_path)
    assert "validate" in printed
    assert "typer" in loaded
    heavy = (*HEAVY, "pydantic", "velostream.sql", "velostream.datasource")
    assert not _under(loaded, heavy), _under(loaded, heavy)


def test_velo_sql_run_file_runs_without_the_command_line_app(tmp_path: Path) -> None:
    """`velo-sql run FILE --data-dir DIR`, the form typed most, runs the application
    without loading Typer, Click or Pydantic."""
    (tmp_path / "in.csv").write_text("id,qty\n1,5\n2,50\n")
    (tmp_path / "app.sql").write_text(
        "CREATE STREAM o AS SELECT id FROM t WHERE qty > 10\n"
        "WITH ('t.type' = 'file_source', 't.path' = 'in.csv',\n"
        "      'o.type' = 'file_sink', 'o.path' = 'out.csv');\n"
    )
    _, loaded = _main_loaded(["run", "app.sql", "--data-dir", "velo-data"], tmp_path)
    assert (tmp_path / "out.csv").read_text() == "id\n2\n"  # it ran
    assert not _under(loaded, ("typer", "click", "pydantic")), _under(loaded, ("typer",))
    assert not _under(loaded, NOT_FOR_A_FILE_FILTER), _under(loaded, NOT_FOR_A_FILE_FILTER)


def test_velo_sql_run_of_a_group_by_loads_no_dataset_or_parquet_module(tmp_path: Path) -> None:
    """Arrow's grouping runs on Acero's nodes: `pyarrow.acero` would load
    `pyarrow.dataset` and Parquet, some 25 ms of start-up, for nothing it uses."""
    (tmp_path / "in.csv").write_text("city;t\nOslo;1.5\nLima;20.0\nOslo;2.5\n")
    (tmp_path / "app.sql").write_text(
        "CREATE TABLE o AS SELECT city, MIN(t) AS lo, AVG(t) AS mean FROM m\n"
        "GROUP BY city EMIT FINAL\n"
        "WITH ('m.type' = 'file_source', 'm.path' = 'in.csv', 'm.delimiter' = ';',\n"
        "      'o.type' = 'file_sink', 'o.path' = 'out.csv');\n"
    )
    _, loaded = _main_loaded(["run", "app.sql", "--data-dir", "velo-data"], tmp_path)
    assert sorted((tmp_path / "out.csv").read_text().splitlines()) == [
        "Lima,20.0,20.0",
        "Oslo,1.5,2.0",
        "city,lo,mean",
    ]  # it ran, on the grouped path
    assert "velostream.engine.final" in loaded
    unused = ("pyarrow.dataset", "pyarrow.acero", "pyarrow.parquet")
    assert not _under(loaded, unused), _under(loaded, unused)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["run", "a.sql"], {}, "velo-data"),
        (["run", "a.sql"], {"VELO_DATA_DIR": "/d"}, "/d"),
        (["run", "a.sql", "--data-dir", "x"], {"VELO_DATA_DIR": "/d"}, "x"),
        (["run", "a.sql", "--data-dir=x"], {}, "x"),
        (["run", "a.sql", "--data-dir"], {}, None),
        (["run", "a.sql", "--metrics-port", "0"], {}, None),
        (["run", "--help"], {}, None),
        (["run", "a.sql", "b.sql"], {}, None),
        (["run", "a.sql"], {"VELO_LOG_LEVEL": "nonsense"}, None),  # the app says why
        (["validate", "a.sql"], {}, None),
    ],
)
def test_only_the_plain_run_forms_skip_the_app(
    args: list[str], env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VELO_DATA_DIR", "VELO_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = _plain_run(args)
    assert (None if found is None else str(found)) == expected
