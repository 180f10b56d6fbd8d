"""`velo-sql init NAME`, then the new application validated and run from elsewhere,
each command a real process.

The sample must visibly filter: of its 12 trades, exactly the 5 worth 10,000 or more
reach the output. A NAME that exists and is not an empty folder is refused with exit
code 2 and one line, and nothing is written.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.integration.server_process import velo_sql

pytestmark = pytest.mark.integration

KEPT = [
    ["id", "symbol", "notional"],
    ["2", "MSFT", "12067.5"],
    ["4", "AAPL", "19000.0"],
    ["6", "NVDA", "13125.0"],
    ["8", "AMZN", "10692.0"],
    ["11", "TSLA", "12400.0"],
]


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text(encoding="utf-8").splitlines()))


def test_init_then_run_from_another_folder(tmp_path: Path) -> None:
    made = velo_sql("init", "tour", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    app = tmp_path / "tour"
    assert sorted(p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()) == [
        "README.md",
        "app.sql",
        "data/trades.csv",
    ]
    assert "velo-sql run tour/app.sql" in made.stdout
    rows = read_csv(app / "data" / "trades.csv")
    assert len(rows) == 13  # a header and a dozen rows
    readme = (app / "README.md").read_text(encoding="utf-8")
    for said in ("velo-sql validate tour/app.sql", "velo-sql run tour/app.sql", "output/"):
        assert said in readme

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = velo_sql("validate", "../tour/app.sql", cwd=elsewhere)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid (1 job(s): big_trades)" in checked.stdout
    ran = velo_sql("run", str(app / "app.sql"), cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert read_csv(app / "output" / "big_trades.csv") == KEPT
    assert list(elsewhere.iterdir()) == []


def test_init_into_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    made = velo_sql("init", str(tmp_path / "empty"), cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "-- @app: empty" in (tmp_path / "empty" / "app.sql").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_init_onto_something_there_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "taken"
    if kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("mine\n", encoding="utf-8")
    else:
        target.write_text("mine\n", encoding="utf-8")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    refused = velo_sql("init", "taken", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("taken exists and is "), lines
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
