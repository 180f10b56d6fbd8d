"""Poison messages and client errors on a real broker: nothing vanishes, counters exact."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor
from velostream.errors import ErrorKind, Stage

pytestmark = pytest.mark.integration

POISON = {
    7: b'{"id": 7, "symbol": "S7", "price": ',  # truncated JSON
    19: b'{"id": "nineteen", "symbol": "S9", "price": 1.5, "qty": "1"}',  # wrong type
    33: b"[33, 34]",  # not an object
    41: b"",  # empty
    58: b"\xff\xfe not utf-8",
    71: b'{"id": 71, "symbol": "S1", "price": 150.5, "qty": "seven"}',  # fails in the SQL
}


def _value(i: int) -> bytes:
    if i in POISON:
        return POISON[i]
    return orjson.dumps({"id": i, "symbol": f"S{i % 10}", "price": i * 2.5, "qty": str(i % 9)})


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"job": "out", **labels})
    return 0.0 if value is None else value


def test_poison_messages_go_to_the_dlq_topic_with_context(
    kafka_broker: KafkaBroker,
    new_topic: Callable[..., str],
    make_manager: ManagerFactory,
    registry: CollectorRegistry,
) -> None:
    source, sink, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    n = 100
    kafka_broker.produce(
        source,
        [_value(i) for i in range(n)],
        keys=[f"key-{i}".encode() for i in range(n)],
        headers=[[("trace", f"t{i}".encode())] for i in range(n)],
        partition=None,
    )
    sql = f"""
-- @app: kafka_errors
-- @version: 1.2.3
-- @batch_size: 30
CREATE STREAM out AS
SELECT id PRIMARY KEY, symbol, price * CAST(qty AS INTEGER) AS notional
FROM src
WITH (
    'src.type' = 'kafka_source', 'src.topic' = '{source}',
    'src.bootstrap.servers' = '{kafka_broker.bootstrap}',
    'out.type' = 'kafka_sink', 'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{kafka_broker.bootstrap}',
    'failure_strategy' = 'SendToDLQ',
    'dlq.topic' = '{dlq}'
);
"""
    manager = make_manager(registry=registry)
    job = RunningJob(build_processor(sql, manager))
    job.wait_records_in(n)
    job.stop()

    good = [i for i in range(n) if i not in POISON]
    out = kafka_broker.read_all(sink)
    assert sorted(orjson.loads(r.value)["id"] for r in out) == good
    assert all(r.key == str(orjson.loads(r.value)["id"]).encode() for r in out)

    letters = kafka_broker.read_all(dlq)
    assert len(letters) == len(POISON)
    by_key = {r.key: r for r in letters}
    source_records = {r.key: r for r in kafka_broker.read_all(source)}
    for i, raw in POISON.items():
        letter = by_key[f"key-{i}".encode()]
        original = source_records[f"key-{i}".encode()]
        assert letter.value == raw  # the original bytes, untouched
        assert letter.headers[0] == ("trace", f"t{i}".encode())
        assert letter.header("velo.error.job") == "out"
        assert letter.header("velo.error.app") == "kafka_errors"
        assert letter.header("velo.error.version") == "1.2.3"
        assert letter.header("velo.error.source.topic") == source
        assert letter.header("velo.error.source.partition") == str(original.partition)
        assert letter.header("velo.error.source.offset") == str(original.offset)
        assert (
            letter.header("velo.error.position")
            == f"{source}/{original.partition}/{original.offset}"
        )
        assert letter.header("velo.error.node_id") == "node-1"
        assert letter.header("velo.error.region") == "eu-west-1"
        assert letter.header("velo.error.fingerprint")
        assert letter.header("velo.error.message")
        assert float(letter.header("velo.error.timestamp") or 0) > time.time() - 600
        stage = Stage.PROCESS if i == 71 else Stage.DESERIALIZE
        assert letter.header("velo.error.stage") == stage.value
        kind = ErrorKind.TYPE if i in (19, 71) else ErrorKind.PARSE
        assert letter.header("velo.error.kind") == kind.value, (i, letter.headers)

    assert _count(registry, "velo_job_records_in_total") == n
    assert _count(registry, "velo_job_records_out_total") == len(good)
    assert _count(registry, "velo_job_records_failed_total") == len(POISON)
    assert _count(registry, "velo_dlq_records_total") == len(POISON)
    assert _count(registry, "velo_dlq_write_failures_total") == 0
    errors = {
        (stage, kind): _count(registry, "velo_job_errors_total", stage=stage, kind=kind)
        for stage in ("deserialize", "process")
        for kind in ("ParseError", "TypeError")
    }
    assert errors == {
        ("deserialize", "ParseError"): 4,
        ("deserialize", "TypeError"): 1,
        ("process", "ParseError"): 0,
        ("process", "TypeError"): 1,
    }

    # The queue reads its letters back, for /jobs/{name}/dlq and replay.
    dlq_queue = job.processor.dlq
    page, following = dlq_queue.read(0, 100)
    assert following is None
    assert sorted(letter.payload for letter in page) == sorted(POISON.values())
    assert {letter.doc["job"] for letter in page} == {"out"}
