"""Issue 13, items 8-10, through a real `velo-sql run`: what a query says is what runs,
or `velo-sql` refuses it before reading a row.

On main, `* EXCLUDE (ts)` still wrote ts, `* REPLACE (price * 2 AS price)` wrote price
unchanged, `COLUMNS('.*')` wrote `col0` six times with the engine's row numbers, a
GROUP BY's ORDER BY without EMIT FINAL was dropped, and row windows ignored the ORDER BY
of their OVER (...).
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.integration.server_process import velo_sql

pytestmark = pytest.mark.integration

_SOURCE = "'trades.type' = 'file_source', 'trades.path' = 'trades.csv', 'trades.format' = 'csv'"


def _sink(name: str, fmt: str = "csv") -> str:
    return f"'{name}.type' = 'file_sink', '{name}.path' = '{name}.{fmt}', '{name}.format' = '{fmt}'"


def _velo_sql(tmp_path: Path, command: str, app: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "app.sql"
    path.write_text(app)
    extra = ["--data-dir", str(tmp_path / "data")] if command == "run" else []
    return velo_sql(command, str(path), *extra, cwd=tmp_path)


def _write_trades(tmp_path: Path, count: int = 400) -> list[dict[str, object]]:
    rng = random.Random(13)
    times = list(range(count))
    rng.shuffle(times)  # event times out of order
    rows: list[dict[str, object]] = [
        {
            "id": i,
            "sym": f"s{rng.randrange(7)}",
            "price": rng.randrange(1, 1000) / 4,
            "qty": rng.randrange(1, 50),
            "ts": times[i] * 1000,
        }
        for i in range(count)
    ]
    with (tmp_path / "trades.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_star_modifiers_and_sorted_final_groups(tmp_path: Path) -> None:
    trades = _write_trades(tmp_path)
    done = _velo_sql(
        tmp_path,
        "run",
        f"""-- @batch_size: 37
CREATE STREAM no_ts AS SELECT * EXCLUDE (ts) FROM trades
WITH ({_SOURCE}, {_sink("no_ts")});

CREATE STREAM doubled AS SELECT * REPLACE (price * 2 AS price) RENAME (id AS trade_id) FROM trades
WITH ({_SOURCE}, {_sink("doubled")});

CREATE STREAM by_volume AS
SELECT sym, SUM(qty) AS volume, COUNT(DISTINCT price) AS prices FROM trades
GROUP BY sym ORDER BY volume DESC
EMIT FINAL
WITH ({_SOURCE}, {_sink("by_volume")});

CREATE STREAM per_minute AS
SELECT sym, SUM(qty) AS volume, _window_start AS ws FROM trades
GROUP BY sym WINDOW TUMBLING(ts, 1m) ORDER BY volume DESC, sym
EMIT FINAL
WITH ({_SOURCE}, {_sink("per_minute")}, 'watermark.max_out_of_orderness' = '10m');
""",
    )
    assert done.returncode == 0, done.stdout + done.stderr

    no_ts = _read_csv(tmp_path / "no_ts.csv")
    assert list(no_ts[0]) == ["id", "sym", "price", "qty"]
    assert [int(r["id"]) for r in no_ts] == list(range(len(trades)))

    doubled = _read_csv(tmp_path / "doubled.csv")
    assert list(doubled[0]) == ["trade_id", "sym", "price", "qty", "ts"]
    assert [float(r["price"]) for r in doubled] == [2 * float(str(t["price"])) for t in trades]

    volumes: dict[str, int] = {}
    for t in trades:
        volumes[str(t["sym"])] = volumes.get(str(t["sym"]), 0) + int(str(t["qty"]))
    by_volume = _read_csv(tmp_path / "by_volume.csv")
    assert [(r["sym"], int(r["volume"])) for r in by_volume] == sorted(
        volumes.items(), key=lambda kv: -kv[1]
    )

    per_minute = _read_csv(tmp_path / "per_minute.csv")
    keys = [(int(r["ws"]), -int(r["volume"]), r["sym"]) for r in per_minute]
    assert keys == sorted(keys), "windows in time order, each sorted by the ORDER BY"
    assert sum(-k[1] for k in keys) == sum(volumes.values())


def test_row_windows_sort_their_buffer_by_the_order_by(tmp_path: Path) -> None:
    trades = _write_trades(tmp_path, count=60)
    buffer = "ROWS WINDOW BUFFER 4 ROWS PARTITION BY sym ORDER BY ts"
    done = _velo_sql(
        tmp_path,
        "run",
        f"""-- @batch_size: 7
