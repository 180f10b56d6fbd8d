"""A UNION ALL of two Kafka topics on the real broker: the job's process is killed
mid-stream (SIGKILL, just before a batch commits) and started again. Transactional mode
commits both topics' offsets in the batch's one producer transaction, so every good
record of both topics is in the output exactly once (read_committed) and each topic's
group offsets reach its end; simple mode loses nothing. A poison message in one topic
costs neither topic a good record."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_broker import KafkaBroker
from tests.integration.test_kafka_crash import _start, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 3_000  # per topic
POISON = {500, 1_700}  # positions in topic b holding a message that is not JSON


def _app(broker: KafkaBroker, a: str, b: str, sink: str, mode: str) -> str:
    def source(name: str, topic: str) -> str:
        return f"""'{name}.type' = 'kafka_source', '{name}.topic' = '{topic}',
    '{name}.bootstrap.servers' = '{broker.bootstrap}',
    '{name}.group.id' = 'union-{topic}',
    '{name}.session.timeout.ms' = '6000',"""

    return f"""
-- @app: union_crash
-- @job_mode: {mode}
-- @batch_size: 250
CREATE STREAM out AS
SELECT id, price, 'a' AS origin FROM a
UNION ALL
SELECT id, price, 'b' AS origin FROM b
WITH (
    {source("a", a)}
    {source("b", b)}
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}',
    'failure_strategy' = 'LogAndContinue'
);
"""


def _committed_total(broker: KafkaBroker, topic: str) -> int:
    return sum(max(o, 0) for o in broker.committed(f"union-{topic}", topic).values())


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_killed_union_of_two_topics_restarts_without_loss(
    mode: str, kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    a, b, sink = new_topic("a", partitions=2), new_topic("b"), new_topic("out")
    kafka_broker.produce(a, [orjson.dumps({"id": i, "price": i * 0.5}) for i in range(N)])
    values = [
        b"not json" if i in POISON else orjson.dumps({"id": N + i, "price": 1.0}) for i in range(N)
    ]
    kafka_broker.produce(b, values)
    app, log = tmp_path / "app.sql", tmp_path / "job.log"
    app.write_text(_app(kafka_broker, a, b, sink, mode))

    first = _start(app, tmp_path / "data", log, crash_at=9)
    assert first.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
    at_crash = {t: _committed_total(kafka_broker, t) for t in (a, b)}
    assert 0 < sum(at_crash.values()) < 2 * N, at_crash

    second = _start(app, tmp_path / "data", log)
    try:
        _wait(
            lambda: all(_committed_total(kafka_broker, t) == N for t in (a, b)),
            120,
            "every offset of both topics",
            log,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    records = kafka_broker.read_all(sink, isolation="read_committed")
    ids = Counter(orjson.loads(r.value)["id"] for r in records)
    good = set(range(2 * N)) - {N + i for i in POISON}
    assert set(ids) == good, f"missing: {sorted(good - set(ids))[:20]}"
    origins = Counter(orjson.loads(r.value)["origin"] for r in records)
    assert set(origins) == {"a", "b"}
    if mode == "transactional":
        duplicates = {i: c for i, c in ids.items() if c > 1}
        assert not duplicates, f"{len(duplicates)} ids written more than once"
