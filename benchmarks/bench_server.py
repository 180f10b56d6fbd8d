"""/metrics and /errors latency of a real `velo-sql server`: idle, then with 50 jobs running.

One server process on a loopback port. First, idle (no jobs), each endpoint is timed
over many sequential requests. Then 50 jobs are deployed, each following its own CSV
(`watch`) that a writer thread keeps appending to — good rows plus a poison row now and
then, so the jobs process and record errors all the time — and the same endpoints are
timed again while they do. Prints median and p99 of both, the ratios, and whether
p99 meets the goal (issue 4: p99 <= 20 ms with 50 running jobs).

    python benchmarks/bench_server.py [--jobs 50] [--requests 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import free_port, stop_server, velo_sql

GOAL_P99_MS = 20.0
ENDPOINTS = ("/metrics", "/errors")
REFERENCE = "/health"  # a trivial handler: how responsive the server is at all
TICK_SECONDS = 0.1  # the writer appends to every job's file this often
POISON_EVERY = 2  # ticks


def _application(workdir: Path, jobs: int) -> str:
    statements = ["-- @app: bench_server\n-- @version: 1\n-- @failure_strategy: LogAndContinue\n"]
    for i in range(jobs):
        name = f"bench_{i:02d}"
        statements.append(
            f"""CREATE STREAM {name} AS
SELECT id, symbol, qty * 2 AS double_qty FROM src WHERE qty > 3 EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{workdir / f"in_{i:02d}.csv"}',
      'src.watch' = 'true', 'src.polling_interval' = '100ms',
      '{name}.type' = 'file_sink', '{name}.path' = '{workdir / f"out_{i:02d}.csv"}');
"""
        )
    return "\n".join(statements)


class Appender(threading.Thread):
    """Appends rows (and now and then a poison row) to every job's input file."""

    def __init__(self, paths: list[Path], rows_per_tick: int) -> None:
        super().__init__(name="appender", daemon=True)
        self.paths = paths
        self.rows_per_tick = rows_per_tick
        self.stop = threading.Event()
        self.rows = 0
        self._next_id = 0

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            first, self._next_id = self._next_id, self._next_id + self.rows_per_tick
            chunk = "".join(f"{i},S{i % 7},{i % 11}\n" for i in range(first, self._next_id))
            if tick % POISON_EVERY == 0:
                chunk += f"{self._next_id},S0,not-a-qty-{tick % 3}\n"
            for path in self.paths:
                with open(path, "a", encoding="utf-8") as out:
                    out.write(chunk)
            self.rows += self.rows_per_tick * len(self.paths)
            tick += 1
            self.stop.wait(TICK_SECONDS)


def _time_requests(client: httpx.Client, path: str, n: int) -> list[float]:
    for _ in range(max(5, n // 20)):  # warm up
        client.get(path).raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


def _p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[98]


def _records_in(client: httpx.Client) -> int:
    return sum(j["records_in"] for j in client.get("/jobs").json()["jobs"])


def _wait_healthy(client: httpx.Client, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"velo-sql server exited with {process.returncode}")
        try:
            if client.get("/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("velo-sql server did not become healthy in 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--rows-per-tick",
        type=int,
        default=200,
        help=f"rows appended to each job's file every {TICK_SECONDS:g} s",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        workdir = Path(tmp)
        inputs = [workdir / f"in_{i:02d}.csv" for i in range(args.jobs)]
        for path in inputs:
            path.write_text("id,symbol,qty\n0,S0,5\n", encoding="utf-8")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "VELO_API_TOKEN"}
        command = [
            velo_sql(),
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(workdir / "d"),
            "--allow-path",
            str(workdir),
        ]
        command += ["--log-level", "WARNING", "--max-jobs", str(max(100, args.jobs))]
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        appender = Appender(inputs, args.rows_per_tick)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:
            _wait_healthy(client, process)
            idle = {
                path: _time_requests(client, path, args.requests)
                for path in (*ENDPOINTS, REFERENCE)
            }

            response = client.post("/jobs", json={"sql": _application(workdir, args.jobs)})
            if response.status_code != 201:
                raise SystemExit(f"deploy failed: {response.status_code} {response.text}")
            appender.start()
            time.sleep(2.0)  # every job running and reading
            states = [j["state"] for j in client.get("/jobs").json()["jobs"]]
            running = states.count("running")
            before, started = _records_in(client), time.perf_counter()
            busy = {
                path: _time_requests(client, path, args.requests)
                for path in (*ENDPOINTS, REFERENCE)
            }
            elapsed = time.perf_counter() - started
            processed = _records_in(client) - before
            errors = client.get("/errors").json()
            metrics_kb = len(client.get("/metrics").content) / 1024
        finally:
            appender.stop.set()
            client.close()
            stop_server(process)
            log.close()

    print(
        f"{running} of {args.jobs} jobs running; {processed:,} records processed during the "
        f"busy measurements ({processed / elapsed:,.0f} records/s); {args.requests} requests "
        f"per endpoint, sequential, keep-alive"
    )
    print(
        f"/errors: {errors['total_groups']} error groups; /metrics: {metrics_kb:.0f} KiB "
        "with the jobs (idle: no job series)"
    )
    header = (
        f"{'endpoint':10} {'idle median':>12} {'idle p99':>9} {'busy median':>12} "
        f"{'busy p99':>9} {'ratio median':>13} {'ratio p99':>10}  goal p99 <= {GOAL_P99_MS:g} ms"
    )
    print(header)
    for path in (*ENDPOINTS, REFERENCE):
        im, ip = statistics.median(idle[path]), _p99(idle[path])
        bm, bp = statistics.median(busy[path]), _p99(busy[path])
        verdict = ("OK" if bp <= GOAL_P99_MS else "MISSED") if path in ENDPOINTS else "(reference)"
        print(
            f"{path:10} {im:9.2f} ms {ip:6.2f} ms {bm:9.2f} ms {bp:6.2f} ms "
            f"{bm / im:12.1f}x {bp / ip:9.1f}x  {verdict}"
        )


if __name__ == "__main__":
    main()
