"""Engine throughput, each case side by side with DuckDB running the same query one-shot.

Our side goes through the real `velo-sql run` path (its Arrow memory pool,
`load_application` + `run_application`: file source → JobProcessor → DuckDB
micro-batches → file sink, with the error system on); DuckDB reads the same file with
`read_csv` and writes its answer with `COPY ... TO`, so both sides parse, compute and
format. Cases:

1. filter + projection, CSV → CSV
2. GROUP BY with EMIT CHANGES (one output row per input row); DuckDB: the same running
   values as window functions (`ROWS UNBOUNDED PRECEDING`, no final ORDER BY)
3. 1BRC: MIN/AVG/MAX per station, EMIT FINAL (demo/quickstart/generate_1brc.py input)
4. a tumbling window (1 minute) per symbol, EMIT FINAL
5. case 1 with 10% poison rows (half a wrong field count, half a value failing its
   column type); DuckDB: `ignore_errors = true`. Each repeat also runs our clean case 1
   right beside it (the order flipping from repeat to repeat), for the dirty/clean ratio
6. a stream–table join: the trades (keys drawn from 11,000) LEFT JOIN a file of 10,000
   instruments (the table side), CSV → CSV; DuckDB: the same join one-shot
7. session windows (gap 10 s) per symbol, EMIT FINAL (a symbol trades every ~4 s, so
   sessions of ~12 trades); DuckDB: gaps-and-islands with LAG and a running SUM
8. sliding windows (5 minutes, advancing 1 minute) per symbol, EMIT FINAL; DuckDB: each
   row copied into its 5 windows with `generate_series`

Goals (issues 3 and 16, this 2-core machine): 1, 3 and 6 ≥ 0.6× DuckDB one-shot;
2 ≥ 1,000,000 rows/s; 5 ≥ 0.8× the speed of our clean run of 1 (the median over
repeats of clean seconds / dirty seconds, each pair run side by side). Then a
bounded-memory check: `velo-sql run` of demo/quickstart/08_1brc.sql on `--rss-rows`
rows must peak under 1 GB RSS.

Usage: python benchmarks/bench_engine.py [--rows N] [--repeat R] [--batch-sizes A,B]
       [--cases 1,2,...] [--rss-rows N] [--data-dir DIR]
Figures are medians over `--repeat` runs (the machine is shared and noisy). Exit code:
0 all goals met, 1 a goal missed, 2 our output row counts differ from DuckDB's.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from prometheus_client import CollectorRegistry
from rich.console import Console

from velostream.cli.load import load_application
from velostream.cli.run import run_application
from velostream.cli.startup import choose_arrow_pool
from velostream.observability.manager import ObservabilityManager, StreamingConfig

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "demo" / "quickstart"
SYMBOLS = 400
ROWS_PER_SECOND = 100  # event time advances one second every 100 rows
RSS_LIMIT = 1 << 30
GOAL_RATIO = 0.6
GOAL_CHANGES = 1_000_000
GOAL_POISON = 0.8
START = np.datetime64("2024-01-15T09:30:00", "s")


# -- data -------------------------------------------------------------------------


def _symbols() -> np.ndarray:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    rng = np.random.default_rng(7)
    names: set[str] = set()
    while len(names) < SYMBOLS:
        names.add("".join(rng.choice(letters, size=int(rng.integers(2, 6)))))
    return np.array(sorted(names), dtype=object)


def trades_table(rows: int, start_id: int = 1, seed: int = 1) -> pa.Table:
    """id,symbol,price,quantity,ts: ~400 symbols, ts in order (100 rows a second)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start_id, start_id + rows, dtype=np.int64)
    symbols = _symbols()
    return pa.table(
        {
            "id": ids,
            "symbol": pa.array(symbols[rng.integers(0, SYMBOLS, size=rows)], pa.string()),
            "price": np.round(rng.uniform(10.0, 500.0, size=rows), 2),
            "quantity": rng.integers(1, 1000, size=rows),
            "ts": pa.array(START + (ids - 1) // ROWS_PER_SECOND, pa.timestamp("s")),
        }
    )


def write_trades(path: Path, rows: int, poison: float = 0.0) -> int:
    """Write the trades CSV in chunks; return the number of poison lines."""
    bad = 0
    chunk = 1_000_000
    rng = np.random.default_rng(99)
    with path.open("wb") as out:
        out.write(b"id,symbol,price,quantity,ts\n")
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            table = trades_table(n, start_id=first + 1, seed=first + 1)
            if not poison:
                opts = pa_csv.WriteOptions(include_header=False, quoting_style="none")
                pa_csv.write_csv(table, out, opts)
                continue
            lines = _csv_lines(table)
            hit = rng.random(n) < poison
            short = hit & (rng.random(n) < 0.5)
            typed = hit & ~short
            ids = pc.cast(table.column("id"), pa.string())
            # a wrong field count: "id,symbol,price" only
            truncated = pc.binary_join_element_wise(
                ids, table.column("symbol"), pc.cast(table.column("price"), pa.string()), ","
            )
            # a value failing its column type: the price is not a number
            not_a_price = pc.binary_join_element_wise(
                ids,
                table.column("symbol"),
                "n/a",
                pc.cast(table.column("quantity"), pa.string()),
                pc.cast(table.column("ts"), pa.string()),
                ",",
            )
            lines = pc.if_else(pa.array(short), truncated, lines)
            lines = pc.if_else(pa.array(typed), not_a_price, lines)
            out.write("\n".join(lines.to_pylist()).encode() + b"\n")
            bad += int(hit.sum())
    return bad


INSTRUMENTS = 10_000


def write_keyed_trades(path: Path, rows: int) -> int:
    """id,key,price,quantity with keys K0..K10999: 1 in 11 has no instrument."""
    chunk = 1_000_000
    with path.open("wb") as out:
        out.write(b"id,key,price,quantity\n")
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            rng = np.random.default_rng(first + 5)
            keys = rng.integers(0, INSTRUMENTS * 11 // 10, size=n)
            table = pa.table(
                {
                    "id": np.arange(first + 1, first + n + 1, dtype=np.int64),
                    "key": pc.binary_join_element_wise(
                        "K", pc.cast(pa.array(keys), pa.string()), ""
                    ),
                    "price": np.round(rng.uniform(10.0, 500.0, size=n), 2),
                    "quantity": rng.integers(1, 1000, size=n),
                }
            )
            opts = pa_csv.WriteOptions(include_header=False, quoting_style="none")
            pa_csv.write_csv(table, out, opts)
    return 0


def write_instruments(path: Path) -> int:
    """key,name,sector,lot for K0..K9999."""
    keys = [f"K{i}" for i in range(INSTRUMENTS)]
    table = pa.table(
        {
            "key": keys,
            "name": [f"Instrument {i}" for i in range(INSTRUMENTS)],
            "sector": [f"S{i % 11}" for i in range(INSTRUMENTS)],
            "lot": [(i % 7 + 1) * 10 for i in range(INSTRUMENTS)],
        }
    )
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="none"))
    return 0


