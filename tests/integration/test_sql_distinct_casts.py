"""Issue 14 through a real `velo-sql run`: SELECT DISTINCT on a stream with the run
summary's counts (a duplicate is filtered, a bad CAST failed), casts that truncate
toward zero as the original system's do, and TIMESTAMP(x).

On main, SELECT DISTINCT was refused, CAST(7258.53 AS INTEGER) gave 7259 (DuckDB rounds)
and TIMESTAMP(col) was a syntax error.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_process import velo_sql

pytestmark = pytest.mark.integration

_SOURCE = "'trades.type' = 'file_source', 'trades.path' = 'trades.jsonl', 'trades.format' = 'jsonl'"
_BAD = {"oops", "12,5x"}


def _sink(name: str) -> str:
    return f"'{name}.type' = 'file_sink', '{name}.path' = '{name}.csv', '{name}.format' = 'csv'"


def _velo_sql(tmp_path: Path, command: str, app: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "app.sql"
    path.write_text(app)
    extra = ["--data-dir", str(tmp_path / "data")] if command == "run" else []
    return velo_sql(command, str(path), *extra, cwd=tmp_path)


def _write_trades(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    """JSON lines: `price` a string (the string casts), `amount` a number (the double ones)."""
    rng = random.Random(14)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        price = rng.choice(["7258.53", "-7.5", "12.99", "0.5", "-0.5", "3", "1e2", "oops"])
        rows.append(
            {
                "id": i,
                "sym": rng.choice(["AAPL", "MSFT", "GOOG"]),
                "price": "12,5x" if i == 17 else price,
                "amount": rng.choice([7258.53, -7.5, 2.5, -0.99, 1e3]),
                "ms": 1_696_723_200_000 + 250 * i,
            }
        )
    (tmp_path / "trades.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _truncated(price: str) -> int:
    return int(Decimal(price))  # int() of a Decimal truncates toward zero


def _summary(stdout: str, job: str) -> tuple[int, int, int, int]:
    found = re.search(rf"{job}\W+ok\W+([\d,]+)\W+([\d,]+)\W+([\d,]+)\W+([\d,]+)\W", stdout)
    assert found, stdout
    in_, out, failed, late = (int(g.replace(",", "")) for g in found.groups())
    return in_, out, failed, late


def test_distinct_with_run_counts_and_truncating_casts(tmp_path: Path) -> None:
    trades = _write_trades(tmp_path, count=300)
    done = _velo_sql(
        tmp_path,
        "run",
        f"""-- @batch_size: 7
CREATE STREAM pairs AS
SELECT DISTINCT sym, CAST(price AS INTEGER) AS whole FROM trades
WITH ({_SOURCE}, {_sink("pairs")});

CREATE STREAM casts AS
SELECT id, CAST(price AS INTEGER) AS whole, TRY_CAST(price AS BIGINT) AS tried,
       CAST(amount AS INTEGER) AS amount, CAST(7258.53 AS INTEGER) AS example,
       TIMESTAMP(ms) AS at
FROM trades
WHERE CAST(price AS INTEGER) <> 3
WITH ({_SOURCE}, {_sink("casts")});
""",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    good = [t for t in trades if t["price"] not in _BAD]
    bad = len(trades) - len(good)
    assert bad >= 2

    expected_pairs: list[tuple[str, int]] = []
    for t in good:
        pair = (t["sym"], _truncated(t["price"]))
        if pair not in expected_pairs:
            expected_pairs.append(pair)
    pairs = [(r["sym"], int(r["whole"])) for r in _read_csv(tmp_path / "pairs.csv")]
    assert pairs == expected_pairs, "each distinct row once, at its first occurrence"
    in_, out, failed, late = _summary(done.stdout, "pairs")
    duplicates = len(good) - len(expected_pairs)
    assert (in_, out, failed, late) == (len(trades), len(expected_pairs), bad, 0)
    assert in_ == out + duplicates + failed + late, "a duplicate counts as filtered"

    kept = [t for t in good if _truncated(t["price"]) != 3]
    rows = _read_csv(tmp_path / "casts.csv")
    assert [int(r["id"]) for r in rows] == [t["id"] for t in kept]
    for row, trade in zip(rows, kept, strict=True):
        assert int(row["whole"]) == int(row["tried"]) == _truncated(trade["price"])
        assert int(row["whole"]) == math.trunc(float(trade["price"]))
        assert int(row["amount"]) == math.trunc(trade["amount"])
        assert row["example"] == "7258"
        at = dt.datetime.fromisoformat(row["at"].replace("Z", ""))
        assert at == dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(trade["ms"]))
    assert _summary(done.stdout, "casts") == (len(trades), len(kept), bad, 0)
    assert "cannot CAST price = 'oops' to INT" in done.stdout


def test_distinct_on_a_watched_file_needs_a_ttl(tmp_path: Path) -> None:
    _write_trades(tmp_path, count=5)
    watched = f"{_SOURCE}, 'trades.watch' = 'true'"
    done = _velo_sql(
        tmp_path,
        "validate",
        f"""CREATE STREAM syms AS SELECT DISTINCT sym FROM trades
WITH ({watched}, {_sink("syms")});

CREATE STREAM per_sym AS SELECT DISTINCT sym, COUNT(*) AS n FROM trades GROUP BY sym
WITH ({_SOURCE}, {_sink("per_sym")});

CREATE STREAM bounded AS SELECT DISTINCT sym FROM trades
WITH ({watched}, {_sink("bounded")}, 'distinct.ttl' = '1h');
""",
    )
    assert done.returncode != 0
    out = " ".join((done.stdout + done.stderr).split())
    assert (
        "statement 1 (syms) at 1:30: SELECT DISTINCT on source trades (file_source, watched)" in out
    )
    assert "set 'distinct.ttl' (such as '1h')" in out
    assert "statement 2 (per_sym) at 4:33: SELECT DISTINCT cannot be combined with GROUP BY" in out
    assert "statement 3" not in out
