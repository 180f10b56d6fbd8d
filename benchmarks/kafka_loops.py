"""The baselines of bench_kafka.py, each run as its own process.

`hand` and `quix` do what the benchmark's SQL job does to every message of the input
topic: decode the JSON value, keep it when `qty > 50`, and write `{id, symbol, notional
= price * qty}` as JSON to the output topic. `read` is no contender but a bound: the
reads every contender must make, and nothing else.

- `hand`: a hand-written confluent-kafka loop: `consume` in batches of 100,000,
  orjson (as Quix Streams uses), `produce` per message, auto-committed offsets. It stops by itself
  once it has read `--messages` messages and the producer has delivered everything.
- `read`: the reads alone: the same group join and every message consumed, nothing
  decoded; once it has read `--messages` messages it writes one message, its end, and
  stops.
- `quix`: a Quix Streams 3.x `Application` (filter, `apply`, `to_topic`), run until
  SIGTERM, which it handles by committing and closing.

    python benchmarks/kafka_loops.py hand|read|quix BOOTSTRAP INPUT OUTPUT GROUP MESSAGES

Only confluent-kafka and orjson are imported at the top, so that the hand loop's
start-up is what such a script's would be; quixstreams is imported by `quix`.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

THRESHOLD = 50  # the filter: qty > THRESHOLD
# As many messages per `consume` as our job's batch: with batches of 10,000, the hand
# loop took 8.9-9.1 s on bench_kafka's 1M messages, and 6.5 s with 100,000. The
# baseline reads as fast as it can.
CONSUME_BATCH = 100_000
# Every contender's consumer: tansu answers a new group's join after half the session
# timeout, so all three wait the same ~1 s before their first message.
GROUP_SETTINGS = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}


def project(row: dict[str, Any]) -> dict[str, Any]:
    """The projection, as the SQL job's SELECT list."""
    return {"id": row["id"], "symbol": row["symbol"], "notional": row["price"] * row["qty"]}


def _clients(bootstrap: str, group: str) -> tuple[Consumer, Producer]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **GROUP_SETTINGS,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    return consumer, producer


def _produce(producer: Producer, sink: str, value: bytes) -> None:
    while True:
        try:
            producer.produce(sink, value)
            return
        except BufferError:  # the queue is full: let deliveries drain it
            producer.poll(0.05)


def _finish(consumer: Consumer, producer: Producer, name: str) -> None:
    left = producer.flush(120)
    consumer.close()
    if left:
        raise SystemExit(f"{name}: {left} messages not delivered")


def hand(bootstrap: str, source: str, sink: str, group: str, messages: int) -> None:
    """consume → orjson decode → filter/project → orjson encode → produce, in one thread."""
    consumer, producer = _clients(bootstrap, group)
    consumer.subscribe([source])
    loads, dumps = orjson.loads, orjson.dumps
    seen = 0
    while seen < messages:
        for message in consumer.consume(CONSUME_BATCH, 0.5):
            if message.error() is not None:
                continue
            seen += 1
            row = loads(message.value())
            if row["qty"] > THRESHOLD:
                _produce(producer, sink, dumps(project(row)))
        producer.poll(0)
    _finish(consumer, producer, "hand loop")


def read(bootstrap: str, source: str, sink: str, group: str, messages: int) -> None:
    """Only the reads: join the group, consume every message, decode and write nothing
    but one message at the end, which tells the benchmark it is done. No contender,
    which must read them all too, can finish sooner on this broker."""
    consumer, producer = _clients(bootstrap, group)
    consumer.subscribe([source])
    seen = 0
    while seen < messages:
        seen += sum(1 for m in consumer.consume(CONSUME_BATCH, 0.5) if m.error() is None)
    _produce(producer, sink, b"{}")
    _finish(consumer, producer, "read only")


def quix(bootstrap: str, source: str, sink: str, group: str, messages: int) -> None:
    """A Quix Streams Application doing the same filter and projection, until SIGTERM."""
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        auto_create_topics=False,
        loglevel="WARNING",
        consumer_extra_config=dict(GROUP_SETTINGS),
    )
    input_topic = app.topic(source, value_deserializer="json")
    output_topic = app.topic(sink, value_serializer="json")
    sdf = app.dataframe(input_topic)
    sdf = sdf[sdf["qty"] > THRESHOLD]
    sdf = sdf.apply(project)
    sdf.to_topic(output_topic)
    app.run()


def main(argv: list[str]) -> None:
    kind, bootstrap, source, sink, group, messages = argv
    runner = {"hand": hand, "read": read, "quix": quix}[kind]
    runner(bootstrap, source, sink, group, int(messages))


if __name__ == "__main__":
    main(sys.argv[1:])
