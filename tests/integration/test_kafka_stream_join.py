"""A stream–stream join of two Kafka topics on the real broker: the job's process is
killed mid-stream (SIGKILL, just before a batch commits) and started again.

Payments start LAG ids before the orders, so at any commit about LAG orders wait,
unmatched, in the join's state. Transactional mode commits both topics' offsets and
the batch's output in one producer transaction, and the state with them: every order
comes out exactly once (read_committed), joined to its payment; simple mode loses
none."""

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

N = 3_000  # orders
LAG = 400  # payments for no order, first


def _app(broker: KafkaBroker, orders: str, payments: str, sink: str, mode: str) -> str:
    def source(name: str, topic: str) -> str:
        return f"""'{name}.type' = 'kafka_source', '{name}.topic' = '{topic}',
    '{name}.bootstrap.servers' = '{broker.bootstrap}',
    '{name}.group.id' = 'ssjoin-{topic}',
    '{name}.session.timeout.ms' = '6000',"""

    return f"""
-- @app: ssjoin_crash
-- @job_mode: {mode}
-- @batch_size: 250
CREATE STREAM out AS
SELECT o.id, p.amount
FROM o LEFT JOIN p ON o.id = p.id
WITH (
    {source("o", orders)}
    {source("p", payments)}
    'join.timeout' = '100ms',
    'event.time.field' = 'ts',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}',
    'failure_strategy' = 'LogAndContinue'
);
"""


def _committed_total(broker: KafkaBroker, topic: str) -> int:
    return sum(max(o, 0) for o in broker.committed(f"ssjoin-{topic}", topic).values())


@pytest.mark.parametrize("mode", ["simple", "transactional"])
def test_killed_join_of_two_topics_restarts_without_loss(
    mode: str, kafka_broker: KafkaBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    orders, payments, sink = new_topic("o"), new_topic("p"), new_topic("out")
    kafka_broker.produce(orders, [orjson.dumps({"id": i, "ts": 10 * i}) for i in range(N)])
    kafka_broker.produce(
        payments,
        [orjson.dumps({"id": i, "amount": i + 0.5, "ts": 10 * i + 5}) for i in range(-LAG, N)],
    )
    app, log = tmp_path / "app.sql", tmp_path / "job.log"
    app.write_text(_app(kafka_broker, orders, payments, sink, mode))

    first = _start(app, tmp_path / "data", log, crash_at=9)
    assert first.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
    at_crash = {t: _committed_total(kafka_broker, t) for t in (orders, payments)}
    assert 0 < sum(at_crash.values()) < 2 * N + LAG, at_crash

    second = _start(app, tmp_path / "data", log)
    ends = {orders: N, payments: N + LAG}
    try:
        _wait(
            lambda: all(_committed_total(kafka_broker, t) == n for t, n in ends.items()),
            120,
            "every offset of both topics",
            log,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    records = [
        orjson.loads(r.value) for r in kafka_broker.read_all(sink, isolation="read_committed")
    ]
    ids = Counter(r["id"] for r in records)
    assert set(ids) == set(range(N)), f"missing: {sorted(set(range(N)) - set(ids))[:20]}"
    assert all(r["amount"] == r["id"] + 0.5 for r in records), "an order lost its payment"
    if mode == "transactional":
        duplicates = {i: c for i, c in ids.items() if c > 1}
        assert not duplicates, f"{len(duplicates)} ids written more than once"
