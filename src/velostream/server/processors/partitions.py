"""A job whose state is partitioned: its Kafka glue (partitioning.py decides which).

The job's executor keeps one executor per input partition (`PartitionedExecutor`).
This module wires it to its Kafka source and its changelog topic:

- when the consumer group gives the job a partition, its state is rebuilt before any
  row of it is processed: from the local checkpoint when that covers exactly the
  group's committed offset (the checkpoint is only a cache), else from the changelog;
- when a partition is taken away (after the batch in flight committed), its state is
  dropped here: its next holder rebuilds it;
- before each commit, the state of every partition the batch touched is staged on the
  changelog sink, which the committer commits with the batch (in transactional mode
  in the batch's transaction).

Restores are counted in the job's metrics and logged; a failed one is a `source` error
naming the partition, and fails the read (the job's strategy retries it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from velostream.datasource.kafka.changelog import (
    ChangelogSink,
    changelog_topic,
    encode_state,
    restore,
)
from velostream.datasource.kafka.client import translate
from velostream.datasource.kafka.source import KafkaSource, parse_position
from velostream.datasource.kafka.topics import ensure_topic, partition_count
from velostream.datasource.traits import SourceBatch
from velostream.engine.partitioned import PartitionedExecutor
from velostream.errors import SourceError, Stage, VelostreamError
from velostream.observability.state_metrics import StateFamilies
from velostream.sql.model import JobSpec
from velostream.sql.pipeline import REPARTITION_OF

if TYPE_CHECKING:
    from velostream.server.processors.context import ErrorHook

__all__ = ["PartitionedState"]

_log = logging.getLogger("velostream.processor")
_UNKNOWN = -1  # a partition's committed offset, not asked yet
# Client settings the changelog's clients share with the source (the rest are its own).
_SHARED = ("bootstrap.servers", "security.", "sasl.", "ssl.", "client.dns.lookup")


class PartitionedState:
    """Restores, drops and logs a partitioned job's state; see the module docstring."""

    def __init__(
        self,
        job: JobSpec,
        app: str,
        source: KafkaSource,
        executor: PartitionedExecutor,
        record_error: ErrorHook,
        metrics: StateFamilies,
    ) -> None:
        self.job = job
        self.source = source
        self.executor = executor
        self.record_error = record_error
        self.metrics = metrics
        self.gauges = metrics.for_job(job.name)
        shared = {k: v for k, v in source.properties.items() if k.startswith(_SHARED)}
        self.client = {k: v for k, v in source.config.client.items() if k.startswith(_SHARED)}
        self.topic = changelog_topic(app, job.name, source.config.group_id)
        self.changelog = ChangelogSink(f"{job.name}-changelog", {**shared, "topic": self.topic})
        self._lock = threading.Lock()
        self.restoring: set[int] = set()
        #: Partitions given but not restored yet: `{p: the group's committed offset}`.
        self.pending: dict[int, int | None] = {}
        source.listener = self

    @property
    def sinks(self) -> list[ChangelogSink]:
        return [self.changelog]

    def open(self) -> None:
        """Before the source subscribes: create the repartition topic the job reads (if
        it reads one) and the changelog, with as many partitions as the input's."""
        like = self.source.properties.get(REPARTITION_OF)
        count = partition_count(self.client, like or self.source.topic, name=self.job.name)
        if like:
            ensure_topic(self.client, self.source.topic, count, compact=False, name=self.job.name)
        ensure_topic(self.client, self.topic, count, compact=True, name=self.job.name)
        self.changelog.open()

    def close(self) -> None:
        self.changelog.close()

    # -- the source's partitions coming and going (inside its consume) -------------

    def assigned(self, consumer: Consumer, partitions: list[int]) -> None:
        topic = self.source.topic
        wanted = [TopicPartition(topic, p) for p in partitions]
        if not wanted:
            return
        self.pending.update(dict.fromkeys(partitions, _UNKNOWN))
        # A failure is recorded; the batch's ready() tries again, failing it meanwhile.
        with contextlib.suppress(VelostreamError):
            self.ready()

    def ready(self) -> None:
        """Restore the partitions given and not restored yet (a failure raises, after
        it is recorded as a `source` error naming the partition)."""
        self._ask_committed()
        wanted = {p: o for p, o in self.pending.items() if p in self.source.assignment}
        for partition in [p for p in self.pending if p not in wanted]:
            del self.pending[partition]
        if wanted:
            self._restore(wanted)

    def _ask_committed(self) -> None:
        """The group's committed offset of each partition given, where not known yet.

        A partition whose offset cannot be told (an error, or an offset another
        member's open transaction still holds) stays unknown: its state is never
        guessed, and the batch fails and is tried again."""
        unknown = sorted(p for p, o in self.pending.items() if o == _UNKNOWN)
        if not unknown:
            return
        asked = [TopicPartition(self.source.topic, p) for p in unknown]
        try:
            answers = self.source.consumer.committed(asked, timeout=30)
        except KafkaException as exc:
            error = translate(exc, stage=Stage.SOURCE, name=self.source.name, doing="restoring")
            self.record_error(Stage.SOURCE, f"reading the committed offsets: {error}", exc=error)
            raise error from exc
        failed = []
        for tp in answers:
            if tp.error is not None:
                failed.append(f"partition {tp.partition}: {tp.error.str()}")
            else:
                self.pending[tp.partition] = tp.offset if tp.offset >= 0 else None
        if failed:
            error = SourceError(
                f"kafka '{self.source.name}': the committed offsets of {'; '.join(failed)} "
                "cannot be read yet; the state of those partitions waits for them",
                stage=Stage.SOURCE,
                source=self.source.name,
            )
            self.record_error(Stage.SOURCE, str(error), exc=error)
            raise error

    def _restore(self, committed: dict[int, int | None]) -> None:
        """Rebuild the given partitions' state: from the local checkpoint when it covers
        exactly the committed offset, else from the changelog."""
        from_changelog: dict[int, int | None] = {}
        for partition, offset in sorted(committed.items()):
            cached = self.executor.cache.get(partition)
            if cached is not None and offset is not None and cached[0] == offset:
                self.executor.assign(partition, cached[1], cached[0])
                del self.pending[partition]
                self.metrics.restored(self.job.name, "cache", 0, 0.0)
                _log.info(
                    "job %r: partition %d state from the local checkpoint (offset %d)",
                    self.job.name,
                    partition,
                    offset,
                )
            else:
                from_changelog[partition] = offset
        self.gauges.partitions = len(self.executor.partitions)
        if not from_changelog:
            return
        with self._lock:
            self.restoring.update(from_changelog)
            self.gauges.restoring = len(self.restoring)
        try:
            found = restore(self.client, self.topic, from_changelog, name=self.job.name)
        except VelostreamError as exc:
            message = f"restoring partitions {sorted(from_changelog)} from '{self.topic}': {exc}"
            self.record_error(Stage.SOURCE, message, exc=exc)
            raise
        finally:
            with self._lock:
                self.restoring.difference_update(from_changelog)
                self.gauges.restoring = len(self.restoring)
        for partition, got in sorted(found.items()):
            self.executor.assign(partition, got.state, got.input_offset)
            del self.pending[partition]
            origin = "changelog" if got.state is not None else "empty"
            self.metrics.restored(self.job.name, origin, got.records, got.seconds)
            _log.info(
                "job %r: partition %d state %s: %d messages, %d bytes in %.3fs (covers "
                "input to offset %s; committed %s; %d later snapshots passed over)",
                self.job.name,
                partition,
                f"restored from {self.topic}" if got.state is not None else "starts empty",
                got.records,
                got.bytes,
                got.seconds,
                got.input_offset,
                committed[partition],
                got.passed_over,
            )
        self.gauges.partitions = len(self.executor.partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.executor.revoke(partition)
            self.pending.pop(partition, None)
            self.gauges.lag.pop(partition, None)
        self.gauges.partitions = len(self.executor.partitions)
        _log.info("job %r: partitions now %s", self.job.name, self.executor.partitions)

    # -- the batch ------------------------------------------------------------------

    def stage(self, batch: SourceBatch) -> None:
        """Stage the state of each partition the batch touched, with its input offset."""
        offsets = parse_position(batch.position, self.source.topic)
        states: dict[int, tuple[int, bytes]] = {}
        for partition in sorted(self.executor.touched):
            offset = offsets.get(partition)
            if offset is None:
                continue
            self.executor.input_offsets[partition] = offset
            states[partition] = (offset, encode_state(self.executor.partition_state(partition)))
        self.changelog.stage(states)
        self._measure_lag()

    def _measure_lag(self) -> None:
        """Each held partition's lag, from the high watermarks of the last fetch."""
        consumer = self.source.consumer
        position = parse_position(self.source.position, self.source.topic)
        for partition in self.executor.partitions:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.source.topic, partition), cached=True
                )
            except KafkaException:
                continue
            reached = position.get(partition)
            if high >= 0 and reached is not None:
                self.gauges.lag[partition] = max(0, high - reached)

    def describe(self) -> dict[str, Any]:
        """For the job's document: the partitions held and those being restored."""
        with self._lock:
            restoring = sorted(self.restoring)
        return {
            "topic": self.source.topic,
            "partitions": self.executor.partitions,
            "restoring": restoring,
            "changelog": self.topic,
        }
