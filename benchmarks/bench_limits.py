"""Per-job limits on a real `velo-sql server`: how fast they act, against no limit at all.

A job whose every row builds a list of ~8,000 elements from its own value keeps DuckDB
busy for seconds per batch. Measured side by side, medians of `--rounds`:
- stop: `POST /jobs/{name}/stop` 0.5 s into the batch, against how long the batch runs
  to its end unchecked (what a stop waited for before the limits);
- timeout: from the batch's start to the job failed, with `job.batch.timeout = '1s'`;
- memory: the server's peak growth (VmHWM) running a job that keeps its lists, with
  `job.memory.limit = '256MiB'`, against the same job with no limit on a tenth of the
  input (the full input unchecked takes the machine's memory).

    python benchmarks/bench_limits.py [--rounds 3] [--rows 100000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from common import free_port, velo_sql

HEAVY = "list_sum(range(0, id % 7 + 8000))"
HUNGRY = "range(0, id % 7 + 8000)"
UNLIMITED = ["--job-memory-limit", "1TiB", "--job-batch-timeout", "1d"]


@contextmanager
def _server(workdir: Path, args: list[str]) -> Iterator[tuple[httpx.Client, int]]:
    port = free_port()
    data = workdir / f"data-{port}"
    command = [velo_sql(), "server", "--port", str(port), "--data-dir", str(data)]
    command += ["--allow-path", str(workdir), *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("velo-sql server did not start")
            time.sleep(0.1)
        yield client, process.pid
    finally:
        client.close()
        process.terminate()
        process.wait(60)


def _deploy(client: httpx.Client, workdir: Path, source: Path, expr: str, limits: str) -> None:
    out = workdir / f"out-{time.monotonic_ns()}.jsonl"
    sql = f"""CREATE STREAM heavy AS SELECT id, {expr} AS v FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'heavy.type' = 'file_sink', 'heavy.path' = '{out}', 'heavy.format' = 'jsonl'{limits});
"""
    client.post("/jobs", json={"sql": sql}).raise_for_status()


def _job(client: httpx.Client) -> dict[str, object]:
    doc: dict[str, object] = client.get("/jobs/heavy").json()
    return doc


def _wait(client: httpx.Client, done: object) -> float:
    """Seconds until the job's state is one of `done` (a tuple of states)."""
    started = time.monotonic()
    while _job(client)["state"] not in done:  # type: ignore[operator]
        time.sleep(0.01)
    return time.monotonic() - started


def _wait_batch(client: httpx.Client) -> float:
    """Until the job has begun its first batch; returns when (monotonic)."""
    while not _job(client)["records_in"]:
        time.sleep(0.005)
    return time.monotonic()


def _status_mib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def _write_source(path: Path, rows: int) -> Path:
    path.write_text("id\n" + "".join(f"{i}\n" for i in range(rows)))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        source = _write_source(workdir / "in.csv", options.rows)
        small = _write_source(workdir / "small.csv", options.rows // 10)
        batch, stop, timeout, grown, grown_free = [], [], [], [], []
        for _ in range(options.rounds):
            with _server(workdir, UNLIMITED) as (client, _pid):  # unchecked: to its end
                _deploy(client, workdir, source, HEAVY, "")
                started = _wait_batch(client)
                _wait(client, ("completed", "failed"))
                batch.append(time.monotonic() - started)
            with _server(workdir, []) as (client, _pid):
                _deploy(client, workdir, source, HEAVY, "")
                _wait_batch(client)
                time.sleep(0.5)
                began = time.monotonic()
                client.post("/jobs/heavy/stop").raise_for_status()
                stop.append(time.monotonic() - began)
            with _server(workdir, []) as (client, _pid):
                _deploy(client, workdir, source, HEAVY, ", 'job.batch.timeout' = '1s'")
                started = _wait_batch(client)
                _wait(client, ("failed", "completed"))
                timeout.append(time.monotonic() - started)
            with _server(workdir, []) as (client, pid):
                before = _status_mib(pid, "VmRSS")
                _deploy(client, workdir, source, HUNGRY, ", 'job.memory.limit' = '256MiB'")
                _wait(client, ("failed", "completed"))
                grown.append(_status_mib(pid, "VmHWM") - before)
            with _server(workdir, UNLIMITED) as (client, pid):
                before = _status_mib(pid, "VmRSS")
                _deploy(client, workdir, small, HUNGRY, "")
                _wait(client, ("failed", "completed"))
                grown_free.append(_status_mib(pid, "VmHWM") - before)
        med = statistics.median
        print(f"rows {options.rows:,}, rounds {options.rounds} (medians)")
        print(f"  batch run to its end, no limit:  {med(batch):6.2f} s")
        print(
            f"  stop 0.5 s into the batch:      {med(stop):6.2f} s  ({med(stop) / med(batch):.3f}x)"
        )
        print(f"  job.batch.timeout 1s, failed:   {med(timeout):6.2f} s after the batch began")
        print(f"  peak growth, no limit, {options.rows // 10:,} rows: {med(grown_free):6,} MiB")
        print(
            f"  peak growth, 256MiB limit, {options.rows:,} rows: {med(grown):6,} MiB "
            f"({med(grown) / max(med(grown_free), 1):.2f}x on 10x the rows)"
        )


if __name__ == "__main__":
    main()
