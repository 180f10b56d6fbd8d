"""Whole-process start-up of the command-line tools, against `python -c "import duckdb"`.

What a user waits for before anything happens: `velo-sql --help`, `velo-sql validate`
on the quickstart's filter lesson, and `velo-cli --help`, each as a fresh process,
alternated with the baseline so that the machine's noise falls on both. Prints the
median of each and its ratio to the baseline's median (goals: help ≤ 1.5×, validate
≤ 2×).

    python benchmarks/bench_cli.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import velo_sql

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "demo" / "quickstart" / "02_filter.sql"


def seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bin_dir = Path(velo_sql()).parent
    cases = {
        'python -c "import duckdb"': [sys.executable, "-c", "import duckdb"],
        "velo-sql --help": [velo_sql(), "--help"],
        "velo-sql validate 02_filter.sql": [velo_sql(), "validate", LESSON.name],
        "velo-cli --help": [str(bin_dir / "velo-cli"), "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, command in cases.items():  # alternated: each round runs every case
            times[name].append(seconds(command, LESSON.parent))
    baseline = statistics.median(times['python -c "import duckdb"'])
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'× import duckdb':>16}")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"{name:<36} {median:9.3f} {min(measured):7.3f} {median / baseline:16.2f}")


if __name__ == "__main__":
    main()
