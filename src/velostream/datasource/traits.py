"""The source and sink contracts: small ABCs with no-op lifecycle defaults.

A source yields `SourceBatch`es: the decoded good rows as an Arrow table plus the
records that could not be decoded, as values (`BadRecord`), never as exceptions. A
batch also knows each good row's reference (file:line, topic/partition/offset) and
original bytes, looked up lazily: the clean path never builds per-row Python objects.

A `StagingSink` can also hold a batch aside and publish it only once the batch is
committed, so readers of its destination never see rows that are rolled back.

A source declares how its position can commit together with a transactional job's
outputs (`Source.transaction_capability`); the job runtime picks its committer by it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa

from velostream.errors import ErrorKind, Stage

__all__ = [
    "BadRecord",
    "NoRefs",
    "RecordRefs",
    "Sink",
    "Source",
    "SourceBatch",
    "StagingSink",
    "TransactionCapability",
    "TruncatedRecord",
]


class TransactionCapability(Enum):
    """How a source's position commits atomically with a transactional job's outputs."""

    #: The position is saved in the job's checkpoint, which is replaced atomically
    #: once the outputs are staged (files, memory): the default.
    CHECKPOINT = "checkpoint"
    #: The position is Kafka consumer offsets, sent into the producer transaction that
    #: writes the outputs (`send_offsets_to_transaction`); every sink must be Kafka.
    KAFKA_OFFSETS = "kafka_offsets"


class BadRecord(NamedTuple):
    """A record that failed, with its original payload and where it came from.

    A NamedTuple, not a dataclass: sources make one per bad record, and
    `tuple.__new__(BadRecord, (...))` makes it at a fraction of a dataclass's cost.
    """

    raw: bytes
    ref: str
    message: str
    kind: ErrorKind
    stage: Stage = Stage.DESERIALIZE


class TruncatedRecord(BadRecord):
    """A bad record of which only the start is kept (it was over `max.record.bytes`):
    its dead letter is marked `truncated` and is never replayed."""

    __slots__ = ()


class RecordRefs(ABC):
    """Maps a good row's index in its batch to its reference and original bytes."""

    @abstractmethod
    def ref(self, index: int) -> str:
        """Where row `index` came from, e.g. `trades.csv:42`."""

    @abstractmethod
    def raw(self, index: int) -> bytes:
        """Row `index`'s original bytes (the line, or the message value)."""


class NoRefs(RecordRefs):
    """The references of an empty batch: there is no row to refer to."""

    def ref(self, index: int) -> str:
        raise IndexError(index)

    def raw(self, index: int) -> bytes:
        raise IndexError(index)


@dataclass(slots=True)
class SourceBatch:
    """Decoded good rows, the bad records, and the position after this batch."""

    table: pa.Table
    refs: RecordRefs
    #: A list, or columns (`bad_records.BadRecords`) when a source has many at once.
    bad: Sequence[BadRecord] = field(default_factory=list)
    position: Any = None
    #: The source it was read from, in a job that reads several (`MultiSource`).
    source: str | None = None

    @property
    def num_records(self) -> int:
        """Records consumed from the source: good rows plus bad records."""
        return int(self.table.num_rows) + len(self.bad)


class Source(ABC):
    """A source of micro-batches. `read_batch` is the one method to implement."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        self.name = name
        self.properties = dict(properties)

    #: True when the source ends (files without `watch`); False for streams.
    bounded: bool = True

    #: How transactional mode commits this source's position with the outputs.
    transaction_capability: ClassVar[TransactionCapability] = TransactionCapability.CHECKPOINT

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or open files; called once before the first read."""

    @abstractmethod
    def read_batch(self, max_records: int) -> SourceBatch | None:
        """Up to `max_records` records; None when a bounded source is exhausted.

        An unbounded source with nothing new returns an empty batch after waiting
        at most its polling interval.
        """

    def wake(self) -> None:  # noqa: B027 - optional hook
        """End a read waiting for new records soon (the job is stopping); any thread."""

    def commit(self, position: Any) -> None:  # noqa: B027 - optional hook
        """Make `position` (from a batch) the durable restart point."""

    def seek(self, position: Any) -> None:  # noqa: B027 - optional hook
        """Rewind to `position` (None: the last committed position)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""

    def decode_records(self, records: list[bytes]) -> SourceBatch:
        """Decode original payloads (e.g. dead letters) as this source would."""
        raise NotImplementedError(f"{type(self).__name__} cannot decode stored records")


class Sink(ABC):
    """A destination for output rows. `write` is the one method to implement."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        self.name = name
        self.properties = dict(properties)

    def open(self, schema: pa.Schema | None = None) -> None:  # noqa: B027 - optional hook
        """Open the destination; `schema` is the output's when known."""

    @abstractmethod
    def write(self, table: pa.Table) -> None:
        """Write a batch of output rows (columns in SELECT order)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make everything written so far durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release the destination."""

    def committed_offset(self) -> int | None:
        """Length of what is durably written (after `flush`); None if it cannot roll back."""
        return None

    def truncate(self, offset: int) -> None:
        """Roll back to a committed length (transactional mode)."""
        raise NotImplementedError(f"{type(self).__name__} cannot roll back")


class StagingSink(Sink):
    """A sink that can stage a batch aside and publish it on commit (read-committed).

    Transactional mode calls `begin_staging` before `open`; from then on `write`
    stages, `flush` prepares (makes the staged batch durable; `committed_offset` then
    counts it), `publish` moves it into the destination once the checkpoint names it,
    and `discard` drops it on abort. A sink that is never told to stage writes
    directly, as any `Sink`.
    """

    @abstractmethod
    def begin_staging(self, committed: int) -> None:
        """Stage from now on, the destination committed up to `committed` (recovery)."""

    @abstractmethod
    def publish(self) -> None:
        """Move the batch the last `flush` prepared into the destination."""

    @abstractmethod
    def discard(self) -> None:
        """Drop the staged batch; the destination is untouched."""
