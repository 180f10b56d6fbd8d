"""Whole processes, as a user waits for them.

1. Start-up: `velo-sql --help`, `velo-sql validate` on the quickstart's filter lesson
   and `velo-cli --help`, against `python -c "import duckdb"` (goals: help ≤ 1.5×,
   validate ≤ 2×). For scale, a process importing only the libraries validate binds
   with (DuckDB, Arrow's CSV reader and compute, sqlglot's DuckDB dialect) is timed too.
2. Runs: `velo-sql run app.sql` against one Python process that runs DuckDB's one-shot
   COPY of the same query, for bench_engine's filter + projection (`--rows`, default
   2M), 1BRC (`--brc-rows`, default 5M) and tumbling EMIT FINAL cases (goals ≥ 0.6×,
   0.6× and 0.8× the one-shot speed: the ratio printed is DuckDB's time / ours). Each
   case's floor is timed too: a process that imports validate's libraries (as every
   `velo-sql run` must) and then runs DuckDB's one-shot COPY. A run that processed as
   fast as DuckDB's whole query would take that long; a goal above the floor's ratio is
   beyond any run that imports those libraries.
3. Dirty input: `velo-sql run` of the filter + projection job on the trades with 10%
   poison rows (bench_engine's case 5: half a wrong field count, half a price that is
   not a number) against the same run on the clean trades (goal ≥ 0.8×: the ratio
   printed is clean time / dirty time).

Each case runs as a fresh process, alternated with its baseline so that the machine's
noise falls on both (the dirty case flips the order every round); the medians and the
median of the per-round ratios are printed, with the median CPU seconds (user + system,
every thread) of each run: less noisy than wall time on a shared machine.

    python benchmarks/bench_cli.py [--rounds 7] [--rows N] [--brc-rows N] [--no-runs]
                                   [--dirty-only] [--against OTHER/src]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_engine import CASES, Case, job_sql, write_measurements, write_trades
from common import velo_sql

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "demo" / "quickstart" / "02_filter.sql"


# What `velo-sql validate` cannot do without: its floor.
VALIDATE_LIBRARIES = (
    "import duckdb, pyarrow.compute, pyarrow.csv, sqlglot; "
    "sqlglot.parse_one('SELECT 1', read='duckdb')"
)

# As a user's shell runs them: with compiled bytecode (written by an untimed first run).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def seconds(command: list[str], cwd: Path) -> float:
    return timed(command, cwd)[0]


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env or ENV)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def startup(rounds: int) -> None:
    bin_dir = Path(velo_sql()).parent
    cases = {
        'python -c "import duckdb"': [sys.executable, "-c", "import duckdb"],
        "velo-sql --help": [velo_sql(), "--help"],
        "velo-sql validate 02_filter.sql": [velo_sql(), "validate", LESSON.name],
        "velo-cli --help": [str(bin_dir / "velo-cli"), "--help"],
        "(validate's libraries alone)": [sys.executable, "-c", VALIDATE_LIBRARIES],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for command in cases.values():  # untimed: bytecode written, files cached
        seconds(command, LESSON.parent)
    for _ in range(rounds):
        for name, command in cases.items():  # alternated: each round runs every case
            times[name].append(seconds(command, LESSON.parent))
    baseline = statistics.median(times['python -c "import duckdb"'])
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'× import duckdb':>16}")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"{name:<36} {median:9.3f} {min(measured):7.3f} {median / baseline:16.2f}")


# bench_engine's cases run whole: filter + projection, 1BRC, tumbling EMIT FINAL.
RUN_CASES = (1, 3, 4)
CLEAN_CASE, DIRTY_CASE = 1, 5  # filter + projection, and the same on 10% poison rows
GOAL_DIRTY = 0.8


def one_shot(case: Case, data: Path, output: Path, imports: str = "import duckdb") -> list[str]:
    """A Python process running DuckDB's COPY of the case's query: the baseline.

    With `imports=VALIDATE_LIBRARIES`: the floor of any `velo-sql run` that imports
    the libraries it checks with (they come first) and processes no faster than DuckDB.
    """
    src = f"read_csv('{data / case.input_name}'{case.csv_options})"
    query = case.duckdb.format(src=src)
    code = (
        f"{imports}\nimport duckdb\n"
        f"duckdb.sql({f'COPY ({query}) TO {str(output)!r} (HEADER, DELIMITER {chr(44)!r})'!r})"
    )
    return [sys.executable, "-c", code]


def runs(
    rounds: int, rows: int, brc_rows: int, batch_size: int, against: Path | None = None
) -> None:
    """Each case's `velo-sql run` against DuckDB's one-shot process; with `against` (a
    `src` folder of another version of velostream), that version's run too, in turn."""
    other = None if against is None else {**ENV, "PYTHONPATH": str(against.resolve())}
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        work = Path(tmp)
        write_trades(work / "trades.csv", rows)
        write_measurements(work / "measurements.txt", brc_rows)
        print(
            f"\n{'whole process':<52} {'ours s':>8} {'duckdb s':>9} {'duckdb/ours':>12}"
            f" {'ours CPU s':>11} {'duckdb CPU s':>13}"
        )
        for case in (c for c in CASES if c.number in RUN_CASES):
            app = work / f"case{case.number}.sql"
            app.write_text(job_sql(case, work, work / "ours.csv", batch_size), encoding="utf-8")
            ours_cmd = [velo_sql(), "run", str(app), "--data-dir", str(work / "velo-data")]
            base_cmd = one_shot(case, work, work / "duckdb.csv")
            floor_cmd = one_shot(case, work, work / "floor.csv", VALIDATE_LIBRARIES)
            ours: list[tuple[float, float]] = []
            base: list[tuple[float, float]] = []
            floor: list[tuple[float, float]] = []
            then: list[tuple[float, float]] = []
            seconds(ours_cmd, work)  # untimed: the input in the page cache for both
            for _ in range(rounds):  # alternated
                ours.append(timed(ours_cmd, work))
                base.append(timed(base_cmd, work))
                floor.append(timed(floor_cmd, work))
                if other is not None:
                    then.append(timed(ours_cmd, work, other))
            n = brc_rows if case.input_name == "measurements.txt" else rows
            title = f"{case.title} ({n:,} rows)"
            o, o_cpu = (statistics.median(m) for m in zip(*ours, strict=True))
            b, b_cpu = (statistics.median(m) for m in zip(*base, strict=True))
            f, f_cpu = (statistics.median(m) for m in zip(*floor, strict=True))
            print(f"{title:<52} {o:8.2f} {b:9.2f} {b / o:11.2f}x {o_cpu:11.2f} {b_cpu:13.2f}")
            label = "  floor: the libraries, then DuckDB's query"
            print(f"{label:<52} {f:8.2f} {b:9.2f} {b / f:11.2f}x {f_cpu:11.2f}")
            if then:
                t, t_cpu = (statistics.median(m) for m in zip(*then, strict=True))
                label = f"  the same, velostream from {against}"
                print(f"{label:<52} {t:8.2f} {b:9.2f} {b / t:11.2f}x {t_cpu:11.2f}")


