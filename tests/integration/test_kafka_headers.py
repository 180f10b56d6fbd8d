"""Kafka header functions on a real broker: a job reads headers and writes SET_HEADER ones.

Messages go in with headers (one with a value that is not UTF-8, some without the
header the job filters on); the job's output is read back by a consumer and its
headers and values compared with what the SQL says.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tests.helpers import ManagerFactory
from tests.integration.kafka_broker import KafkaBroker, RunningJob, build_processor

pytestmark = pytest.mark.integration


def _sql(broker: KafkaBroker, select: str, source: str, sink: str) -> str:
    return f"""
-- @app: kafka_headers
CREATE STREAM out AS {select}
WITH (
    'src.type' = 'kafka_source',
    'src.topic' = '{source}',
    'src.bootstrap.servers' = '{broker.bootstrap}',
    'src.group.id' = 'g-{source}',
    'out.type' = 'kafka_sink',
    'out.topic' = '{sink}',
    'out.bootstrap.servers' = '{broker.bootstrap}'
);
"""


def _text(x: float) -> str:
    """A float as a header's text: integral values without a fraction (as the original)."""
    return str(int(x)) if x == int(x) else repr(x)


def test_a_job_reads_headers_and_writes_set_header_ones(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink = new_topic("in"), new_topic("out")
    n = 60
    orders = [{"id": i, "amount": i * 10.5} for i in range(n)]
    headers: list[list[tuple[str, bytes]]] = []
    for i in range(n):
        row = [("tenant", f"acme-{i % 3}".encode())]
        if i % 4:
            row.append(("trace-id", f"tr-{i}".encode()))
        if i == 5:
            row.append(("blob", b"\xff\xfe\x00raw"))
        headers.append(row)
    kafka_broker.produce(source, [orjson.dumps(o) for o in orders], headers=headers)
    sql = _sql(
        kafka_broker,
        "SELECT id, HEADER('tenant') AS tenant, HEADER_KEYS() AS keys, "
        "SET_HEADER('trace-id', HEADER('trace-id')) AS trace, "
        "SET_HEADER('amount', amount) AS amount, "
        "SET_HEADER('big', amount > 300) AS big, "
        "SET_HEADER('blob', list_filter(_headers, lambda h: h.key = 'blob')[1].value) AS b "
        "FROM src WHERE HAS_HEADER('trace-id')",
        source,
        sink,
    )
    job = RunningJob(build_processor(sql, make_manager()))
    job.wait_records_in(n)
    job.stop()

    out = kafka_broker.read_all(sink)
    expected = [o for o in orders if o["id"] % 4]
    assert len(out) == len(expected)
    for record, order in zip(out, expected, strict=True):
        i = order["id"]
        value = orjson.loads(record.value)
        keys = "tenant,trace-id" + (",blob" if i == 5 else "")
        assert {k: value[k] for k in ("id", "tenant", "keys", "trace", "amount", "big")} == {
            "id": i,
            "tenant": f"acme-{i % 3}",
            "keys": keys,
            "trace": f"tr-{i}",
            "amount": order["amount"],
            "big": order["amount"] > 300,
        }
        assert record.headers == [
            ("trace-id", f"tr-{i}".encode()),
            ("amount", _text(order["amount"]).encode()),
            ("big", b"true" if order["amount"] > 300 else b"false"),
            ("blob", b"\xff\xfe\x00raw" if i == 5 else None),  # bytes kept exactly
        ]


def test_set_header_replaces_a_passed_through_header(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], make_manager: ManagerFactory
) -> None:
    source, sink = new_topic("in"), new_topic("out")
    kafka_broker.produce(
        source,
        [orjson.dumps({"id": i}) for i in range(10)],
        headers=[[("stage", b"raw"), ("keep", bytes([0x80, i]))] for i in range(10)],
    )
    sql = _sql(
        kafka_broker,
        "SELECT id, _headers, SET_HEADER('stage', 'enriched') AS stage FROM src",
        source,
        sink,
    )
    job = RunningJob(build_processor(sql, make_manager()))
    job.wait_records_in(10)
    job.stop()

    out = kafka_broker.read_all(sink)
    assert [r.headers for r in out] == [
        [("keep", bytes([0x80, i])), ("stage", b"enriched")] for i in range(10)
    ]
    assert [orjson.loads(r.value) for r in out] == [
        {"id": i, "stage": "enriched"} for i in range(10)
    ]
