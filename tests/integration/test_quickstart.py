"""The quickstart lessons, run as a user runs them: `velo-sql run` in a copy of the demo.

Lessons 01-07, 09 and 11 must write exactly demo/quickstart/expected/; lesson 07 reports
its bad rows and still succeeds; lesson 08 (1BRC) agrees with DuckDB's one-shot answer, and
on 2,000,000 rows (slow) stays under 1 GB of peak RSS. `velo-sql validate` and
`velo-sql run` fail with a clear message and exit code 1.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import duckdb
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "demo" / "quickstart"
EXPECTED = QUICKSTART / "expected"
VELO_SQL = Path(sys.executable).parent / "velo-sql"
RSS_LIMIT = 1 << 30
LESSONS = {
    "01_passthrough.sql": "01_all_trades.jsonl",
    "02_filter.sql": "02_big_trades.csv",
    "03_transform.sql": "03_enriched_trades.csv",
    "04_aggregate.sql": "04_symbol_stats.csv",
    "05_lag.sql": "05_price_moves.csv",
    "06_tumbling.sql": "06_volume_per_minute.csv",
    "07_poison.sql": "07_clean_trades.csv",
    "09_join.sql": "09_trades_with_instruments.csv",
    "10_session.sql": "10_symbol_sessions.csv",
    "11_tables.sql": "11_tech_trades.csv",
    "12_pipeline.sql": "12_big_by_symbol.csv",
}
# Runs a command and writes its peak RSS (bytes) to argv[1]. A small process of its own
# forks the command, so the count is not inflated by a large parent's pages.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
    "open(sys.argv[1], 'w').write(str(peak))\n"
    "sys.exit(code)\n"
)


def velo_sql(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [str(VELO_SQL), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_1brc", QUICKSTART / "generate_1brc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- lessons 01-07, 09-12 ------------------------------------------------------------------


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_lesson_writes_exactly_the_expected_output(demo: Path, lesson: str) -> None:
    result = velo_sql("run", lesson, cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    output = LESSONS[lesson]
    got = (demo / "output" / output).read_bytes()
    assert got == (EXPECTED / output).read_bytes(), f"{lesson}: output/{output} differs"


def test_poison_lesson_reports_each_bad_row_and_succeeds(demo: Path) -> None:
    result = velo_sql("run", "07_poison.sql", cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout
    # in 12, out 9, failed 3
    assert re.search(r"clean_trades\W+ok\W+12\W+9\W+3\W", summary), summary
    # A group's line may wrap before its (absolute, maybe long) path: read it unwrapped.
    groups = [g.replace("\n", " ") for g in re.split(r"\n(?=\s+\d+x )", summary)]
    for line, kind in ((4, "TypeError"), (6, "ParseError"), (8, "TypeError")):
        pattern = rf"\[deserialize/{kind}\].*trades_poison\.csv:{line}\)"
        group = next((g for g in groups if re.search(pattern, g)), None)
        assert group is not None, f"line {line} ({kind}) missing from the summary:\n{summary}"
    assert "'not-a-price' is not a valid double" in summary
    assert "expected 5 fields, got 3" in summary
    assert "'lots' is not a valid integer" in summary


# -- lesson 08 --------------------------------------------------------------------------------


def duckdb_1brc(path: Path) -> list[tuple[str, float, float, float, float]]:
    """(station, min, mean rounded to 1 decimal, unrounded mean, max) by DuckDB, one shot."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT station, MIN(temperature), ROUND(AVG(temperature), 1), AVG(temperature), "
            "MAX(temperature) FROM read_csv(?, delim = ';', header = true) "
            "GROUP BY station ORDER BY station",
            [str(path)],
        ).fetchall()
    finally:
        con.close()
    return [(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows]


def assert_matches_duckdb(output: Path, measurements: Path) -> None:
    with output.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == ["station", "min_temp", "mean_temp", "max_temp"]
        ours = [(r[0], float(r[1]), float(r[2]), float(r[3])) for r in reader]
    expected = duckdb_1brc(measurements)
    assert [r[0] for r in ours] == [r[0] for r in expected]
    for (station, low, mean, high), (_, e_low, e_mean, e_mean_raw, e_high) in zip(
        ours, expected, strict=True
    ):
        assert (low, high) == (e_low, e_high), station
        if mean != e_mean:
            # A mean exactly halfway between two tenths may round either way, as the
            # float sum of its values depends on their order.
            halfway = abs(abs(e_mean_raw * 10) % 1 - 0.5) < 1e-6
            assert halfway and abs(mean - e_mean) < 0.1 + 1e-9, (station, mean, e_mean)


def run_1brc(demo: Path, rows: int, *, measure_rss: bool = False) -> tuple[Path, int | None]:
    measurements = demo / "data" / "measurements_test.txt"
    generator().generate(rows, measurements)
    output = demo / "output" / "station_stats.csv"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "BRC_INPUT": str(measurements),
        "BRC_OUTPUT": str(output),
    }
    command = [str(VELO_SQL), "run", "08_1brc.sql"]
    peak_file = demo / "peak_rss.txt"
    if measure_rss:
        command = [sys.executable, "-c", _PEAK_RSS, str(peak_file), *command]
    result = subprocess.run(
        command, cwd=demo, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"station_stats\W+ok\W+{rows:,}\W+400\W+0\W", result.stdout), result.stdout
    assert_matches_duckdb(output, measurements)
    return measurements, int(peak_file.read_text()) if measure_rss else None


