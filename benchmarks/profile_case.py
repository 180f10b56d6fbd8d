"""Run one bench_engine case several times in one process, for a profiler to sample.

The profile summaries of issue 16 (dirty input: case 5; 1BRC: case 3) were taken so:

    py-spy record -r 200 -f raw -o case5.txt -- \\
        python benchmarks/profile_case.py --case 5 --rows 2000000 --batch 100000 --runs 3
    py-spy record -r 200 -f raw -o case3.txt -- \\
        python benchmarks/profile_case.py --case 3 --rows 5000000 --batch 200000 --runs 3

then summed by own samples per function with `python benchmarks/profile_top.py
case5.txt` (the top 10; `--thread read-` for the reader threads alone). The
stream–table join of issue 14 (case 6, which also writes its instruments file) was
sampled with `--threads --idle` added:

    py-spy record -r 200 -f raw --threads --idle -o case6.txt -- \\
        python benchmarks/profile_case.py --case 6 --rows 1000000 --batch 200000 --runs 3

The input is made before the timed runs and kept in `--data-dir` (a temporary directory
by default).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_engine import (
    CASES,
    run_ours,
    write_instruments,
    write_keyed_trades,
    write_measurements,
    write_trades,
)

from velostream.cli.startup import choose_arrow_pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", type=int, choices=(1, 3, 4, 5, 6), default=5)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    [case] = [c for c in CASES if c.number == args.case]
    choose_arrow_pool()  # as `velo-sql run` and the server do
    makers: dict[str, Callable[[Path], object]] = {
        "trades.csv": lambda p: write_trades(p, args.rows),
        "trades_poison.csv": lambda p: write_trades(p, args.rows, poison=0.10),
        "measurements.txt": lambda p: write_measurements(p, args.rows),
        "trades_keyed.csv": lambda p: write_keyed_trades(p, args.rows),
        "instruments.csv": write_instruments,
    }
    with tempfile.TemporaryDirectory(prefix="profile_case_") as tmp:
        work = Path(tmp)
        data = args.data_dir or work
        data.mkdir(parents=True, exist_ok=True)
        for name in (case.input_name, *(file for _, file in case.tables)):
            if not (data / name).exists():
                makers[name](data / name)
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            run_ours(case, data, work, args.batch)
            print(f"case {case.number} run {run}: {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
