"""`kafka_source`: a topic's messages as micro-batches, offsets committed only when durable.

A batch is what one `consume` returns (up to `max_records` messages, waiting at most
`polling_interval`). Its table holds the decoded values (see `codec`) and the system
columns `_key`, `_partition`, `_offset`, `_timestamp` (the message time, UTC
milliseconds) and `_headers` (a list of `{key, value}` structs, in order). A message
that cannot be decoded is a `BadRecord` with its original bytes and the reference
`topic/partition/offset`.

A batch's position is `{"<topic>-<partition>": next offset}` for every partition
read so far. `commit(position)` commits those offsets synchronously; the job calls it
only after its sinks and dead letters are flushed, so offsets never run ahead of what
is durable (at-least-once). In a consumer group (the default; `partitions` reads by
`assign` instead), a partition taken away in a rebalance first has its durable offset
committed, and messages of it that the same `consume` returned are dropped: its next
owner reads them from that offset. The broker's committed offsets are the truth; a
position for a partition this consumer does not own is ignored.

Client errors (an unreachable broker, failed authorisation) are raised from
`read_batch` as our exceptions when a read brings no messages; the consumer stays
usable, so the job's retry carries on where it was.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from velostream.datasource.kafka.client import ClientErrors, translate
from velostream.datasource.kafka.codec import (
    SYSTEM_COLUMNS,
    Decoded,
    headers_array,
    keys_array,
    value_decoder,
)
from velostream.datasource.kafka.config import KafkaSourceConfig
from velostream.datasource.traits import (
    BadRecord,
    RecordRefs,
    Source,
    SourceBatch,
    TransactionCapability,
)
from velostream.errors import ConfigurationError, SourceError, Stage

__all__ = ["KafkaSource", "MessageRefs", "PartitionListener", "parse_position"]

log = logging.getLogger("velostream.kafka")

# A commit refused because the group is rebalancing: the offsets stay pending and are
# committed with the next commit or when the partitions are revoked.
_REBALANCING = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
}
_SECOND = itemgetter(1)  # of (timestamp type, milliseconds)
_RECENT_BATCHES = 4  # batches whose keys and headers the dead-letter queue may ask for


def parse_position(position: Any, topic: str) -> dict[int, int]:
    """`{partition: next offset}` of `topic` from a position (keys `<topic>-<partition>`)."""
    if position is None:
        return {}
    if not isinstance(position, Mapping):
        raise SourceError(f"not a Kafka position: {position!r}")
    out: dict[int, int] = {}
    for key, offset in position.items():
        name, _, partition = str(key).rpartition("-")
        if name != topic:
            continue
        try:
            out[int(partition)] = int(offset)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"not a Kafka position: {position!r}") from exc
    return out


class PartitionListener(Protocol):
    """Told of the partitions a consumer group gives and takes (a job whose state is
    partitioned), from inside `consume`, between two batches."""

    def assigned(self, consumer: Consumer, partitions: list[int]) -> None: ...
    def revoked(self, partitions: set[int]) -> None: ...


@dataclass(slots=True)
class _Envelope:
    """The metadata of a batch's messages, column-wise, for refs and DLQ look-ups."""

    topic: str
    values: list[bytes | None]
    keys: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray  # milliseconds; negative when the broker gave none
    headers: list[Any]

    @classmethod
    def empty(cls, topic: str, values: Sequence[bytes | None] = ()) -> _Envelope:
        n = len(values)
        return cls(
            topic,
            list(values),
            [None] * n,
            np.zeros(n, np.int32),
            np.arange(1, n + 1, dtype=np.int64),
            np.full(n, -1, np.int64),
            [None] * n,
        )

    def ref(self, index: int) -> str:
        return f"{self.topic}/{self.partitions[index]}/{self.offsets[index]}"

    def find(self, partition: int, offset: int) -> int | None:
        hits = np.flatnonzero((self.partitions == partition) & (self.offsets == offset))
        return int(hits[0]) if len(hits) else None


class MessageRefs(RecordRefs):
    """`topic/partition/offset` and the original value of each good row."""

    def __init__(self, envelope: _Envelope, rows: pa.Array | None) -> None:
        self._env = envelope
        self._rows = None if rows is None else rows.to_numpy(zero_copy_only=False)

    def _message(self, index: int) -> int:
        return index if self._rows is None else int(self._rows[index])

    def ref(self, index: int) -> str:
        return self._env.ref(self._message(index))

    def raw(self, index: int) -> bytes:
        return self._env.values[self._message(index)] or b""