def test_1brc_lesson_matches_duckdb_one_shot(demo: Path) -> None:
    run_1brc(demo, 30_000)


@pytest.mark.slow
def test_1brc_lesson_on_two_million_rows_stays_under_one_gigabyte(demo: Path) -> None:
    _, peak = run_1brc(demo, 2_000_000, measure_rss=True)
    assert peak is not None
    print(f"velo-sql run 08_1brc.sql on 2,000,000 rows: peak RSS {peak / 2**20:.0f} MiB")
    assert peak < RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"


# -- failures -----------------------------------------------------------------------------------

BROKEN = """\
-- @app: broken
CREATE STREAM big AS
SELECT id, symbol, price * quantity AS notional
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_sourze',
    'trades.path' = './data/trades.csv',
    'big.type' = 'file_sink',
    'big.path' = './output/big.csv'
);
"""


def test_validate_reports_a_broken_file_with_line_and_column(demo: Path) -> None:
    (demo / "broken.sql").write_text(BROKEN, encoding="utf-8")
    result = velo_sql("validate", "broken.sql", cwd=demo)
    assert result.returncode == 1
    report = result.stdout + result.stderr
    # the unknown source type, at the property's line 7, column 5, with the valid ones
    assert re.search(r"\b7:5\b", report), report
    assert "file_sourze" in report
    assert "file_source" in report.replace("file_sourze", "")
    assert "broken.sql" in report


def test_validate_accepts_every_lesson(demo: Path) -> None:
    for lesson in [*sorted(LESSONS), "08_1brc.sql"]:
        result = velo_sql("validate", lesson, cwd=demo)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "valid" in result.stdout


def test_run_exits_non_zero_when_a_job_fails(demo: Path) -> None:
    lesson = (demo / "02_filter.sql").read_text(encoding="utf-8")
    (demo / "missing.sql").write_text(
        lesson.replace("./data/trades.csv", "./data/no_such_trades.csv"), encoding="utf-8"
    )
    result = velo_sql("run", "missing.sql", cwd=demo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"big_trades\W+FAILED", result.stdout), result.stdout
    # The path as it was looked for: taken from the application's folder.
    missing = re.escape(str(demo / "data" / "no_such_trades.csv"))
    assert re.search(rf"job big_trades failed: .*no such file: {missing}", result.stdout), (
        result.stdout
    )


# -- run.sh (make demo) ------------------------------------------------------------------------


def test_run_sh_runs_every_lesson_and_describes_each_in_full(demo: Path) -> None:
    generator().generate(20_000, demo / "data" / "measurements.txt")  # run.sh keeps it
    result = subprocess.run(
        ["bash", str(demo / "run.sh"), str(VELO_SQL)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    lessons = sorted(p.name for p in demo.glob("[0-9][0-9]_*.sql"))
    assert len(lessons) >= 10
    for lesson in lessons:
        assert f"=== {lesson}: " in out, lesson
    # A description of two lines is shown whole, not cut after its first.
    assert "bad rows do not stop a job" in out
    assert "and the good rows go on. Run it and read the summary's error groups." in out
    assert "Outputs are in" in out
    # It names the dead-letter folder only when a lesson made one.
    assert ("velo-data/" in out) == (demo / "velo-data").is_dir()
    # The server hint, run from the repository root by test_app_paths.
    assert ".venv/bin/velo-sql deploy-app --file demo/quickstart/07_poison.sql" in out
