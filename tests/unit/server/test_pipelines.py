"""Pipelines: a statement that reads an earlier statement's output by its name.

The reader reads what the writer's file sink committed, never more; it decodes with the
writer's schema; it ends when the writer has ended, and fails when the writer fails.
The whole pipeline's output equals DuckDB's one-shot answer to the composed query, for
either file format and any batch size. Run through the same in-process runtime as
`velo-sql run`, on real files.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from rich.console import Console

from tests.jobserver import read_jsonl
from velostream.cli.run import JobRun, run_application
from velostream.datasource.file.pipe import Pipe
from velostream.datasource.file.source import FileSource
from velostream.datasource.registry import connector_catalog
from velostream.datasource.validation import check_application
from velostream.errors import SourceError, SqlValidationError
from velostream.observability.manager import ObservabilityManager
from velostream.sql import parse_application


def run(tmp: Path, sql: str, manager: ObservabilityManager) -> dict[str, JobRun]:
    app = parse_application(
        sql, connectors=connector_catalog(), base_dir=tmp, source_name="pipe.sql"
    )
    runs = run_application(app, manager, Console(file=None, quiet=True), tmp / "data")
    return {r.job.name: r for r in runs}


def pipeline(tmp: Path, fmt: str, batch: int, *, strategy: str = "LogAndContinue") -> str:
    """big: a filter and projection of trades; per_symbol: GROUP BY over big's output."""
    return f"""-- @app: pipe
-- @batch_size: {batch}
CREATE STREAM big AS
SELECT id, symbol, price * qty AS notional, qty
FROM trades WHERE price > 50
WITH ('trades.type' = 'file_source', 'trades.path' = '{tmp}/trades.jsonl',
      'big.type' = 'file_sink', 'big.path' = '{tmp}/out/big.{fmt}', 'big.format' = '{fmt}',
      'failure_strategy' = '{strategy}');

CREATE TABLE per_symbol AS
SELECT symbol, COUNT(*) AS n, SUM(notional) AS total, MAX(qty) AS most
FROM big GROUP BY symbol EMIT FINAL
WITH ('per_symbol.type' = 'file_sink', 'per_symbol.path' = '{tmp}/out/per_symbol.jsonl',
      'per_symbol.format' = 'jsonl');
"""


