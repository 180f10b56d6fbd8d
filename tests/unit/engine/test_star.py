"""`*` with EXCLUDE, REPLACE and RENAME on streams; never a system or engine column.

Issue 13, item 8: `* EXCLUDE (ts)` still emitted ts, `* REPLACE (price * 2 AS price)`
left price as it was, and `COLUMNS('.*')` emitted `col0` six times with the engine's
row numbers among them.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.unit.engine.harness import run_job
from velostream.errors import PlanError, QueryExecutionError

# `_key` and `_partition` stand for the columns a Kafka source adds.
TRADES = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "price": [1.5, 2.0, 4.0],
        "ts": pa.array([10, 20, 30], pa.int64()),
        "_key": ["k1", "k2", "k3"],
        "_partition": pa.array([0, 0, 1], pa.int32()),
    }
)
LAG = "LAG(price) OVER (ROWS WINDOW BUFFER 2 ROWS)"


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("*", [{"id": 1, "price": 1.5, "ts": 10}]),
        ("* EXCLUDE (ts)", [{"id": 1, "price": 1.5}]),
        ("* EXCLUDE ts", [{"id": 1, "price": 1.5}]),
        ("* EXCLUDE (TS, Id)", [{"price": 1.5}]),  # names as DuckDB reads them
        ("t.* EXCLUDE (t.ts)", [{"id": 1, "price": 1.5}]),
        ("* REPLACE (price * 2 AS price)", [{"id": 1, "price": 3.0, "ts": 10}]),
        ("* EXCLUDE (id) REPLACE (ts + 1 AS ts)", [{"price": 1.5, "ts": 11}]),
        ("* RENAME (id AS trade_id)", [{"trade_id": 1, "price": 1.5, "ts": 10}]),
        ("* EXCLUDE (_key, ts)", [{"id": 1, "price": 1.5}]),  # a system column: no-op
        ("* EXCLUDE (_offset)", [{"id": 1, "price": 1.5, "ts": 10}]),  # not in the batch
        ("* EXCLUDE (price), _key", [{"id": 1, "ts": 10, "_key": "k1"}]),
        ("id, * EXCLUDE (id, price)", [{"id": 1, "ts": 10}]),
    ],
)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_star_on_a_stream(select: str, expected: list[dict[str, object]], batch_size: int) -> None:
    run = run_job(f"SELECT {select} FROM t", TRADES, batch_size=batch_size)
    assert run.rows[:1] == expected
    assert len(run.rows) == 3


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (f"* EXCLUDE (ts), {LAG} AS prev", {"id": 2, "price": 2.0, "prev": 1.5}),
        (f"* REPLACE ({LAG} AS price)", {"id": 2, "price": 1.5, "ts": 20}),
        (f"* EXCLUDE (ts) RENAME (price AS p), {LAG} AS prev", {"id": 2, "p": 2.0, "prev": 1.5}),
        (
            "* EXCLUDE (_partition), LEAD(id) OVER (ROWS WINDOW BUFFER 2 ROWS) AS nxt",
            {"id": 2, "price": 2.0, "ts": 20, "nxt": 3},
        ),
    ],
)
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_star_over_a_row_window(select: str, expected: dict[str, object], batch_size: int) -> None:
    run = run_job(f"SELECT {select} FROM t", TRADES, batch_size=batch_size)
    assert run.rows[1] == expected, "no buffer, sequence or system column in *"
    assert len(run.rows) == 3


def test_star_hides_what_the_engine_adds_to_a_batch() -> None:
    run = run_job("SELECT * FROM t WHERE id > 1", TRADES, batch_size=2)
    assert run.columns == ["id", "price", "ts"]


def test_an_exclude_of_a_column_the_source_lacks_fails_the_query() -> None:
    with pytest.raises(QueryExecutionError, match='"nope" in EXCLUDE list not found'):
        run_job("SELECT * EXCLUDE (nope) FROM t", TRADES)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT COLUMNS('.*') FROM t", "COLUMNS('.*') is not supported"),
        ("SELECT COLUMNS(*) FROM t", "COLUMNS(*) is not supported"),
        ("SELECT MIN(COLUMNS(*)) AS m FROM t", "COLUMNS(*) is not supported"),
        ("SELECT COALESCE(*COLUMNS(*)) AS c FROM t", "is not supported"),
        ("SELECT COLUMNS(lambda c: c LIKE 'p%') + 1 FROM t", "is not supported"),
        ("SELECT * LIKE 'p%' FROM t", "* with a name pattern"),
        ("SELECT * ILIKE 'p%' FROM t", "* with a name pattern"),
        ("SELECT * SIMILAR TO 'p.*' FROM t", "* with a name pattern"),
        ("SELECT struct_pack(*) AS s FROM t", "* is only allowed as an item"),
        ("SELECT * REPLACE (1 AS _key) FROM t", "_key is not one of the columns * stands for"),
        ("SELECT * RENAME (_partition AS p) FROM t", "_partition is not one of the columns"),
        ("SELECT *, COUNT(*) AS n FROM t", "SELECT * cannot be combined with GROUP BY, aggregates"),
        ("SELECT * EXCLUDE (ts) FROM t GROUP BY id", "SELECT * cannot be combined"),
    ],
)
def test_what_star_cannot_honour_is_refused(sql: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        run_job(sql, TRADES)
    assert message in str(info.value)