def _csv_lines(table: pa.Table) -> pa.Array:
    cells = [pc.cast(table.column(name), pa.string()) for name in table.column_names]
    return pc.binary_join_element_wise(*cells, ",").combine_chunks()


def write_measurements(path: Path, rows: int) -> None:
    spec = importlib.util.spec_from_file_location("generate_1brc", QUICKSTART / "generate_1brc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(rows, path)


# -- the two sides ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    number: int
    title: str
    input_name: str
    ours: str  # job SQL; {input}, {output}, {batch} are filled in
    duckdb: str  # a SELECT over {src} (and each table side by its name)
    csv_options: str = ""
    tables: tuple[tuple[str, str], ...] = ()  # (source name, input file): table sides


CASES = [
    Case(
        1,
        "filter + projection CSV -> CSV",
        "trades.csv",
        """
CREATE STREAM big_trades AS
SELECT id, symbol, price, quantity, price * quantity AS notional
FROM trades
WHERE price * quantity > 100000
""",
        "SELECT id, symbol, price, quantity, price * quantity AS notional FROM {src} "
        "WHERE price * quantity > 100000",
    ),
    Case(
        2,
        "GROUP BY, EMIT CHANGES",
        "trades.csv",
        """
CREATE TABLE symbol_stats AS
SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume, AVG(price) AS avg_price
FROM trades
GROUP BY symbol
EMIT CHANGES
""",
        "SELECT symbol, COUNT(*) OVER w AS trades, SUM(quantity) OVER w AS volume, "
        "AVG(price) OVER w AS avg_price FROM {src} "
        "WINDOW w AS (PARTITION BY symbol ORDER BY id ROWS UNBOUNDED PRECEDING)",
    ),
    Case(
        3,
        "1BRC GROUP BY, EMIT FINAL",
        "measurements.txt",
        """
CREATE TABLE station_stats AS
SELECT station, MIN(temperature) AS min_temp, ROUND(AVG(temperature), 1) AS mean_temp,
       MAX(temperature) AS max_temp
FROM measurements
GROUP BY station
ORDER BY station
EMIT FINAL
""",
        "SELECT station, MIN(temperature) AS min_temp, ROUND(AVG(temperature), 1) AS mean_temp, "
        "MAX(temperature) AS max_temp FROM {src} GROUP BY station ORDER BY station",
        csv_options=", delim = ';'",
    ),
    Case(
        4,
        "tumbling window 1m, EMIT FINAL",
        "trades.csv",
        """
CREATE TABLE volume_per_minute AS
SELECT symbol, _window_start AS minute_start, COUNT(*) AS trades, SUM(quantity) AS volume,
       MAX(price) AS high
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1m)
EMIT FINAL
""",
        "SELECT symbol, time_bucket(INTERVAL 1 minute, ts) AS minute_start, COUNT(*) AS trades, "
        "SUM(quantity) AS volume, MAX(price) AS high FROM {src} GROUP BY ALL "
        "ORDER BY minute_start, symbol",
    ),
    Case(
        5,
        "case 1 with 10% poison rows",
        "trades_poison.csv",
        """
CREATE STREAM big_trades AS
SELECT id, symbol, price, quantity, price * quantity AS notional
FROM trades
WHERE price * quantity > 100000
""",
        "SELECT id, symbol, price, quantity, price * quantity AS notional FROM {src} "
        "WHERE price * quantity > 100000",
        csv_options=", ignore_errors = true, columns = {'id': 'BIGINT', 'symbol': 'VARCHAR', "
        "'price': 'DOUBLE', 'quantity': 'BIGINT', 'ts': 'TIMESTAMP'}",
    ),
    Case(
        6,
        "stream-table LEFT JOIN, 10k keys",
        "trades_keyed.csv",
        """
CREATE STREAM enriched AS
SELECT t.id, t.key, i.name, i.sector, t.price * t.quantity * i.lot AS notional
FROM trades t
LEFT JOIN instruments i ON t.key = i.key
""",
        "SELECT t.id, t.key, i.name, i.sector, t.price * t.quantity * i.lot AS notional "
        "FROM {src} t LEFT JOIN {instruments} i ON t.key = i.key",
        tables=(("instruments", "instruments.csv"),),
    ),
]


_SESSIONS = (
    "SELECT *, SUM(new_session) OVER (PARTITION BY symbol ORDER BY ts, id ROWS UNBOUNDED "
    "PRECEDING) AS session FROM (SELECT *, CASE WHEN ts - LAG(ts) OVER (PARTITION BY symbol "
    "ORDER BY ts, id) <= INTERVAL 10 SECOND THEN 0 ELSE 1 END AS new_session FROM {src})"
)
_WINDOWS = (
    "SELECT *, time_bucket(INTERVAL 1 minute, ts) - step * INTERVAL 1 minute AS window_start "
    "FROM (SELECT *, UNNEST(generate_series(0, 4)) AS step FROM {src})"
)
CASES += [
    Case(
        7,
        "session window 10s, EMIT FINAL",
        "trades.csv",
        """
CREATE TABLE trading_sessions AS
SELECT symbol, _window_start AS session_start, _window_end AS session_end,
       COUNT(*) AS trades, SUM(quantity) AS volume, MAX(price) AS high
FROM trades
GROUP BY symbol
WINDOW SESSION(ts, 10s)
EMIT FINAL
""",
        "SELECT symbol, MIN(ts) AS session_start, MAX(ts) + INTERVAL 10 SECOND AS session_end, "
        f"COUNT(*) AS trades, SUM(quantity) AS volume, MAX(price) AS high FROM ({_SESSIONS}) "
        "GROUP BY symbol, session ORDER BY session_start, symbol",
    ),
    Case(
        8,
        "sliding window 5m/1m, EMIT FINAL",
        "trades.csv",
        """
CREATE TABLE volume_5m AS
SELECT symbol, _window_start AS window_start, COUNT(*) AS trades, SUM(quantity) AS volume,
       MAX(price) AS high
FROM trades
GROUP BY symbol
WINDOW SLIDING(ts, 5m, 1m)
EMIT FINAL
""",
        "SELECT symbol, window_start, COUNT(*) AS trades, SUM(quantity) AS volume, "
        f"MAX(price) AS high FROM ({_WINDOWS}) GROUP BY ALL ORDER BY window_start, symbol",
    ),
]


def job_sql(case: Case, data: Path, output: Path, batch_size: int) -> str:
    source = case.input_name.split(".")[0].replace("_poison", "").replace("_keyed", "")
    sink = case.ours.split("CREATE ")[1].split()[1]
    delimiter = f"    '{source}.delimiter' = ';',\n" if case.number == 3 else ""
    tables = "".join(
        f"    '{name}.type' = 'file_source',\n    '{name}.path' = '{data / file}',\n"
        for name, file in case.tables
    )
    return (
        f"-- @app: bench_{case.number}\n-- @batch_size: {batch_size}\n{case.ours}"
        f"WITH (\n{tables}"
        f"    '{source}.type' = 'file_source',\n"
        f"    '{source}.path' = '{data / case.input_name}',\n"
        f"    '{source}.format' = 'csv',\n{delimiter}"
        f"    '{sink}.type' = 'file_sink',\n"
        f"    '{sink}.path' = '{output}',\n"
        f"    '{sink}.format' = 'csv'\n);\n"
    )


@dataclass
class Outcome:
    seconds: float
    cpu: float  # CPU seconds of this process (all its threads)
    rows_out: int
    failed: int


def run_ours(case: Case, data: Path, work: Path, batch_size: int) -> Outcome:
    sql_path = work / f"case{case.number}.sql"
    output = work / f"case{case.number}_ours.csv"
    sql_path.write_text(job_sql(case, data, output, batch_size), encoding="utf-8")
    started, cpu = time.perf_counter(), time.process_time()
    app = load_application(sql_path)
    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig(process_metrics=False), CollectorRegistry()
    )
    manager.initialize()
    try:
        runs = run_application(app, manager, Console(file=io.StringIO()), work / "velo-data")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        manager.shutdown()
    (run,) = runs
    if run.failed:
        raise SystemExit(f"case {case.number}: our job failed: {run.error}")
    return Outcome(seconds, cpu, run.stats.records_out, run.stats.records_failed)


