"""Queries are bound to their sources' columns before they run (issue 13, item 11).

On main, `velo-sql validate` said "valid" for each statement below, and each failed in
its first batch with a raw DuckDB Binder Error (one naming the engine's `__rn`,
reported five times over). Here a real `velo-sql validate`, a real `velo-sql run` and
a real server's deploy each refuse them up front, at their line:column, in the user's
own names; and validation reads no more of a source than its sample.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.server_process import Launcher, clean_env, console_script, launcher

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

# (SELECT, where its problem is, what the problem says)
CASES = [
    (
        "SELECT id, prce FROM src",
        "2:12",
        "unknown column prce (did you mean price?): source src has id, symbol, price, ts",
    ),
    (
        "SELECT id, CAST(price AS DECIMLA) AS p FROM src",
        "2:26",
        "unknown type DECIMLA (did you mean DECIMAL",
    ),
    (
        "SELECT symbol, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(1m)",
        "2:55",
        "WINDOW TUMBLING(1m) has no event time: source src has no _timestamp column",
    ),
    (
        "SELECT id, price * 2 AS dbl FROM tiny",
        "2:12",
        "price * 2: no operator * takes (VARCHAR, INTEGER); in source tiny, price is VARCHAR, "
        "as inferred from the first lines of {tiny} ('x' at {tiny}:3 is not a number)",
    ),
]


def _statement(tmp_path: Path, index: int, select: str) -> str:
    trades = tmp_path / "trades.csv"
    if not trades.exists():
        trades.write_text(
            "id,symbol,price,ts\n1,AAPL,10.5,2024-01-01 00:00:00\n2,MSFT,11,2024-01-01 00:00:01\n"
        )
        (tmp_path / "tiny.csv").write_text("id,symbol,price\n1,AAPL,10.5\n2,MSFT,x\n")
    kind = "TABLE" if "GROUP BY" in select else "STREAM"
    out = tmp_path / f"out{index}.csv"
    return (
        f"CREATE {kind} out{index} AS\n{select}\n"
        f"WITH ('src.type' = 'file_source', 'src.path' = '{trades}',\n"
        f"      'tiny.type' = 'file_source', 'tiny.path' = '{tmp_path / 'tiny.csv'}',\n"
        f"      'out{index}.type' = 'file_sink', 'out{index}.path' = '{out}');\n"
    )


def _expected(tmp_path: Path, index: int, at: str, said: str) -> str:
    line, column = at.split(":")
    line = str(int(line) + 6 * (index - 1))  # each statement is 5 lines and a blank one
    return f"statement {index} (out{index}) at {line}:{column}: " + said.format(
        tiny=tmp_path / "tiny.csv"
    )


def _velo_sql(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("velo-sql"), *args],
        cwd=tmp_path,
        env=clean_env({"COLUMNS": "2000"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_validate_and_run_refuse_what_would_not_bind(tmp_path: Path) -> None:
    app = tmp_path / "app.sql"
    app.write_text("\n".join(_statement(tmp_path, i, c[0]) for i, c in enumerate(CASES, 1)))
    done = _velo_sql(tmp_path, "validate", str(app))
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(CASES), done.stderr
    for index, ((_, at, said), error) in enumerate(zip(CASES, errors, strict=True), start=1):
        assert error.startswith("error: " + _expected(tmp_path, index, at, said)), error
    for text in (done.stdout, done.stderr):
        assert "Binder" not in text and "Catalog Error" not in text and "__" not in text

    run = _velo_sql(tmp_path, "run", str(app), "--data-dir", str(tmp_path / "data"))
    assert run.returncode == 1
    assert [line for line in run.stderr.splitlines() if line.startswith("error: ")] == errors
    assert "Binder" not in run.stdout + run.stderr
    assert not list(tmp_path.glob("out*.csv"))  # nothing ran


def test_a_deploy_is_refused_at_line_and_column(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.server(tmp_path / "velo-data")
    for select, at, said in CASES:
        response = server.http.post("/jobs", json={"sql": _statement(tmp_path, 1, select)})
        assert response.status_code == 400, response.text
        (problem,) = response.json()["problems"]
        assert problem.startswith(_expected(tmp_path, 1, at, said)), problem
        assert "Binder" not in response.text and "__rn" not in response.text
    assert server.jobs() == {}
    assert not list(tmp_path.glob("out*.csv"))


def test_a_huge_file_validates_from_its_sample(tmp_path: Path) -> None:
    huge = tmp_path / "huge.csv"
    lines = "".join(f"{i},S{i % 5},{i * 0.5}\n" for i in range(1000))
    with open(huge, "wb") as out:
        out.write(b"id,symbol,price\n" + lines.encode())
        try:
            out.truncate(256 << 30)  # 256 GiB, sparse: reading it all would take minutes
        except OSError as exc:
            pytest.skip(f"no sparse files here: {exc}")
    app = tmp_path / "app.sql"
    app.write_text(
        "CREATE STREAM out AS\nSELECT id, price * 2 AS dbl, prce FROM src\n"
        f"WITH ('src.type' = 'file_source', 'src.path' = '{huge}',\n"
        f"      'out.type' = 'file_sink', 'out.path' = '{tmp_path / 'out.csv'}');\n"
    )
    started = time.monotonic()
    done = _velo_sql(tmp_path, "validate", str(app))
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert "at 2:30: unknown column prce (did you mean price?)" in done.stderr