def dirty_runs(rounds: int, rows: int, batch_size: int) -> None:
    """`velo-sql run` on the poisoned trades against the same job on the clean ones."""
    with tempfile.TemporaryDirectory(prefix="bench_cli_dirty_") as tmp:
        work = Path(tmp)
        write_trades(work / "trades.csv", rows)
        poisoned = write_trades(work / "trades_poison.csv", rows, poison=0.10)
        commands = {}
        for number in (CLEAN_CASE, DIRTY_CASE):
            case = next(c for c in CASES if c.number == number)
            app = work / f"case{number}.sql"
            out = work / f"ours{number}.csv"
            app.write_text(job_sql(case, work, out, batch_size), encoding="utf-8")
            data_dir = work / f"velo-data{number}"
            commands[number] = [velo_sql(), "run", str(app), "--data-dir", str(data_dir)]
            seconds(commands[number], work)  # untimed: the input in the page cache
        times: dict[int, list[float]] = {CLEAN_CASE: [], DIRTY_CASE: []}
        cpu: dict[int, list[float]] = {CLEAN_CASE: [], DIRTY_CASE: []}
        for round_ in range(rounds):
            order = (CLEAN_CASE, DIRTY_CASE) if round_ % 2 == 0 else (DIRTY_CASE, CLEAN_CASE)
            for number in order:
                wall, used = timed(commands[number], work)
                times[number].append(wall)
                cpu[number].append(used)
        clean, dirty = times[CLEAN_CASE], times[DIRTY_CASE]
        ratio = statistics.median(c / d for c, d in zip(clean, dirty, strict=True))
        title = f"dirty input, {poisoned:,} of {rows:,} rows bad"
        print(f"\n{'whole process':<52} {'clean s':>8} {'dirty s':>9} {'clean/dirty':>12}")
        print(
            f"{title:<52} {statistics.median(clean):8.2f} {statistics.median(dirty):9.2f} "
            f"{ratio:11.2f}x  goal >= {GOAL_DIRTY}x: {'OK' if ratio >= GOAL_DIRTY else 'MISSED'}"
        )
        print(
            f"{'  CPU seconds (user + system)':<52} {statistics.median(cpu[CLEAN_CASE]):8.2f} "
            f"{statistics.median(cpu[DIRTY_CASE]):9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=2_000_000, help="trades for the runs")
    parser.add_argument("--brc-rows", type=int, default=5_000_000, help="1BRC measurements")
    parser.add_argument("--batch-size", type=int, default=200_000)
    parser.add_argument("--no-runs", action="store_true", help="start-up only")
    parser.add_argument("--dirty-only", action="store_true", help="the dirty-input case only")
    parser.add_argument(
        "--against",
        type=Path,
        help="a src folder of another version (git archive REV src | tar -x -C DIR): "
        "its runs too, in the same rounds",
    )
    args = parser.parse_args()
    if not args.dirty_only:
        startup(args.rounds)
    if not args.no_runs and not args.dirty_only:
        runs(args.rounds, args.rows, args.brc_rows, args.batch_size, args.against)
    if not args.no_runs:
        dirty_runs(args.rounds, args.rows, args.batch_size)


if __name__ == "__main__":
    main()