def run_duckdb(case: Case, data: Path, work: Path) -> Outcome:
    output = work / f"case{case.number}_duckdb.csv"
    src = f"read_csv('{data / case.input_name}'{case.csv_options})"
    started, cpu = time.perf_counter(), time.process_time()
    con = duckdb.connect()
    sides = {name: f"read_csv('{data / file}')" for name, file in case.tables}
    query = case.duckdb.format(src=src, **sides)
    written = con.execute(f"COPY ({query}) TO '{output}' (HEADER, DELIMITER ',')").fetchall()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    return Outcome(seconds, cpu, int(written[0][0]) if written else 0, 0)


# -- bounded memory -------------------------------------------------------------------


def peak_rss_of_1brc(data: Path, work: Path) -> tuple[int, float, int]:
    """Run `velo-sql run 08_1brc.sql` on data/measurements_rss.txt: (peak RSS, s, exit)."""
    velo = Path(sys.executable).parent / "velo-sql"
    env = dict(
        os.environ,
        BRC_INPUT=str(data / "measurements_rss.txt"),
        BRC_OUTPUT=str(work / "rss_station_stats.csv"),
        COLUMNS="200",
    )
    return measure_peak_rss(
        [str(velo), "run", str(QUICKSTART / "08_1brc.sql"), "--data-dir", str(work / "rss")],
        env=env,
        cwd=work,
    )


