"""A Kafka read gives what the topic has, as a Kafka poll does, on the real broker.

With a `polling_interval` of a minute and a batch far larger than the topic, the
job's output still comes within seconds of the messages: a read returns once no
message came for the consumer's `fetch.wait.max.ms`, not when the interval ends.
Before, a burst smaller than a batch waited out the whole interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor

pytestmark = pytest.mark.integration

INTERVAL_S = 60
# Well under the interval, with room for a loaded machine and the group's join.
SOON_S = 20


def _sql(broker: KafkaBroker, source: str, sink: str) -> str:
    return f"""
-- @app: kafka_latency
CREATE STREAM out AS SELECT id, qty * 2 AS twice FROM src WHERE qty > 1
WITH (
    'src.type' = 'kafka_source',
    'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}',
    'src.group.id' = 'g-{source}',
    'src.polling_interval' = '{INTERVAL_S}s',
    'src.session.timeout.ms' = '2000',
    'src.heartbeat.interval.ms' = '500',
    'out.type' = 'kafka_sink',
    'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}'
);
"""


def _burst(broker: KafkaBroker, topic: str, first: int, n: int) -> None:
    broker.produce(topic, [orjson.dumps({"id": i, "qty": i % 4}) for i in range(first, first + n)])


def test_a_burst_smaller_than_a_batch_goes_on_without_waiting_out_the_interval(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink = new_topic("in"), new_topic("out")
    _burst(kafka_broker, source, 0, 40)
    started = time.monotonic()
    job = RunningJob(build_processor(_sql(kafka_broker, source, sink), make_manager()))
    try:
        # The group's join and the first read: the 40 messages, then quiet.
        job.wait_records_in(40, timeout=SOON_S)
        first = time.monotonic() - started
        # Caught up, the job waits for more; a second burst goes on as soon.
        _burst(kafka_broker, source, 40, 40)
        sent = time.monotonic()
        job.wait_records_in(80, timeout=SOON_S)
        second = time.monotonic() - sent
    finally:
        job.stop()
    assert first < SOON_S and second < SOON_S, (first, second)
    ids = sorted(orjson.loads(m.value)["id"] for m in kafka_broker.read_all(sink))
    assert ids == [i for i in range(80) if i % 4 > 1]
    assert job.processor.stats.records_out == len(ids)
