"""Transactional mode on a real broker: outputs, dead letters and offsets commit together;
a failed batch is rewound and processed again, exactly once for read_committed readers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor
from velostream.server.processors.kafka_transactional import KafkaTransactionalCommitter

pytestmark = pytest.mark.integration

N = 3_000


def _sql(
    broker: KafkaBroker, source: str, sink: str, dlq: str, strategy: str, where: str = "price >= 0"
) -> str:
    return f"""
-- @app: txn
-- @job_mode: transactional
-- @batch_size: 300
CREATE STREAM out AS SELECT id PRIMARY KEY, price FROM src WHERE {where}
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}', 'src.group.id' = 'g-{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}',
    'failure_strategy' = '{strategy}', 'retry_backoff_ms' = '100',
    'dlq.topic' = '{dlq}'
);
"""


def _value(i: int) -> bytes:
    return b"{broken" if i % 500 == 499 else orjson.dumps({"id": i, "price": i * 1.5})


def _wait_committed(job: RunningJob, broker: KafkaBroker, source: str, timeout: float = 30) -> None:
    """Until the job's group has committed every one of the N input offsets. A partition
    the producer put no message in has nothing to commit (-1001, no offset): it counts 0."""
    try:
        job.wait_for(
            lambda: sum(max(0, o) for o in broker.committed(f"g-{source}", source).values()) == N,
            timeout,
            "offsets committed",
        )
    except AssertionError as exc:  # say where the group and the job each got to
        committer = job.processor.committer
        raise AssertionError(
            f"{exc}\ngroup committed {broker.committed(f'g-{source}', source)}; "
            f"the job committed {getattr(committer, 'position', None)}"
        ) from exc


def test_batches_commit_exactly_once_with_their_dead_letters_and_offsets(
    kafka_broker: KafkaBroker,
    new_topic: Callable[..., str],
    make_manager: ManagerFactory,
    registry: CollectorRegistry,
) -> None:
    source, sink, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    kafka_broker.produce(source, [_value(i) for i in range(N)])
    processor = build_processor(
        _sql(kafka_broker, source, sink, dlq, "SendToDLQ"), make_manager(registry=registry)
    )
    assert isinstance(processor.committer, KafkaTransactionalCommitter)
    job = RunningJob(processor)
    job.wait_records_in(N)
    _wait_committed(job, kafka_broker, source)
    job.stop()

    bad = {i for i in range(N) if i % 500 == 499}
    out = Counter(orjson.loads(r.value)["id"] for r in kafka_broker.read_all(sink))
    assert set(out) == set(range(N)) - bad and max(out.values()) == 1
    letters = kafka_broker.read_all(dlq)
    assert [r.value for r in letters] == [b"{broken"] * len(bad)
    assert registry.get_sample_value("velo_dlq_records_total", {"job": "out"}) == len(bad)


def test_a_failed_batch_is_rewound_and_processed_again_once(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    kafka_broker.produce(source, [orjson.dumps({"id": i, "price": float(i)}) for i in range(N)])
    processor = build_processor(
        _sql(kafka_broker, source, sink, dlq, "RetryWithBackoff"), make_manager()
    )
    process = processor.executor.process
    calls = {"n": 0}

    def fail_once(batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] in (3, 5):  # after some batches committed, mid-stream
            raise RuntimeError("injected failure")
        return process(batch)

    processor.executor.process = fail_once
    job = RunningJob(processor)
    _wait_committed(job, kafka_broker, source, 60)
    job.stop()

    # Both injected failures were retried; a broker blip under load may add a retry of
    # its own (a read retried is counted too), never fewer.
    assert processor.stats.retries >= 2, processor.stats
    out = Counter(orjson.loads(r.value)["id"] for r in kafka_broker.read_all(sink))
    missing = sorted(set(range(N)) - set(out))
    twice = sorted(i for i, n in out.items() if n > 1)
    assert not missing and not twice, f"missing {missing[:10]}, twice {twice[:10]}"


def test_batches_that_output_nothing_still_commit_their_offsets(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    """Every row is filtered out, so no batch has a record to produce: the offsets still
    commit (on tansu, an offsets-only transaction would leave the group behind)."""
    source, sink, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    kafka_broker.produce(source, [orjson.dumps({"id": i, "price": float(i)}) for i in range(N)])
    processor = build_processor(
        _sql(kafka_broker, source, sink, dlq, "LogAndContinue", where="price < 0"),
        make_manager(),
    )
    job = RunningJob(processor)
    job.wait_records_in(N)
    _wait_committed(job, kafka_broker, source)
    job.stop()
    assert processor.stats.batches == N // 300 and processor.stats.records_out == 0
    assert kafka_broker.read_all(sink) == []
