"""A pipeline over Kafka on the real broker: the second statement reads the first one's
topic by the statement's name, with its own consumer group and read_committed. With
the writer transactional, every row reaches the reader's topic exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.server_process import Launcher, launcher, wait_for

__all__ = ["launcher"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 3_000


def two_statements(broker: KafkaBroker, source: str, middle: str, sink: str) -> str:
    servers = broker.bootstrap
    return f"""-- @app: kpipe
-- @job_mode: transactional
-- @batch_size: 250
CREATE STREAM big AS SELECT id, qty FROM trades WHERE qty > 10
WITH ('trades.type' = 'kafka_source', 'trades.topic' = '{source}',
      'trades.bootstrap.servers' = '{servers}',
      'big.type' = 'kafka_sink', 'big.topic' = '{middle}', 'big.bootstrap.servers' = '{servers}');

CREATE STREAM doubled AS SELECT id, qty * 2 AS twice FROM big
WITH ('doubled.type' = 'kafka_sink', 'doubled.topic' = '{sink}',
      'doubled.bootstrap.servers' = '{servers}');
"""


def test_a_statement_reads_an_earlier_statements_topic(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path, launcher: Launcher
) -> None:
    source, middle, sink = new_topic("in", partitions=2), new_topic("mid"), new_topic("out")
    kafka_broker.produce(source, [orjson.dumps({"id": i, "qty": i % 20}) for i in range(N)])
    server = launcher.server(tmp_path / "data")
    assert server.deploy(two_statements(kafka_broker, source, middle, sink)) == ["big", "doubled"]
    expected = {i: (i % 20) * 2 for i in range(N) if i % 20 > 10}

    def arrived() -> list[dict[str, int]] | None:
        rows = [orjson.loads(r.value) for r in kafka_broker.read_all(sink)]
        return rows if len(rows) >= len(expected) else None

    rows = wait_for("every row at the reader's topic", arrived, timeout=120)
    assert Counter(r["id"] for r in rows) == Counter(expected.keys())  # each once
    assert {r["id"]: r["twice"] for r in rows} == expected
    doc = server.job("doubled")
    assert doc["state"] == "running"  # a topic never ends
    assert doc["records_in"] == len(expected)
    assert server.terminate() == 0, server.log()