class KafkaSource(Source):
    """Reads one topic; see the module docstring."""

    bounded = False
    # Offsets commit inside the job's producer transaction: exactly-once topic to topic.
    transaction_capability = TransactionCapability.KAFKA_OFFSETS

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self.config = KafkaSourceConfig.from_properties(name, self.properties)
        self.topic = self.config.topic
        self._decoder = value_decoder(self.config.value_format)
        self._errors = ClientErrors(name, Stage.SOURCE)
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()
        self._next: dict[int, int] = {}  # next offset to read, per partition read
        self._start: dict[int, int] = {}  # first offset read since the partition came
        self._durable: dict[int, int] = {}  # offsets handed to commit()
        self._acked: dict[int, int] = {}  # offsets the broker confirmed
        self._revoked_now: set[int] = set()
        # Messages this read had gathered before each `consume` call, and, per partition
        # revoked during the read, that count when it was: its messages before are stale.
        self._gathered = 0
        self._revoked_at: dict[int, int] = {}
        self._recent: deque[_Envelope] = deque(maxlen=_RECENT_BATCHES)
        # A stateful job (GROUP BY, windows, joins, DISTINCT) whose state is kept whole
        # must read every partition: a share of the topic would give partial answers.
        # Set by the job's processor; see `_check_whole_topic`.
        self.whole_topic = False
        self._partition_count: int | None = None
        self.listener: PartitionListener | None = None
        self._woken = False  # a stop asked: the read waiting for messages ends

    # -- lifecycle ------------------------------------------------------------------

    @property
    def consumer(self) -> Consumer:
        """The client (opened on first use); the transactional committer needs it."""
        if self._consumer is None:
            self.open()
        assert self._consumer is not None
        return self._consumer

    @property
    def assignment(self) -> set[int]:
        """The partitions this source reads now."""
        return set(self._assigned)

    def open(self) -> None:
        if self._consumer is not None:
            return
        settings = {**self.config.client, "error_cb": self._errors.callback()}
        try:
            consumer = Consumer(settings)
            if self.config.partitions is not None:
                consumer.assign(
                    [TopicPartition(self.topic, p, OFFSET_STORED) for p in self.config.partitions]
                )
                self._assigned = set(self.config.partitions)
            else:
                consumer.subscribe(
                    [self.topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
        except (KafkaException, ValueError, TypeError) as exc:
            raise translate(exc, stage=Stage.SOURCE, name=self.name, doing="opening") from exc
        self._consumer = consumer

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.close()  # leaves the group; revocation commits what is durable
        except (KafkaException, RuntimeError) as exc:
            raise translate(exc, stage=Stage.SOURCE, name=self.name, doing="closing") from exc

    # -- reading --------------------------------------------------------------------

    def read_batch(self, max_records: int) -> SourceBatch | None:
        consumer = self.consumer
        self._revoked_now = set()
        self._revoked_at = {}
        try:
            messages = self._consume(consumer, max(1, max_records))
        except (KafkaException, RuntimeError) as exc:
            raise translate(exc, stage=Stage.SOURCE, name=self.name, doing="reading") from exc
        log.log(5, "kafka '%s': consumed %d messages", self.name, len(messages))  # 5: TRACE
        if self.whole_topic and self._assigned and self.config.partitions is None:
            self._check_whole_topic(consumer)
        data = self._usable(messages)
        if not data:
            error = self._errors.take(f"reading topic '{self.topic}'")
            if error is not None:
                raise error
            return self._empty()
        self._errors.clear()  # messages flow again: an earlier blip is over
        return self._batch(data)

    def _consume(self, consumer: Consumer, max_records: int) -> list[Any]:
        """Up to `max_records` messages, waiting at most `polling_interval` in all; once
        some came, no longer than the quiet gap for more. As a Kafka poll gives what it
        has, a batch goes on when the topic has nothing more for now: the last messages
        of a burst do not wait out the interval."""
        interval, gap = self.config.polling_interval, self.config.quiet_gap
        deadline = time.monotonic() + interval
        self._gathered = 0
        messages: list[Any] = consumer.consume(max_records, min(gap, interval))
        while len(messages) < max_records:
            left = deadline - time.monotonic()
            if left <= 0 or self._woken:
                self._woken = False
                break
            self._gathered = len(messages)
            more = consumer.consume(max_records - len(messages), min(gap, left))
            if more:
                messages += more
            elif messages:
                break  # quiet for a whole gap: the topic has no more for now
        return messages

    def wake(self) -> None:
        self._woken = True

    def _usable(self, messages: list[Any]) -> list[Any]:
        """Data messages of partitions still ours; client errors set aside."""
        # map() over the C methods: no Python frame per message on the clean path.
        if any(map(Message.error, messages)):
            for m in messages:
                error = m.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    self._errors.add(error)
            messages = [m for m in messages if m.error() is None]
        if self._revoked_now:
            messages = _after_rebalance(
                messages, self._revoked_now, self._assigned, self._revoked_at
            )
        return messages

    def _check_whole_topic(self, consumer: Consumer) -> None:
        """Refuse to go on holding only some of the topic's partitions (a stateful job
        sharing its consumer group with another server): its answers would be partial."""
        if self._partition_count is None:
            try:
                metadata = consumer.list_topics(self.topic, timeout=10)
            except KafkaException as exc:
                raise translate(exc, stage=Stage.SOURCE, name=self.name, doing="reading") from exc
            self._partition_count = len(metadata.topics[self.topic].partitions)
        if len(self._assigned) >= self._partition_count:
            return
        raise ConfigurationError(
            f"kafka_source '{self.name}': this job keeps state (GROUP BY, a window, a join or "
            f"DISTINCT) but holds only partitions {sorted(self._assigned)} of the "
            f"{self._partition_count} of topic '{self.topic}': another member of consumer "
            f"group '{self.config.group_id}' reads the others, so each would aggregate only "
            "its share. Run a stateful job on one server, give a GROUP BY job "
            "'state.partitioned' = 'true', or give each server its own group.id "
            "(docs/scaling.md)",
            source=self.name,
        )

    def _batch(self, messages: list[Any]) -> SourceBatch:
        n = len(messages)
        values = list(map(Message.value, messages))
        partitions = np.fromiter(map(Message.partition, messages), np.int32, n)
        offsets = np.fromiter(map(Message.offset, messages), np.int64, n)
        envelope = _Envelope(
            self.topic,
            values,
            list(map(Message.key, messages)),
            partitions,
            offsets,
            np.fromiter(map(_SECOND, map(Message.timestamp, messages)), np.int64, n),
            list(map(Message.headers, messages)),
        )
        self._advance(partitions, offsets)
        decoded = self._decoder.decode(values)
        table = self._with_system_columns(decoded, envelope)
        bad = [
            BadRecord(values[b.index] or b"", envelope.ref(b.index), b.message, b.kind)
            for b in decoded.bad
        ]
        self._recent.append(envelope)
        return SourceBatch(table, MessageRefs(envelope, decoded.rows), bad, self.position)

    def _advance(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        for partition in np.unique(partitions).tolist():
            mine = offsets[partitions == partition]
            self._start.setdefault(partition, int(mine.min()))
            self._next[partition] = int(mine.max()) + 1

    def _with_system_columns(self, decoded: Decoded, envelope: _Envelope) -> pa.Table:
        table = decoded.table
        rows = decoded.rows

        def pick(column: pa.Array) -> pa.Array:
            return column if rows is None else pc.take(column, rows)

        stamps = pa.array(envelope.timestamps, pa.int64())
        stamps = pc.if_else(pc.less(stamps, 0), pa.scalar(None, pa.int64()), stamps)
        columns = {
            "_key": lambda: keys_array(envelope.keys, self.config.key_format),
            "_partition": lambda: pa.array(envelope.partitions, pa.int32()),
            "_offset": lambda: pa.array(envelope.offsets, pa.int64()),
            "_timestamp": lambda: stamps.cast(pa.timestamp("ms")),
            "_headers": lambda: headers_array(envelope.headers),
        }
        for name in SYSTEM_COLUMNS:
            if name not in table.column_names:  # a value field of that name wins
                table = table.append_column(name, pick(columns[name]()))
        return table

    def _empty(self) -> SourceBatch:
        decoded = self._decoder.decode([])
        envelope = _Envelope.empty(self.topic)
        table = self._with_system_columns(decoded, envelope)
        return SourceBatch(table, MessageRefs(envelope, None), [], self.position)

    @property
    def position(self) -> dict[str, int]:
        """Where reading has got to: `{"<topic>-<partition>": next offset}`."""
        return {f"{self.topic}-{p}": o for p, o in sorted(self._next.items())}

    def decode_records(self, records: list[bytes]) -> SourceBatch:
        """Decode stored values (dead letters) as this source would; refs `replay:<n>`."""
        envelope = _Envelope.empty("replay", records)
        decoded = self._decoder.decode(records)
        table = self._with_system_columns(decoded, envelope)
        refs = MessageRefs(envelope, decoded.rows)
        bad = [
            BadRecord(records[b.index], f"replay:{b.index + 1}", b.message, b.kind)
            for b in decoded.bad
        ]
        return SourceBatch(table, refs, bad, None)

    def message(self, ref: str) -> tuple[bytes | None, list[tuple[str, bytes]] | None] | None:
        """The key and headers of a recent message by its ref, for its dead letter."""
        topic, _, rest = ref.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        if topic != self.topic:
            return None
        try:
            p, o = int(partition), int(rest)
        except ValueError:
            return None
        for envelope in reversed(self._recent):
            index = envelope.find(p, o)
            if index is not None:
                return envelope.keys[index], envelope.headers[index]
        return None

    # -- committing and rewinding ---------------------------------------------------

    def commit(self, position: Any) -> None:
        """Commit `position`'s offsets of the partitions this source owns, synchronously."""
        for partition, offset in parse_position(position, self.topic).items():
            if partition in self._assigned:
                self._durable[partition] = offset
        self._commit_durable(self._assigned)

    def committed(self, position: Any) -> None:
        """Record `position` as committed elsewhere (in a producer transaction)."""
        for partition, offset in parse_position(position, self.topic).items():
            if partition in self._assigned:
                self._durable[partition] = offset
                self._acked[partition] = offset

    def _commit_durable(self, partitions: set[int]) -> None:
        pending = [
            TopicPartition(self.topic, p, o)
            for p, o in sorted(self._durable.items())
            if p in partitions and self._acked.get(p) != o
        ]
        if not pending or self._consumer is None:
            return
        try:
            result = self._consumer.commit(offsets=pending, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in _REBALANCING:
                log.info("kafka '%s': commit deferred, group rebalancing: %s", self.name, error)
                return
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return
            raise translate(exc, stage=Stage.COMMIT, name=self.name, doing="committing") from exc
        log.debug("kafka '%s': committed %s", self.name, {t.partition: t.offset for t in pending})
        for tp in result or pending:
            if tp.error is None:
                self._acked[tp.partition] = tp.offset
            elif tp.error.code() not in _REBALANCING:
                raise translate(
                    tp.error, stage=Stage.COMMIT, name=self.name, doing="committing offsets"
                )

    def seek(self, position: Any) -> None:
        """Rewind the partitions read since `position` (None: the last commit)."""
        if self._consumer is None:
            return
        wanted = parse_position(position, self.topic)
        for partition, reached in list(self._next.items()):
            target = wanted.get(partition)
            if target is None:
                target = self._durable.get(partition, self._start.get(partition))
            if target is None or target == reached:
                continue
            try:
                self._consumer.seek(TopicPartition(self.topic, partition, target))
            except KafkaException as exc:
                raise translate(exc, stage=Stage.SOURCE, name=self.name, doing="seeking") from exc
            self._next[partition] = target
            log.debug("kafka '%s': partition %d rewound to %d", self.name, partition, target)

    # -- rebalancing (called from inside consume) -----------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        log.info("kafka '%s': assigned partitions %s of %s", self.name, mine, self.topic)
        for partition in mine:
            for state in (self._next, self._start, self._durable, self._acked):
                state.pop(partition, None)
        self._assigned.update(mine)
        self._partition_count = None  # the topic may have grown: counted again
        log.debug("kafka '%s': assignment now %s", self.name, sorted(self._assigned))
        if self.listener is not None:
            self.listener.assigned(consumer, mine)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = {tp.partition for tp in partitions if tp.topic == self.topic}
        log.info("kafka '%s': partitions %s revoked", self.name, sorted(mine))
        try:
            self._commit_durable(mine)
        except Exception as exc:
            log.warning("kafka '%s': commit on revocation failed: %s", self.name, exc)
            self._errors.add(KafkaError(KafkaError._STATE, f"commit on revocation: {exc}"))
        self._forget(mine)
        log.debug("kafka '%s': assignment after revocation %s", self.name, sorted(self._assigned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = {tp.partition for tp in partitions if tp.topic == self.topic}
        log.warning("kafka '%s': partitions %s lost", self.name, sorted(mine))
        self._forget(mine)

    def _forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            for state in (self._next, self._start, self._durable, self._acked):
                state.pop(partition, None)
        self._assigned -= partitions
        self._revoked_now |= partitions
        for partition in partitions:  # the last revocation counts
            self._revoked_at[partition] = self._gathered
        if self.listener is not None:
            self.listener.revoked(partitions)


def _after_rebalance(
    messages: Sequence[Any], revoked: set[int], assigned: set[int], revoked_at: dict[int, int]
) -> list[Any]:
    """Messages still ours after a rebalance during one read.

    A revoked partition's messages are dropped: its next owner reads them again from
    the committed offset. A partition revoked and assigned back during the read is
    fetched again from its committed offset: only its messages after the revocation
    are kept, those of the `consume` calls after it (`revoked_at`: how many messages
    came before it) and, within one call, those after its offsets start over. Kept,
    the earlier ones would come again in a later read, and be processed twice.
    """
    keep_from: dict[int, int] = {p: revoked_at.get(p, 0) for p in revoked}
    last: dict[int, int] = {}
    for i, m in enumerate(messages):
        p = m.partition()
        if p in revoked and p in assigned:
            if p in last and m.offset() <= last[p]:
                keep_from[p] = max(keep_from[p], i)
            last[p] = m.offset()
    out = []
    for i, m in enumerate(messages):
        p = m.partition()
        if p not in revoked or (p in assigned and i >= keep_from.get(p, 0)):
            out.append(m)
    return out