def trades(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    symbols = ["AAPL", "MSFT", "GOOG", None, "a,b", 'q"uote']
    return [
        {
            "id": i,
            "symbol": rng.choice(symbols),
            "price": rng.choice([None, 10.0, 75.5, 120.25, 51.0]),
            "qty": rng.choice([None, 1, 2, 300]),
        }
        for i in range(n)
    ]


def one_shot(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.register("trades", pa.Table.from_pylist(rows))
    query = """
        SELECT symbol, COUNT(*) AS n, SUM(notional) AS total, MAX(qty) AS most
        FROM (SELECT id, symbol, price * qty AS notional, qty FROM trades WHERE price > 50)
        GROUP BY symbol ORDER BY symbol NULLS FIRST
    """
    return [tuple(r) for r in con.execute(query).fetchall()]


def ordered(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    found = [(r["symbol"], r["n"], r["total"], r["most"]) for r in rows]
    return sorted(found, key=lambda r: (r[0] is not None, str(r[0])))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(("batch", "seed"), [(1, 1), (7, 2), (5000, 3)])
def test_a_pipeline_gives_the_one_shot_answer(
    fmt: str, batch: int, seed: int, tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    rows = trades(300 if batch == 1 else 2000, seed)
    (tmp_path / "trades.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runs = run(tmp_path, pipeline(tmp_path, fmt, batch), unthrottled_manager)

    assert {name: r.state for name, r in runs.items()} == {
        "big": "completed",
        "per_symbol": "completed",
    }
    kept = sum(1 for r in rows if r["price"] is not None and r["price"] > 50)  # type: ignore[operator]
    assert runs["big"].stats.records_out == kept
    assert runs["per_symbol"].stats.records_in == kept  # every committed row, once
    got = ordered(read_jsonl(tmp_path / "out" / "per_symbol.jsonl"))
    assert got == [tuple(r) for r in one_shot(rows)]


def test_a_reader_fails_with_its_writers_reason(
    tmp_path: Path, unthrottled_manager: ObservabilityManager
) -> None:
    (tmp_path / "trades.jsonl").write_text('{"id": 1, "price": 60, "qty": 1}\n{"id": \n')
    runs = run(tmp_path, pipeline(tmp_path, "csv", 10, strategy="FailBatch"), unthrottled_manager)
    assert runs["big"].state == "failed"
    assert runs["per_symbol"].state == "failed"
    assert "statement big, whose output it reads, failed" in (runs["per_symbol"].error or "")


def test_a_reader_is_bound_to_its_writers_columns(tmp_path: Path) -> None:
    (tmp_path / "trades.jsonl").write_text('{"id": 1, "symbol": "A", "price": 60, "qty": 1}\n')
    text = pipeline(tmp_path, "csv", 10).replace("MAX(qty)", "MAX(quantity)")
    with pytest.raises(SqlValidationError) as caught:
        check_application(text, base_dir=tmp_path, source_name="pipe.sql")
    (problem,) = caught.value.problems
    assert problem == (
        "statement 2 (per_symbol) at 11:59: unknown column quantity: "
        "source big has id, symbol, notional, qty"
    )
    check_application(pipeline(tmp_path, "csv", 10), base_dir=tmp_path, source_name="pipe.sql")


# --- the reader's side of a pipe, by itself ---------------------------------------------


def piped(tmp: Path, polling: str = "20ms") -> tuple[FileSource, Pipe, Path]:
    path = tmp / "big.jsonl"
    source = FileSource("big", {"path": str(path), "format": "jsonl", "polling_interval": polling})
    pipe = Pipe("big", str(path))
    source.attach_pipe(pipe)
    source.open()
    return source, pipe, path


def ids(source: FileSource, most: int = 100) -> list[int] | None:
    batch = source.read_batch(most)
    if batch is None:
        return None
    return batch.table.column("id").to_pylist() if batch.num_records else []


def test_the_reader_reads_only_what_the_writer_committed(tmp_path: Path) -> None:
    source, pipe, path = piped(tmp_path)
    schema = pa.schema([("id", pa.int64())])
    assert ids(source) == []  # no file yet: the writer has not recovered
    lines = b'{"id": 1}\n{"id": 2}\n{"id": 3}\n'
    path.write_bytes(lines)
    pipe.publish(len(b'{"id": 1}\n{"id": 2}\n'), schema)  # the third line is not committed
    assert ids(source) == [1, 2]
    assert ids(source) == []
    pipe.publish(len(lines), schema)
    assert ids(source) == [3]
    pipe.end()
    assert ids(source) is None  # ended, and every committed line read
    source.close()


def test_a_resumed_reader_waits_for_the_file_and_goes_on_from_its_position(
    tmp_path: Path,
) -> None:
    source, pipe, path = piped(tmp_path, polling="10s")
    first = b'{"id": 1}\n'
    source.seek((0, len(first), 1))  # a restart: the file does not exist yet
    path.write_bytes(first + b'{"id": 2}\n')
    threading.Timer(0.05, pipe.publish, (path.stat().st_size, None)).start()
    started = time.monotonic()
    assert ids(source) == []  # waits for the writer, woken by its publish
    assert time.monotonic() - started < 5
    assert ids(source) == [2]  # no schema published: inferred from the file
    source.close()


def test_a_writer_failure_fails_the_reader(tmp_path: Path) -> None:
    source, pipe, _ = piped(tmp_path)
    pipe.fail("disk full")
    with pytest.raises(SourceError, match="statement big, whose output it reads, failed: disk"):
        source.read_batch(10)


def test_a_reader_of_a_union_is_bound_to_its_output(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": 1, "qty": 2}\n')
    (tmp_path / "b.jsonl").write_text('{"id": 7, "qty": 3}\n')
    text = f"""CREATE STREAM merged AS
SELECT id, qty FROM a UNION ALL SELECT id, qty FROM b
WITH ('a.type' = 'file_source', 'a.path' = '{tmp_path}/a.jsonl',
      'b.type' = 'file_source', 'b.path' = '{tmp_path}/b.jsonl',
      'merged.type' = 'file_sink', 'merged.path' = '{tmp_path}/m.jsonl',
      'merged.format' = 'jsonl');
CREATE STREAM big AS SELECT id, quantity FROM merged
WITH ('big.type' = 'file_sink', 'big.path' = '{tmp_path}/big.csv');
"""
    with pytest.raises(SqlValidationError) as caught:
        check_application(text, base_dir=tmp_path, source_name="pipe.sql")
    (problem,) = caught.value.problems
    assert "unknown column quantity: source merged has id, qty" in problem
