"""A stateful job on one server and on two: records/s and the scaling ratio.

One `tansu` broker (the tests' Kafka-protocol broker) on a loopback port. A topic of
`--partitions` partitions is filled with `--messages` JSON trades over 400 symbols.
The job is `GROUP BY symbol` with EMIT CHANGES, `'state.partitioned' = 'true'`,
transactional (docs/scaling.md). Alternated over `--rounds` rounds, each case deploys
the application on fresh `velo-sql server` processes (`deploy-app`, each with its own
data dir and NODE_ID) in a fresh consumer group, and is timed from the servers' start
until the group has committed the whole input (start-up and the group join count, as
a user waits for them):

1. keyed, 1 server: the topic keyed by symbol (`key.columns`), one server;
2. keyed, 2 servers: the same on two servers sharing the group;
3. repartitioned, 1 server: the topic keyed by trade id, so the job first rewrites
   every trade to its repartition topic keyed by symbol (two jobs on the server).

Prints the median seconds and records/s of each, the scaling ratio (2 servers / 1)
and the repartition overhead (repartitioned / keyed, one server). On this 2-core
machine two servers share the same two cores, so the ratio measures what sharing
the work costs more than what a second machine would bring.

    python benchmarks/bench_scale.py [--messages 200000] [--rounds 3] [--partitions 4]

Exit code: 0, or 2 when a case did not finish (its logs are printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from common import free_port, stop_server, velo_sql
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' broker helper, as the tests start it

from tests.integration.kafka_broker import QUIET, KafkaBroker, tansu_binary  # noqa: E402

SYMBOLS = [f"S{i:03d}" for i in range(400)]
TIMEOUT = 600.0
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def trades(n: int, by_id: bool) -> tuple[list[bytes], list[bytes]]:
    values, keys = [], []
    for i in range(n):
        symbol = SYMBOLS[(i * 7919) % len(SYMBOLS)]
        values.append(orjson.dumps({"id": i, "symbol": symbol, "qty": i % 17 + 1}))
        keys.append(str(i).encode() if by_id else symbol.encode())
    return values, keys


def app_sql(bootstrap: str, topic: str, group: str, sink: str, keyed: bool) -> str:
    key = "'src.key.columns' = 'symbol', " if keyed else ""
    return f"""-- @app: scale
-- @job_mode: transactional
-- @batch_size: 20000
CREATE TABLE per_symbol AS
SELECT symbol PRIMARY KEY, COUNT(*) AS n, SUM(qty) AS total FROM src
GROUP BY symbol EMIT CHANGES
WITH ('src.type' = 'kafka_source', 'src.topic' = '{topic}', {key}
      'src.bootstrap.servers' = '{bootstrap}', 'src.group.id' = '{group}',
      'src.session.timeout.ms' = '6000',
      'per_symbol.type' = 'kafka_sink', 'per_symbol.topic' = '{sink}',
      'per_symbol.bootstrap.servers' = '{bootstrap}',
      'state.partitioned' = 'true');
"""


def caught_up(broker: KafkaBroker, group: str, topic: str) -> bool:
    """Whether `group` has committed `topic` (written without transactions) to its end."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe", **QUIET})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()
    committed = broker.committed(group, topic)
    return bool(ends) and all(committed.get(p, -1) >= end for p, end in ends.items())


def last_records(broker: KafkaBroker, topic: str) -> dict[int, int]:
    """Each partition's last record offset (a transactional topic also has offsets for
    its commit and abort markers, so its end may be a marker)."""
    last: dict[int, int] = {}
    for record in broker.read_all(topic):
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    return last


def run_case(
    broker: KafkaBroker, work: Path, topic: str, servers: int, keyed: bool, label: str
) -> float | None:
    """Seconds from the servers' start until the group has committed every input."""
    group = f"g-{label}-{time.monotonic_ns()}"
    sink = broker.create_topic(f"out-{group}")
    app = work / f"{group}.sql"
    app.write_text(app_sql(broker.bootstrap, topic, group, sink, keyed))
    processes, logs = [], []
    started = time.perf_counter()
    for i in range(servers):
        log = work / f"{group}-{i}.log"
        logs.append(log)
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        velo_sql(),
                        "deploy-app",
                        "--file",
                        str(app),
                        "--port",
                        str(free_port()),
                        "--data-dir",
                        str(work / f"{group}-{i}"),
                    ],
                    cwd=work,
                    env={**ENV, "NODE_ID": f"node-{i}"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    repartitioned: dict[int, int] = {}  # the repartition topic's last records, once written

    def done() -> bool:
        if keyed:
            return caught_up(broker, group, topic)
        if not repartitioned:
            if not caught_up(broker, f"{group}-repartition", topic):
                return False
            repartitioned.update(last_records(broker, f"{group}-repartition"))
        committed = broker.committed(group, f"{group}-repartition")
        return all(committed.get(p, -1) > offset for p, offset in repartitioned.items())

    took: float | None = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if done():
                took = time.perf_counter() - started
                break
    finally:
        stop_server(*processes)
    if took is None:
        for log in logs:
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="velo-scale-") as tmp:
        work = Path(tmp)
        broker = KafkaBroker(tansu_binary(), work / "broker.log").start()
        try:
            keyed_topic = broker.create_topic("keyed", args.partitions)
            by_id_topic = broker.create_topic("by-id", args.partitions)
            for topic, by_id in ((keyed_topic, False), (by_id_topic, True)):
                values, keys = trades(n, by_id)
                broker.produce(topic, values, keys=keys)
            cases = {
                "keyed, 1 server": (keyed_topic, 1, True),
                "keyed, 2 servers": (keyed_topic, 2, True),
                "repartitioned, 1 server": (by_id_topic, 1, False),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(args.rounds):
                for name, (topic, servers, keyed) in cases.items():  # alternated
                    label = f"{round_}-{len(times[name])}-{servers}-{int(keyed)}"
                    took = run_case(broker, work, topic, servers, keyed, label)
                    if took is None:
                        print(f"{name}: did not finish within {TIMEOUT:.0f}s")
                        return 2
                    times[name].append(took)
                    print(f"  round {round_ + 1}: {name}: {took:.2f} s", flush=True)
        finally:
            broker.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{n:,} trades, {args.partitions} partitions, {args.rounds} rounds, medians")
    print(f"{'case':<26} {'seconds':>8} {'records/s':>10}")
    for name, seconds in medians.items():
        print(f"{name:<26} {seconds:>8.2f} {n / seconds:>10,.0f}")
    one, two = medians["keyed, 1 server"], medians["keyed, 2 servers"]
    print(f"scaling, 2 servers / 1: {one / two:.2f}x the records/s")
    print(f"repartition overhead: {medians['repartitioned, 1 server'] / one:.2f}x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
