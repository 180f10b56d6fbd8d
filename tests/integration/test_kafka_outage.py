"""The broker freezes mid-stream (SIGSTOP for ~10 s, then SIGCONT): the job records the
errors with their stage and kind, recovers by itself, and loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 6_000
FREEZE_SECONDS = 10.0


def test_frozen_broker_is_recorded_and_survived(
    kafka_broker: KafkaBroker,
    new_topic: Callable[..., str],
    make_manager: ManagerFactory,
    registry: CollectorRegistry,
) -> None:
    source, sink = new_topic("in", partitions=2), new_topic("out")
    group = f"g-{source}"
    sql = f"""
-- @app: outage
-- @batch_size: 200
CREATE STREAM out AS SELECT id FROM src
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}', 'src.group.id' = '{group}',
    'src.bootstrap.servers' = '{kafka_broker.bootstrap}',
    'src.socket.timeout.ms' = '2000', 'src.session.timeout.ms' = '6000',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{kafka_broker.bootstrap}',
    'out.socket.timeout.ms' = '2000', 'out.flush_timeout' = '3s',
    'failure_strategy' = 'RetryWithBackoff', 'max_retries' = '100',
    'retry_backoff_ms' = '250'
);
"""
    job = RunningJob(build_processor(sql, make_manager(registry=registry)))

    def trickle() -> None:
        for start in range(0, N, 200):
            values = [orjson.dumps({"id": i}) for i in range(start, start + 200)]
            kafka_broker.produce(source, values)
            time.sleep(0.1)

    producer = threading.Thread(target=trickle, daemon=True)
    producer.start()
    job.wait_records_in(1_000, timeout=60)
    kafka_broker.freeze()
    try:
        time.sleep(FREEZE_SECONDS)
    finally:
        kafka_broker.thaw()
    producer.join(120)

    def all_committed() -> bool:
        offsets = kafka_broker.committed(group, source)
        return sum(max(0, o) for o in offsets.values()) == N

    job.wait_for(all_committed, 120, "every offset committed")
    job.stop()

    ids = {orjson.loads(r.value)["id"] for r in kafka_broker.read_all(sink)}
    assert ids == set(range(N))  # at-least-once: nothing lost
    errors = {
        (sample.labels["stage"], sample.labels["kind"]): sample.value
        for family in registry.collect()
        if family.name == "velo_job_errors"
        for sample in family.samples
        if sample.name == "velo_job_errors_total"
    }
    assert errors, "the outage left no error behind"
    assert set(errors) <= {
        (stage, kind)
        for stage in ("source", "sink", "commit")
        for kind in ("ConnectionError", "TimeoutError")
    }, errors
    assert job.processor.stats.retries > 0
