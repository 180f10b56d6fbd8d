"""Peak memory (RSS) of whole processes, against the goals of issue 16.

1. `velo-sql run demo/quickstart/08_1brc.sql` on `--brc-rows` measurements (default
   10M; goal: peak RSS <= 300 MiB). The input is written once under `--data-dir`.
2. `velo-sql server` with `--jobs` jobs deployed (default 50; goal: peak RSS <= 1 GiB):
   each job follows its own small CSV (`watch`; `--rows-per-job`, default 100,000),
   half a filter + projection, half a GROUP BY with EMIT CHANGES; they read their
   files, then sit idle. The server's RSS is read from /proc (Linux) before the deploy,
   once every job has read, after `--idle` seconds of idling, and its peak (VmHWM) at
   the end; the cost of one job is the growth over the idle server divided by the jobs.
   `ARROW_DEFAULT_MEMORY_POOL=mimalloc` shows what the server's choice of pool saves.

    python benchmarks/bench_memory.py [--brc-rows N] [--jobs N] [--rows-per-job N]
           [--idle S] [--skip-brc] [--skip-server] [--data-dir DIR]

Exit code: 0 both goals met, 1 a goal missed (or a run failed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_engine import measure_peak_rss, write_measurements
from common import free_port, stop_server, velo_sql

ROOT = Path(__file__).resolve().parent.parent
BRC_APP = ROOT / "demo" / "quickstart" / "08_1brc.sql"
MIB = 1 << 20
BRC_GOAL = 300 * MIB
SERVER_GOAL = 1 << 30


def brc_peak(rows: int, data_dir: Path, work: Path) -> bool:
    """Run the 1BRC lesson on `rows` measurements; print its peak RSS against the goal."""
    data = data_dir / f"measurements_{rows}.txt"
    if not data.exists():
        write_measurements(data, rows)
    env = dict(os.environ, BRC_INPUT=str(data), BRC_OUTPUT=str(work / "stats.csv"))
    env["COLUMNS"] = "200"
    command = [velo_sql(), "run", str(BRC_APP), "--data-dir", str(work / "velo-data")]
    peak, seconds, code = measure_peak_rss(command, env=env, cwd=work)
    good = code == 0 and peak <= BRC_GOAL
    print(
        f"velo-sql run 08_1brc.sql, {rows:,} rows: peak RSS {peak / MIB:,.0f} MiB "
        f"(goal <= {BRC_GOAL // MIB} MiB), {seconds:.1f} s, exit {code}  "
        f"{'OK' if good else 'MISSED'}"
    )
    return good


def _application(work: Path, jobs: int) -> str:
    """`jobs` jobs, each following its own CSV: filters and GROUP BYs, alternately."""
    statements = ["-- @app: bench_memory\n-- @version: 1\n"]
    for i in range(jobs):
        name = f"mem_{i:02d}"
        select = (
            "SELECT id, symbol, qty * 2 AS double_qty FROM src WHERE qty > 3 EMIT CHANGES"
            if i % 2 == 0
            else "SELECT symbol, COUNT(*) AS n, SUM(qty) AS total FROM src GROUP BY symbol "
            "EMIT CHANGES"
        )
        statements.append(
            f"""CREATE STREAM {name} AS {select}
WITH ('src.type' = 'file_source', 'src.path' = '{work / f"in_{i:02d}.csv"}',
      'src.watch' = 'true', 'src.polling_interval' = '500ms',
      '{name}.type' = 'file_sink', '{name}.path' = '{work / f"out_{i:02d}.csv"}');
"""
        )
    return "\n".join(statements)


def _memory(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of process `pid`, in bytes, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _wait(client: httpx.Client, process: subprocess.Popen[bytes], ready: str) -> None:
    """Until /health answers (`ready` "health") or every job has read its file."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"velo-sql server exited with {process.returncode}")
        try:
            if ready == "health" and client.get("/health", timeout=1).status_code == 200:
                return
            if ready != "health":
                jobs = client.get("/jobs").json()["jobs"]
                if jobs and all(j["state"] == "running" and j["records_in"] for j in jobs):
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"velo-sql server not ready ({ready}) in 120 s")


def server_peak(jobs: int, rows_per_job: int, idle: float, work: Path) -> bool:
    """Deploy `jobs` jobs to a server; print its RSS at each stage against the goal."""
    for i in range(jobs):
        lines = "".join(f"{n},S{n % 7},{n % 11}\n" for n in range(rows_per_job))
        (work / f"in_{i:02d}.csv").write_text("id,symbol,qty\n" + lines, encoding="utf-8")
    port = free_port()
    command = [velo_sql(), "server", "--port", str(port), "--data-dir", str(work / "d")]
    command += ["--allow-path", str(work), "--log-level", "WARNING"]
    command += ["--max-jobs", str(max(100, jobs))]
    env = {k: v for k, v in os.environ.items() if k != "VELO_API_TOKEN"}
    with (work / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            _wait(client, process, "health")
            before, _ = _memory(process.pid)
            response = client.post("/jobs", json={"sql": _application(work, jobs)})
            if response.status_code != 201:
                raise SystemExit(f"deploy failed: {response.status_code} {response.text}")
            _wait(client, process, "jobs read")
            running, _ = _memory(process.pid)
            time.sleep(idle)
            states = [j["state"] for j in client.get("/jobs").json()["jobs"]]
            idled, peak = _memory(process.pid)
        finally:
            client.close()
            stop_server(process)
    good = peak <= SERVER_GOAL and states.count("running") == jobs
    print(
        f"velo-sql server, {states.count('running')} of {jobs} jobs running "
        f"({rows_per_job:,} rows each): RSS idle server {before / MIB:,.0f} MiB, jobs read "
        f"{running / MIB:,.0f} MiB, after {idle:g} s idle {idled / MIB:,.0f} MiB "
        f"({(idled - before) / jobs / MIB:,.1f} MiB a job); peak {peak / MIB:,.0f} MiB "
        f"(goal <= {SERVER_GOAL // MIB} MiB)  {'OK' if good else 'MISSED'}"
    )
    return good


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brc-rows", type=int, default=10_000_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rows-per-job", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the jobs idle")
    parser.add_argument("--skip-brc", action="store_true")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="keep the 1BRC input here")
    args = parser.parse_args()
    if sys.platform != "linux":
        raise SystemExit("bench_memory reads /proc: Linux only")
    good = True
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        if not args.skip_brc:
            data_dir = args.data_dir or work
            data_dir.mkdir(parents=True, exist_ok=True)
            brc_work = work / "brc"
            brc_work.mkdir()
            good &= brc_peak(args.brc_rows, data_dir, brc_work)
        if not args.skip_server:
            server_work = work / "server"
            server_work.mkdir()
            good &= server_peak(args.jobs, args.rows_per_job, args.idle, server_work)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
