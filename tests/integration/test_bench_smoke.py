"""The benchmarks (bench_engine, bench_limits, bench_cli, bench_kafka) run end to end on a
tiny input (no figures checked).

Performance is measured by the benchmark itself, at full size, never by the tests.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_engine.py"


def _bench(
    script: Path,
    *args: str,
    ok: tuple[int, ...] = (0,),
    timeout: float = 300,
    cwd: Path | None = None,
) -> str:
    """Run a benchmark script, fail unless its exit code is in `ok` and it raised
    nothing (both streams shown), and return its standard output."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    output = result.stdout + result.stderr
    assert result.returncode in ok, output
    assert "Traceback" not in output, output
    return result.stdout


def test_engine_benchmark_runs_every_case_on_a_small_input(tmp_path: Path) -> None:
    # 0: goals met, 1: a goal missed (meaningless at this size); 2 would be wrong rows
    out = _bench(
        BENCH,
        "--rows", "3000",
        "--repeat", "1",
        "--batch-sizes", "1000",
        "--rss-rows", "3000",
        "--data-dir", str(tmp_path),
        ok=(0, 1),
    )  # fmt: skip
    for case in range(1, 9):
        assert f"\n{case}. " in out, out
    assert "peak RSS" in out


LIMITS = BENCH.parent / "bench_limits.py"


def test_limits_benchmark_runs_on_a_small_input() -> None:
    out = _bench(LIMITS, "--rows", "20000", "--rounds", "1")
    for line in ("stop 0.5 s into the batch", "job.batch.timeout 1s", "256MiB limit"):
        assert line in out, out


CLI = BENCH.parent / "bench_cli.py"


def test_cli_benchmark_runs_every_command_and_run_once() -> None:
    src = BENCH.parent.parent / "src"  # the other version: this one, for the smoke
    out = _bench(
        CLI, "--rounds", "1", "--rows", "2000", "--brc-rows", "2000", "--against", str(src)
    )
    for line in (
        "velo-sql --help",
        "velo-sql validate 02_filter.sql",
        "velo-cli --help",
        "filter + projection CSV -> CSV (2,000 rows)",
        "1BRC GROUP BY, EMIT FINAL (2,000 rows)",
        "tumbling window 1m, EMIT FINAL (2,000 rows)",
        "dirty input, ",
        "ours CPU s",
        "floor: the libraries, then DuckDB's query",
        "CPU seconds (user + system)",
        f"the same, velostream from {src}",
    ):
        assert line in out, out


KAFKA = BENCH.parent / "bench_kafka.py"


def test_kafka_benchmark_runs_all_three_on_a_small_topic() -> None:
    """Ours, the hand loop and Quix Streams (a dev extra: skipped, and said so, when it is
    not installed) each read 2,000 messages into the right number of output messages."""
    quix = importlib.util.find_spec("quixstreams") is not None
    args = ["--messages", "2000", "--rounds", "1", *([] if quix else ["--no-quix"])]
    # 0: goals met, 1: a goal missed (meaningless at this size); 2: wrong output counts
    out = _bench(KAFKA, *args, ok=(0, 1), timeout=600)
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    for runner in ("velo-sql run (ours)", "hand loop (confluent-kafka+orjson)"):
        assert runner in rows, out
        assert rows[runner].rstrip().endswith("1,000"), out  # output messages
    assert rows["read only (a bound, writes 1)"].rstrip().endswith(" 1"), out  # its end
    assert "ours/hand:" in out, out
    assert "reading alone allows " in out, out
    quix_rows = [line for line in out.splitlines() if line.startswith("Quix Streams")]
    assert len(quix_rows) == 1, out
    if quix:
        assert quix_rows[0].rstrip().endswith("1,000"), out
        assert "ours/quix:" in out, out
    else:
        assert "not run: quixstreams is not installed" in quix_rows[0], out


SCALE = BENCH.parent / "bench_scale.py"


@pytest.mark.slow
def test_scale_benchmark_runs_its_three_cases_on_a_small_topic() -> None:
    """One and two servers on a partitioned GROUP BY, and the repartitioned case, each
    to the end of a 3,000-trade topic (on the tests' tansu broker)."""
    out = _bench(SCALE, "--messages", "3000", "--rounds", "1", timeout=600, cwd=SCALE.parent)
    for line in ("keyed, 1 server", "keyed, 2 servers", "repartitioned, 1 server", "scaling"):
        assert line in out, out


PROFILE = BENCH.parent / "profile_case.py"


def test_the_profiling_driver_runs_a_case_in_one_process() -> None:
    out = _bench(PROFILE, "--case", "5", "--rows", "3000", "--runs", "2")
    assert "case 5 run 1:" in out and "case 5 run 2:" in out, out