# Runs a command and writes its peak RSS (bytes) to argv[1]. The command is forked by
# this small process, not by the benchmark: a child forked from a large parent counts
# the parent's pages in its ru_maxrss until it execs.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
    "open(sys.argv[1], 'w').write(str(peak))\n"
    "sys.exit(code)\n"
)


def measure_peak_rss(
    command: list[str], *, env: dict[str, str], cwd: Path
) -> tuple[int, float, int]:
    """Run `command`; return its peak RSS in bytes, wall seconds and exit code."""
    peak_file = cwd / "peak_rss.txt"
    started = time.perf_counter()
    with (cwd / "rss_stdout.txt").open("wb") as out:
        code = subprocess.call(
            [sys.executable, "-c", _PEAK_RSS, str(peak_file), *command],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return int(peak_file.read_text()), time.perf_counter() - started, code


# -- main -------------------------------------------------------------------------------


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / max(seconds, 1e-9):>12,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-sizes", default="100000,200000")
    parser.add_argument("--cases", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--rss-rows", type=int, default=10_000_000, help="0 skips the check")
    parser.add_argument("--data-dir", type=Path, help="keep generated inputs here and reuse them")
    args = parser.parse_args(argv)
    logging.getLogger("velostream").addHandler(logging.NullHandler())
    logging.getLogger("velostream").propagate = False
    choose_arrow_pool()  # as `velo-sql run` and the server do
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    wanted = {int(c) for c in args.cases.split(",")}

    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        work = Path(tmp)
        data = args.data_dir or work
        data.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        suffix = f"_{args.rows}"
        inputs = {
            "trades.csv": lambda p: write_trades(p, args.rows),
            "trades_poison.csv": lambda p: write_trades(p, args.rows, poison=0.10),
            "measurements.txt": lambda p: write_measurements(p, args.rows),
            "trades_keyed.csv": lambda p: write_keyed_trades(p, args.rows),
            "instruments.csv": write_instruments,
        }
        for name, make in inputs.items():
            kept = data / (name.replace(".", suffix + ".", 1))
            needed = {c.input_name for c in CASES if c.number in wanted}
            needed |= {f for c in CASES if c.number in wanted for _, f in c.tables}
            if 5 in wanted:  # its ratio is against the clean run, side by side
                needed.add("trades.csv")
            if name not in needed:
                continue
            if not kept.exists():
                make(kept)
            link = work / name
            if link != kept:
                link.unlink(missing_ok=True)
                link.symlink_to(kept)
        print(f"inputs: {args.rows:,} rows each, made in {time.perf_counter() - started:.1f}s")
        print(f"repeat {args.repeat}x, median; batch sizes {batch_sizes}")
        print(
            f"load average at start {os.getloadavg()[0]:.1f}; "
            "ratio = median over runs of DuckDB's time / ours, each pair run back to back"
        )
        header = (
            f"{'case':<34}{'batch':>8}{'ours rows/s':>13}{'DuckDB rows/s':>15}{'ratio':>7}"
            f"{'ours rows/CPU-s':>17}{'DuckDB rows/CPU-s':>19}"
        )
        print(header)
        print("-" * len(header))
        rates: dict[tuple[int, int], float] = {}
        verdicts: list[str] = []
        clean_case = next(c for c in CASES if c.number == 1)
        poison_pairs: dict[int, list[tuple[Outcome, Outcome]]] = {b: [] for b in batch_sizes}
        mismatched: list[str] = []
        for case in CASES:
            if case.number not in wanted:
                continue
            theirs: list[Outcome] = []
            ours: dict[int, list[Outcome]] = {b: [] for b in batch_sizes}
            for repeat in range(args.repeat):
                theirs.append(run_duckdb(case, work, work))
                for batch in batch_sizes:
                    if case.number != 5:
                        ours[batch].append(run_ours(case, work, work, batch))
                        continue
                    if repeat % 2:  # dirty first every other repeat: drift falls on both
                        dirty = run_ours(case, work, work, batch)
                        clean = run_ours(clean_case, work, work, batch)
                    else:
                        clean = run_ours(clean_case, work, work, batch)
                        dirty = run_ours(case, work, work, batch)
                    ours[batch].append(dirty)
                    poison_pairs[batch].append((clean, dirty))
            their_s = statistics.median(o.seconds for o in theirs)
            their_cpu = statistics.median(o.cpu for o in theirs)
            for batch in batch_sizes:
                runs = ours[batch]
                our_s = statistics.median(o.seconds for o in runs)
                our_cpu = statistics.median(o.cpu for o in runs)
                ratio = statistics.median(
                    t.seconds / o.seconds for t, o in zip(theirs, runs, strict=True)
                )
                rate = args.rows / our_s
                rates[case.number, batch] = rate
                label = f"{case.number}. {case.title}"
                failed = f"; failed {runs[0].failed:,}" if runs[0].failed else ""
                print(
                    f"{label:<34}{batch:>8,}{_rate(args.rows, our_s)} {_rate(args.rows, their_s)}"
                    f"  {ratio:5.2f}x{_rate(args.rows, our_cpu):>17}"
                    f"{_rate(args.rows, their_cpu):>19}"
                    f"   (rows out: ours {runs[0].rows_out:,}, DuckDB {theirs[0].rows_out:,}"
                    f"{failed})"
                )
                if runs[0].rows_out != theirs[0].rows_out:
                    mismatched.append(f"{label} @ {batch:,}")
                if case.number in (1, 3, 6):
                    verdicts.append(
                        _verdict(label, batch, f"{ratio:.2f}x DuckDB", ratio >= GOAL_RATIO)
                    )
                elif case.number == 2:
                    verdicts.append(
                        _verdict(label, batch, f"{rate:,.0f} rows/s", rate >= GOAL_CHANGES)
                    )
        for batch, pairs in poison_pairs.items():
            if not pairs:
                continue
            clean_s = statistics.median(c.seconds for c, _ in pairs)
            dirty_s = statistics.median(d.seconds for _, d in pairs)
            ratio = statistics.median(c.seconds / d.seconds for c, d in pairs)
            figure = f"{ratio:.2f}x (median clean {clean_s:.2f}s, dirty {dirty_s:.2f}s)"
            verdicts.append(_verdict("5. poison vs clean 1", batch, figure, ratio >= GOAL_POISON))
        print()
        for line in verdicts:
            print(line)
        ok = all(line.endswith("OK") for line in verdicts)

        if args.rss_rows:
            rss_input = data / f"measurements_rss_{args.rss_rows}.txt"
            if not rss_input.exists():
                write_measurements(rss_input, args.rss_rows)
            (work / "measurements_rss.txt").unlink(missing_ok=True)
            (work / "measurements_rss.txt").symlink_to(rss_input)
            rss, seconds, code = peak_rss_of_1brc(work, work)
            good = code == 0 and rss < RSS_LIMIT
            ok = ok and good
            print(
                f"\nvelo-sql run 08_1brc.sql on {args.rss_rows:,} rows: peak RSS "
                f"{rss / 2**20:,.0f} MiB (limit 1024 MiB), {seconds:.1f}s "
                f"({args.rss_rows / seconds:,.0f} rows/s incl. startup), exit {code}  "
                f"{'OK' if good else 'MISSED'}"
            )
        print(f"load average at end {os.getloadavg()[0]:.1f}")
    if mismatched:
        print(f"ROW COUNTS DIFFER from DuckDB's: {', '.join(mismatched)}")
        return 2
    return 0 if ok else 1


def _verdict(label: str, batch: int, figure: str, met: bool) -> str:
    return f"goal {label} @ {batch:,}: {figure}  {'OK' if met else 'MISSED'}"


if __name__ == "__main__":
    sys.exit(main())
