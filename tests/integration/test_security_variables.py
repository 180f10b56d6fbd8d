"""`${VAR}` in deployed SQL resolves only from what the operator gives on purpose.

A real `velo-sql server` whose environment holds a secret: job SQL, annotations and
WITH values that name it are refused as undefined variables, and the secret appears
nowhere (response, sink, job document, data dir). `--var NAME=VALUE` and
`VELO_VAR_NAME` are what jobs may use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.server_process import Launcher, launcher, write_trades

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

SECRET = "hunter2-do-not-leak"


def _app(source: Path, sink: Path, *, select: str, head: str = "", path: str | None = None) -> str:
    return f"""-- @app: vars
{head}CREATE STREAM out AS {select} FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'out.type' = 'file_sink', 'out.path' = '{path or sink}', 'out.format' = 'csv');
"""


def _tree_text(root: Path) -> str:
    return "".join(
        p.read_text(encoding="utf-8", errors="replace") + p.name
        for p in root.rglob("*")
        if p.is_file()
    )


@pytest.mark.parametrize(
    "where",
    ["select", "annotation", "with"],
)
def test_the_servers_environment_never_reaches_a_job(
    launcher: Launcher, tmp_path: Path, where: str
) -> None:
    source = write_trades(tmp_path / "trades.csv", 5)
    sink = tmp_path / "out.csv"
    data = tmp_path / "velo-data"
    server = launcher.server(data, env={"SECRET_KEY": SECRET})
    sql = {
        "select": _app(source, sink, select="SELECT id, '${SECRET_KEY}' AS k"),
        "annotation": _app(source, sink, select="SELECT id", head="-- @version: ${SECRET_KEY}\n"),
        "with": _app(source, sink, select="SELECT id", path=f"{tmp_path}/${{SECRET_KEY}}.csv"),
    }[where]
    response = server.http.post("/jobs", json={"sql": sql})
    assert response.status_code == 400, response.text
    assert "undefined variable ${SECRET_KEY}" in response.text
    assert SECRET not in response.text
    assert SECRET not in server.http.get("/jobs").text
    assert not sink.exists()
    assert not list(tmp_path.glob(f"{SECRET}*"))
    assert SECRET not in _tree_text(data)
    assert SECRET not in server.http.get("/errors").text


def test_operator_variables_come_from_var_and_velo_var(launcher: Launcher, tmp_path: Path) -> None:
    source = write_trades(tmp_path / "trades.csv", 5)
    server = launcher.server(
        tmp_path / "velo-data",
        args=["--var", "GREETING=hello", "--var", "SUFFIX=from-flag"],
        env={"SECRET_KEY": SECRET, "VELO_VAR_OUT_DIR": str(tmp_path), "VELO_VAR_SUFFIX": "env"},
    )
    sql = _app(
        source,
        tmp_path / "unused.csv",
        select="SELECT id, '${GREETING}' AS greeting",
        head="-- @version: ${SUFFIX}\n",
        path="${OUT_DIR}/greetings.csv",
    )
    assert server.deploy(sql) == ["out"]
    doc = server.wait_state("out", "completed")
    assert doc["version"] == "from-flag"  # --var wins over VELO_VAR_
    lines = (tmp_path / "greetings.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,greeting"
    assert [line.split(",")[1] for line in lines[1:]] == ["hello"] * 5


def test_a_malformed_var_is_refused_at_start(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.server(tmp_path / "velo-data", args=["--var", "no-equals"], wait=False)
    assert server.wait_exit() != 0
    assert "expected NAME=VALUE" in server.log()
