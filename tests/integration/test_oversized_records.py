"""One record too large for `max.record.bytes`, or one quote never closed, costs only itself.

Real `velo-sql run` processes read real files of 3,000 rows with one bad line in the
middle, under SendToDLQ: the job completes (exit 0), 2,999 rows reach the sink and the
bad line is one dead letter naming its line (and, when too large, its size). Before
this, such a line ended the job with nothing written ("straddling object", "CSV parser
got out of sync with chunker"). A 200 MB line costs no more memory than none; a
server restarted from its checkpoint goes on after the line and never meets it again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.server_process import (
    Launcher,
    VeloServer,
    checkpoint,
    launcher,
    read_ids,
    wait_for,
)

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

VELO_SQL = Path(sys.executable).parent / "velo-sql"
ROWS = 3000
BAD = 1500  # the row replaced by the bad line
GOOD = [i for i in range(ROWS) if i != BAD]
MB = 1_000_000
NOTE = "n" * 400  # wide rows: the file is several of Arrow's 1 MiB blocks


def _csv_row(i: int) -> bytes:
    return f"{i},S{i % 7},{i}.5,{NOTE}\n".encode()


def _json_row(i: int) -> bytes:
    return orjson.dumps({"id": i, "symbol": f"S{i % 7}", "price": i + 0.5, "note": NOTE}) + b"\n"


def _write(path: Path, fmt: str, bad: list[bytes], rows: range = range(ROWS)) -> int:
    """The file, `bad` (pieces of one line, its newline included) in place of row BAD;
    returns the bad line's number."""
    row = _csv_row if fmt == "csv" else _json_row
    with path.open("wb") as out:
        if fmt == "csv" and rows.start == 0:
            out.write(b"id,symbol,price,note\n")
        for i in rows:
            if i == BAD:
                out.writelines(bad)
            else:
                out.write(row(i))
    return BAD + (2 if fmt == "csv" else 1)


def _long_line(fmt: str, size: int) -> list[bytes]:
    """A line of `size` bytes (newline apart), in pieces of at most 1 MB."""
    head = b"1500,S1,1.5," if fmt == "csv" else b'{"id": 1500, "note": "'
    tail = b"" if fmt == "csv" else b'"}'
    fill = size - len(head) - len(tail)
    return [head, *(b"x" * min(MB, fill - i) for i in range(0, fill, MB)), tail + b"\n"]


def _app(folder: Path, fmt: str, *, watch: bool = False) -> Path:
    source = f"./trades.{fmt}"
    more = "'trades.watch' = 'true', 'trades.polling_interval' = '50ms'," if watch else ""
    app = folder / "app.sql"
    app.write_text(
        textwrap.dedent(
            f"""\
            -- @app: oversized
            CREATE STREAM out AS
            SELECT id, symbol, price FROM trades
            EMIT CHANGES
            WITH (
                'trades.type' = 'file_source', 'trades.path' = '{source}', {more}
                'out.type' = 'file_sink', 'out.path' = './out.csv', 'out.format' = 'csv',
                'failure_strategy' = 'SendToDLQ'
            );
            """
        ),
        encoding="utf-8",
    )
    return app


