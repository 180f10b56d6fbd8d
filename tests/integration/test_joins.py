"""Stream–table joins through real `velo-sql` processes.

A join with bad rows on both sides (each dead-lettered under its own source's name,
every record accounted for), and a table reloaded while a watched stream runs: rows
read after the table file changed are joined to its new rows; and a Kafka topic joined
as a table (its latest row per key, tombstones deleting).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.server_process import (
    clean_env,
    console_script,
    interrupt,
    velo_sql,
    wait_for,
)

pytestmark = pytest.mark.integration


def _app(stream: str, watch: bool) -> str:
    watched = ", 'trades.watch' = 'true', 'trades.polling_interval' = '50ms'" if watch else ""
    return f"""
-- @app: joins
CREATE STREAM enriched AS
SELECT t.id, t.symbol, i.name, t.qty * i.lot AS units
FROM trades t
LEFT JOIN instruments i ON t.symbol = i.symbol
EMIT CHANGES
WITH (
    'trades.type' = 'file_source', 'trades.path' = '{stream}', 'trades.format' = 'jsonl'{watched},
    'instruments.type' = 'file_source', 'instruments.path' = 'instruments.csv',
    'enriched.type' = 'file_sink', 'enriched.path' = 'enriched.jsonl',
    'enriched.format' = 'jsonl', 'enriched.append' = 'true',
    'failure_strategy' = 'SendToDLQ', 'dlq.path' = 'dlq.jsonl'
);
"""


def _rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_join_with_bad_rows_on_both_sides(tmp_path: Path) -> None:
    (tmp_path / "trades.jsonl").write_text(
        '{"id": 1, "symbol": "AAPL", "qty": 2}\n'
        '{"id": 2, "symbol": "MSFT", "qty": "many"}\n'  # qty is text: fails the product
        '{"id": 3, "symbol": \n'  # malformed JSON
        '{"id": 4, "symbol": "TSLA", "qty": 3}\n'
        '{"id": 5, "symbol": "NVDA", "qty": 1}\n'
    )
    (tmp_path / "instruments.csv").write_text(
        "symbol,name,lot\nAAPL,Apple,100\nMSFT,Microsoft,10\nTSLA,Tesla,abc,extra\n"
    )
    (tmp_path / "app.sql").write_text(_app("trades.jsonl", watch=False))
    result = velo_sql("run", "app.sql", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = _rows(tmp_path / "enriched.jsonl")
    assert [(r["id"], r["name"], r["units"]) for r in out] == [
        (1, "Apple", 200),
        (4, None, None),  # its instrument's line was bad: no match
        (5, None, None),
    ]
    letters = _rows(tmp_path / "dlq.jsonl")
    assert sorted(str(x["source"]) for x in letters) == ["instruments", "trades", "trades"]
    # in: 5 stream records + 1 bad table record; out 3; failed 3 (one per side's bad
    # line, one stream row whose qty does not multiply)
    assert re.search(r"enriched\W+ok\W+6\W+3\W+3\W", result.stdout), result.stdout


def test_the_table_is_reloaded_when_its_file_changes(tmp_path: Path) -> None:
    stream = tmp_path / "trades.jsonl"
    stream.write_text('{"id": 1, "symbol": "AAPL", "qty": 1}\n')
    table = tmp_path / "instruments.csv"
    table.write_text("symbol,name,lot\nAAPL,Apple,100\n")
    (tmp_path / "app.sql").write_text(_app("trades.jsonl", watch=True))
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [console_script("velo-sql"), "run", "app.sql", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        out = tmp_path / "enriched.jsonl"
        wait_for("the first row", lambda: len(_rows(out)) >= 1)
        # The table changes (a new name, a new lot and a new symbol), then trades come.
        table.write_text("symbol,name,lot\nAAPL,Apple Inc.,10\nTSLA,Tesla,5\n")
        time.sleep(0.05)
        with stream.open("a") as f:
            f.write(
                '{"id": 2, "symbol": "AAPL", "qty": 1}\n{"id": 3, "symbol": "TSLA", "qty": 2}\n'
            )
        wait_for("the rows after the change", lambda: len(_rows(out)) >= 3)
    finally:
        interrupt(process, 30)
        log.close()
    rows = [(r["id"], r["name"], r["units"]) for r in _rows(tmp_path / "enriched.jsonl")]
    assert rows == [(1, "Apple", 100), (2, "Apple Inc.", 10), (3, "Tesla", 10)], (
        tmp_path / "run.log"
    ).read_text()


def test_a_kafka_topic_joined_as_a_table_has_its_latest_row_per_key(
    tmp_path: Path, kafka_broker: KafkaBroker, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("instruments", partitions=2)
    kafka_broker.produce(
        topic,
        [
            b'{"symbol": "AAPL", "name": "Apple", "lot": 100}',
            b'{"symbol": "MSFT", "name": "Microsoft", "lot": 10}',
            b'{"symbol": "AAPL", "name": "Apple Inc.", "lot": 50}',  # the latest AAPL
            None,  # a tombstone: MSFT is deleted
            b'{"symbol": "TSLA", "name": ',  # not JSON: a bad record of the table
        ],
        keys=[b"AAPL", b"MSFT", b"AAPL", b"MSFT", b"TSLA"],
    )
    (tmp_path / "trades.jsonl").write_text(
        '{"id": 1, "symbol": "AAPL", "qty": 2}\n'
        '{"id": 2, "symbol": "MSFT", "qty": 1}\n'
        '{"id": 3, "symbol": "TSLA", "qty": 1}\n'
    )
    app = _app("trades.jsonl", watch=False).replace(
        "'instruments.type' = 'file_source', 'instruments.path' = 'instruments.csv'",
        f"'instruments.type' = 'kafka_source', 'instruments.topic' = '{topic}', "
        f"'instruments.bootstrap.servers' = '{kafka_broker.bootstrap}'",
    )
    (tmp_path / "app.sql").write_text(app)
    result = velo_sql("run", "app.sql", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = _rows(tmp_path / "enriched.jsonl")
    assert [(r["id"], r["name"], r["units"]) for r in out] == [
        (1, "Apple Inc.", 100),
        (2, None, None),
        (3, None, None),
    ]
    letters = _rows(tmp_path / "dlq.jsonl")
    assert [x["source"] for x in letters] == ["instruments"]
    assert re.search(r"enriched\W+ok\W+4\W+3\W+1\W", result.stdout), result.stdout


def test_a_kafka_table_is_read_again_when_its_topic_grows(
    tmp_path: Path, kafka_broker: KafkaBroker, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("instruments")
    kafka_broker.produce(topic, [b'{"symbol": "AAPL", "name": "Apple", "lot": 1}'], keys=[b"AAPL"])
    stream = tmp_path / "trades.jsonl"
    stream.write_text('{"id": 1, "symbol": "AAPL", "qty": 1}\n')
    app = _app("trades.jsonl", watch=True).replace(
        "'instruments.type' = 'file_source', 'instruments.path' = 'instruments.csv'",
        f"'instruments.type' = 'kafka_source', 'instruments.topic' = '{topic}', "
        f"'instruments.bootstrap.servers' = '{kafka_broker.bootstrap}'",
    )
    (tmp_path / "app.sql").write_text(app)
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [console_script("velo-sql"), "run", "app.sql", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    out = tmp_path / "enriched.jsonl"
    try:
        wait_for("the first row", lambda: len(_rows(out)) >= 1)
        kafka_broker.produce(
            topic, [b'{"symbol": "AAPL", "name": "Apple Inc.", "lot": 7}'], keys=[b"AAPL"]
        )
        time.sleep(1.5)  # the topic's ends are checked at most once a second
        with stream.open("a") as f:
            f.write('{"id": 2, "symbol": "AAPL", "qty": 1}\n')
        wait_for("the row after the change", lambda: len(_rows(out)) >= 2)
    finally:
        interrupt(process, 30)
        log.close()
    rows = [(r["id"], r["name"], r["units"]) for r in _rows(out)]
    assert rows == [(1, "Apple", 1), (2, "Apple Inc.", 7)], (tmp_path / "run.log").read_text()
