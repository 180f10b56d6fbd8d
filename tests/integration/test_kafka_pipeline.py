"""Topic -> SQL -> topic on a real broker, for each value format, with keys and headers."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor

pytestmark = pytest.mark.integration


def _sql(
    broker: KafkaBroker, select: str, source: str, sink: str, fmt: str, extra: str = ""
) -> str:
    return f"""
-- @app: kafka_it
CREATE STREAM out AS {select}
WITH (
    'src.type' = 'kafka_source',
    'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}',
    'src.value.format' = '{fmt}',
    'src.group.id' = 'g-{source}',
    'out.type' = 'kafka_sink',
    'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}',
    'out.value.format' = '{fmt}'{extra}
);
"""


def _sample(registry: CollectorRegistry, name: str, job: str = "out") -> float:
    value = registry.get_sample_value(name, {"job": job})
    return 0.0 if value is None else value


def test_json_keys_from_primary_key_and_headers_kept(
    kafka_broker: KafkaBroker,
    new_topic: Callable[..., str],
    make_manager: ManagerFactory,
    registry: CollectorRegistry,
) -> None:
    source, sink = new_topic("in", partitions=2), new_topic("out")
    n = 400
    trades = [
        {"id": i, "symbol": f"S{i % 5}", "price": float(i % 200) + 0.5, "qty": i % 7}
        for i in range(n)
    ]
    kafka_broker.produce(
        source,
        [orjson.dumps(t) for t in trades],
        keys=[f"in-{i}".encode() for i in range(n)],
        headers=[[("trace", f"t{i}".encode()), ("src", b"test")] for i in range(n)],
    )
    sql = _sql(
        kafka_broker,
        "SELECT id PRIMARY KEY, symbol PRIMARY KEY, price * qty AS notional, _headers "
        "FROM src WHERE price > 100",
        source,
        sink,
        "json",
    )
    job = RunningJob(build_processor(sql, make_manager(registry=registry)))
    expected = [t for t in trades if t["price"] > 100]
    job.wait_records_in(n)
    job.stop()

    out = kafka_broker.read_all(sink)
    assert len(out) == len(expected)
    by_id = {orjson.loads(r.value)["id"]: r for r in out}
    for t in expected:
        record = by_id[t["id"]]
        assert orjson.loads(record.value) == {
            "id": t["id"],
            "symbol": t["symbol"],
            "notional": t["price"] * t["qty"],
        }
        assert record.key == f"{t['id']}|{t['symbol']}".encode()
        assert record.headers == [("trace", f"t{t['id']}".encode()), ("src", b"test")]
    assert _sample(registry, "velo_job_records_in_total") == n
    assert _sample(registry, "velo_job_records_out_total") == len(expected)
    assert _sample(registry, "velo_job_records_failed_total") == 0
    assert kafka_broker.committed(f"g-{source}", source) == {
        p: sum(1 for r in kafka_broker.read_all(source) if r.partition == p) for p in (0, 1)
    }


def test_string_values_with_key_and_headers_passed_through(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink = new_topic("in"), new_topic("out")
    words = ["apple", "avocado", "banana", "apricot", "cherry", "élan", "almond"] * 20
    kafka_broker.produce(
        source,
        [w.encode() for w in words],
        keys=[f"k{i}".encode() for i in range(len(words))],
        headers=[[("n", str(i).encode())] for i in range(len(words))],
    )
    sql = _sql(
        kafka_broker,
        "SELECT UPPER(value) AS value, _key, _headers FROM src WHERE value LIKE 'a%'",
        source,
        sink,
        "string",
    )
    job = RunningJob(build_processor(sql, make_manager()))
    job.wait_records_in(len(words))
    job.stop()

    out = kafka_broker.read_all(sink)
    expected = [(i, w) for i, w in enumerate(words) if w.startswith("a")]
    assert [(r.key, r.value, r.headers) for r in out] == [
        (f"k{i}".encode(), w.upper().encode(), [("n", str(i).encode())]) for i, w in expected
    ]


def test_bytes_values_round_trip_unchanged(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink = new_topic("in"), new_topic("out")
    blobs = [bytes([i % 256, 0xFF, 0x00, 0xFE]) * (1 + i % 3) for i in range(300)]
    kafka_broker.produce(
        source,
        blobs,
        keys=[bytes([i % 256, 0x80]) if i % 2 else None for i in range(300)],
        headers=[[("bin", bytes([0xC3, i % 256]))] for i in range(300)],
    )
    sql = _sql(
        kafka_broker,
        "SELECT value, _key, _headers FROM src WHERE octet_length(value) > 4",
        source,
        sink,
        "bytes",
        ",\n    'src.key.format' = 'bytes'",
    )
    job = RunningJob(build_processor(sql, make_manager()))
    job.wait_records_in(len(blobs))
    job.stop()

    out = kafka_broker.read_all(sink)
    expected = [i for i, b in enumerate(blobs) if len(b) > 4]
    assert [r.value for r in out] == [blobs[i] for i in expected]
    assert [r.key for r in out] == [bytes([i % 256, 0x80]) if i % 2 else None for i in expected]
    assert [r.headers for r in out] == [[("bin", bytes([0xC3, i % 256]))] for i in expected]