def _run(app: Path, *, measure: bool = False) -> subprocess.CompletedProcess[str]:
    """`velo-sql run app`; with `measure`, through a child that prints the peak RSS
    (kB) of its only child, velo-sql, as its last line."""
    command = [str(VELO_SQL), "run", str(app), "--data-dir", str(app.parent / "velo-data")]
    if measure:
        probe = (
            "import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n"
        )
        command = [sys.executable, "-c", probe, *command]
    return subprocess.run(
        command,
        cwd=app.parent,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _letters(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "dlq" / "out.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _assert_one_letter(letters: list[dict[str, Any]], line: int, *message: str) -> None:
    [letter] = letters
    assert (letter["stage"], letter["kind"]) == ("deserialize", "ParseError")
    assert letter["position"].endswith(f":{line}"), letter["position"]
    for part in message:
        assert part in letter["message"], letter["message"]
    assert len(letter["payload"]) <= 1024 and letter["payload"].startswith(("1500,", '{"id": 1500'))


CASES = {
    "csv-5MB-line": ("csv", _long_line("csv", 5 * MB), ["line {line} has 5000000 bytes"]),
    "csv-open-quote": ("csv", [b'1500,"S1,1500.5,never closed\n'], ["unterminated quoted value"]),
    "jsonl-5MB-line": ("jsonl", _long_line("jsonl", 5 * MB), ["line {line} has 5000000 bytes"]),
    "jsonl-open-string": (
        "jsonl",
        [b'{"id": 1500, "note": "never closed\n'],
        ["not a JSON object"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_bad_line_is_one_dead_letter_and_the_job_completes(tmp_path: Path, case: str) -> None:
    fmt, bad, message = CASES[case]
    line = _write(tmp_path / f"trades.{fmt}", fmt, bad)
    result = _run(_app(tmp_path, fmt))
    assert result.returncode == 0, result.stdout + result.stderr
    # in 3,000, out 2,999, failed 1
    assert re.search(r"out\W+ok\W+3,000\W+2,999\W+1\W", result.stdout), result.stdout
    assert read_ids(tmp_path / "out.csv") == GOOD
    letters = _letters(tmp_path / "velo-data")
    _assert_one_letter(letters, line, *(part.format(line=line) for part in message))


def test_a_200_mb_line_does_not_raise_the_peak_memory(tmp_path: Path) -> None:
    peaks = {}
    for size in (0, 200 * MB):
        folder = tmp_path / str(size)
        folder.mkdir()
        bad = _long_line("csv", size) if size else [_csv_row(BAD)]
        _write(folder / "trades.csv", "csv", bad)
        result = _run(_app(folder, "csv"), measure=True)
        assert result.returncode == 0, result.stdout + result.stderr
        peaks[size] = int(result.stdout.split()[-1]) * 1024
    grown = peaks[200 * MB] - peaks[0]
    assert grown < 40 * MB, f"peak RSS {peaks[0] // MB} MB -> {peaks[200 * MB] // MB} MB"


def test_a_restarted_server_goes_on_after_the_long_line(tmp_path: Path, launcher: Launcher) -> None:
    data_dir, source = tmp_path / "data", tmp_path / "trades.csv"
    line = _write(source, "csv", _long_line("csv", 5 * MB), range(2000))
    sql = _app(tmp_path, "csv", watch=True).read_text(encoding="utf-8")
    sql = sql.replace("./", f"{tmp_path}/")

    def caught_up(server: VeloServer, lines: int) -> Callable[[], bool]:
        def probe() -> bool:
            job = server.job("out")
            if job["state"] in ("completed", "stopped", "failed"):
                pytest.fail(f"job out is {job['state']} ({job['reason']}):\n{server.log()}")
            if not (data_dir / "checkpoints" / "out.json").exists():
                return False
            position = checkpoint(data_dir, "out").get("position") or {}
            return bool(position.get("line") == lines)

        return probe

    server = launcher.server(data_dir)
    server.deploy(sql)
    wait_for("the first 2,000 lines to be committed", caught_up(server, 2001), timeout=60)
    job = server.job("out")
    assert (job["state"], job["records_in"], job["records_failed"]) == ("running", 2000, 1)
    server.kill()  # a crash: the job restarts from its checkpoint, after the long line

    with source.open("ab") as out:
        out.writelines(_csv_row(i) for i in range(2000, ROWS))
    server = launcher.server(data_dir)  # deploys its saved application again by itself
    wait_for("the rest to be committed", caught_up(server, ROWS + 1), timeout=60)
    job = server.job("out")
    assert (job["state"], job["records_in"], job["records_failed"]) == ("running", 1000, 0)
    assert read_ids(tmp_path / "out.csv") == GOOD
    _assert_one_letter(_letters(data_dir), line, f"line {line} has 5000000 bytes")
    # The letter holds only the line's first KiB: replaying it would write a row of
    # that start alone, so it is refused and nothing is written.
    response = server.http.post("/jobs/out/dlq/replay")
    assert response.status_code == 422, response.text
    assert "hold only the start of their record" in response.text
    assert read_ids(tmp_path / "out.csv") == GOOD
