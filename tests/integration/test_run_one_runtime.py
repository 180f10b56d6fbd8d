"""`velo-sql run` runs on the job server's runtime: what a deployed job does, a run job does.

Each test starts a real `velo-sql run` process against a real broker: a Kafka
dead-letter topic (`dlq.topic`) and a Kafka sink keyed by the PRIMARY KEY, which the
first release's second runtime in `run` did not have.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

VELO_SQL = Path(sys.executable).parent / "velo-sql"
GOOD_IDS = [1, 2, 4, 5, 6, 7, 9, 10, 11, 12]
# line 4 (id 3) fails its price's type; line 9 (id 8) has too few fields.
TRADES = "id,symbol,price,quantity\n" + "".join(
    "3,AAPL,not-a-price,50\n" if i == 3 else "8,MSFT\n" if i == 8 else f"{i},S{i},{i}.5,{i * 10}\n"
    for i in range(1, 13)
)


def _run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VELO_SQL), "run", str(app), "--data-dir", str(app.parent / "velo-data"), *args],
        cwd=app.parent,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _app(tmp_path: Path, broker: KafkaBroker, sink: str, dlq: str) -> Path:
    (tmp_path / "trades.csv").write_text(TRADES, encoding="utf-8")
    app = tmp_path / "app.sql"
    app.write_text(
        f"""-- @app: run_kafka
-- @version: 2.0.1
CREATE STREAM notional AS
SELECT id PRIMARY KEY, symbol, price * quantity AS notional
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './trades.csv',
    'trades.format' = 'csv',
    'notional.type' = 'kafka_sink',
    'notional.topic' = '{sink}',
    'notional.bootstrap.servers' = '{broker.bootstrap}',
    'failure_strategy' = 'SendToDLQ',
    'dlq.topic' = '{dlq}',
    'dlq.bootstrap.servers' = '{broker.bootstrap}'
);
""",
        encoding="utf-8",
    )
    return app


def test_a_run_job_keys_its_kafka_sink_by_primary_key_and_dead_letters_to_a_topic(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    sink, dlq = new_topic("out"), new_topic("dlq")
    result = _run(_app(tmp_path, kafka_broker, sink, dlq))
    assert result.returncode == 0, result.stdout + result.stderr
    # in 12, out 10, failed 2
    assert re.search(r"notional\W+ok\W+12\W+10\W+2\W", result.stdout), result.stdout

    out = kafka_broker.read_all(sink)
    assert sorted(orjson.loads(r.value)["id"] for r in out) == GOOD_IDS
    for record in out:  # PRIMARY KEY -> key.columns, as a deployed job does
        assert record.key == str(orjson.loads(record.value)["id"]).encode()

    letters = sorted(kafka_broker.read_all(dlq), key=lambda r: r.header("velo.error.position"))
    assert sorted(r.value for r in letters) == [b"3,AAPL,not-a-price,50", b"8,MSFT"]
    for letter in letters:
        assert letter.header("velo.error.job") == "notional"
        assert letter.header("velo.error.app") == "run_kafka"
        assert letter.header("velo.error.version") == "2.0.1"
        assert letter.header("velo.error.stage") == "deserialize"
        assert letter.header("velo.error.fingerprint")
    positions = sorted(str(r.header("velo.error.position")) for r in letters)
    assert [p.rsplit(":", 1)[1] for p in positions] == ["4", "9"], positions


def test_a_run_keeps_no_checkpoint_so_a_second_run_reads_the_source_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "trades.csv").write_text(TRADES, encoding="utf-8")
    app = tmp_path / "app.sql"
    app.write_text(
        """-- @app: run_twice
CREATE STREAM big AS
SELECT id, symbol FROM trades WHERE quantity >= 100
EMIT CHANGES
WITH (
    'trades.type' = 'file_source', 'trades.path' = './trades.csv', 'trades.format' = 'csv',
    'big.type' = 'file_sink', 'big.path' = './big.csv', 'big.format' = 'csv'
);
""",
        encoding="utf-8",
    )
    for _ in range(2):
        result = _run(app)
        assert result.returncode == 0, result.stdout + result.stderr
        # in 12, out 3 (ids 10-12), failed 2
        assert re.search(r"big\W+ok\W+12\W+3\W+2\W", result.stdout), result.stdout
        assert (tmp_path / "big.csv").read_text(encoding="utf-8") == (
            "id,symbol\n10,S10\n11,S11\n12,S12\n"
        )
    assert not (tmp_path / "velo-data" / "checkpoints").exists()