CREATE STREAM moves AS
SELECT id, sym, ts, LAG(price) OVER ({buffer}) AS prev, LEAD(price) OVER ({buffer}) AS next,
       ROW_NUMBER() OVER ({buffer}) AS n, SUM(qty) OVER ({buffer}) AS volume
FROM trades
WITH ({_SOURCE}, {_sink("moves", "jsonl")});
""",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = {
        row["id"]: row
        for row in map(json.loads, (tmp_path / "moves.jsonl").read_text().splitlines())
    }
    assert len(got) == len(trades)
    by_sym: dict[str, list[dict[str, object]]] = {}
    for t in trades:
        by_sym.setdefault(str(t["sym"]), []).append(t)
    for members in by_sym.values():
        for i, t in enumerate(members):
            # at arrival: the last 4 rows of the partition, sorted by ts
            frame = sorted(members[max(i - 3, 0) : i + 1], key=lambda r: int(str(r["ts"])))
            place = frame.index(t)
            row = got[t["id"]]
            assert row["prev"] == (frame[place - 1]["price"] if place else None)
            assert row["n"] == i + 1 - len(frame) + place + 1
            assert row["volume"] == sum(int(str(r["qty"])) for r in frame[: place + 1])
            # LEAD: final once the next row of the partition came (or at the end)
            last = min(i + 1, len(members) - 1)
            lead_frame = sorted(
                members[max(min(i, last - 3), 0) : last + 1], key=lambda r: int(str(r["ts"]))
            )
            at = lead_frame.index(t)
            expected = lead_frame[at + 1]["price"] if at + 1 < len(lead_frame) else None
            assert row["next"] == expected
    ids = [row["id"] for row in map(json.loads, (tmp_path / "moves.jsonl").read_text().split())]
    for members in by_sym.values():
        mine = [i for i in ids if i in {m["id"] for m in members}]
        assert mine == sorted(mine), "each partition's rows in arrival order"


def test_what_cannot_be_honoured_is_refused_before_running(tmp_path: Path) -> None:
    _write_trades(tmp_path, count=5)
    done = _velo_sql(
        tmp_path,
        "validate",
        f"""CREATE STREAM everything AS SELECT COLUMNS('.*') FROM trades
WITH ({_SOURCE}, {_sink("everything")});

CREATE STREAM ranked AS SELECT sym, SUM(qty) AS volume FROM trades GROUP BY sym ORDER BY volume
WITH ({_SOURCE}, {_sink("ranked")});

CREATE STREAM framed AS
SELECT SUM(qty) OVER (ROWS WINDOW BUFFER 5 ROWS ORDER BY ts
                      ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s
FROM trades
WITH ({_SOURCE}, {_sink("framed")});
""",
    )
    assert done.returncode != 0
    out = " ".join((done.stdout + done.stderr).split())
    assert "statement 1 (everything) at 1:36: COLUMNS('.*') is not supported" in out
    assert "statement 2 (ranked) at 4:90:" in out
    assert "ORDER BY is not supported with EMIT CHANGES" in out
    assert "statement 3 (framed)" in out and "window frame" in out
    assert [p.name for p in tmp_path.glob("*.csv")] == ["trades.csv"], "nothing ran"


@pytest.mark.parametrize(
    "content",
    ["id,sym,price,qty,ts\n", "id,sym,price,qty,ts\n1,a,2.5,3\n"],
    ids=["header only", "only a bad line"],
)
def test_a_global_aggregate_of_an_input_without_rows_is_sqls_one_row(
    tmp_path: Path, content: str
) -> None:
    """No row reached the query: COUNT is 0 and the rest NULL, as SQL answers, while a
    grouped query and a HAVING that refuses the one row write none."""
    (tmp_path / "trades.csv").write_text(content)
    done = _velo_sql(
        tmp_path,
        "run",
        f"""CREATE TABLE totals AS SELECT COUNT(*) AS n, SUM(qty) AS volume, MAX(sym) AS top
FROM trades EMIT FINAL WITH ({_SOURCE}, {_sink("totals")});

CREATE TABLE kept AS SELECT COUNT(*) AS n FROM trades HAVING COUNT(*) > 0
EMIT FINAL WITH ({_SOURCE}, {_sink("kept")});

CREATE TABLE grouped AS SELECT sym, COUNT(*) AS n FROM trades GROUP BY sym
EMIT FINAL WITH ({_SOURCE}, {_sink("grouped")});
""",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "totals.csv").read_text() == "n,volume,top\n0,,\n"
    for table in ("kept", "grouped"):
        path = tmp_path / f"{table}.csv"
        assert not path.exists() or path.read_text() == "", table
