"""Changelog topics: each input partition's state, kept in Kafka, restored where it goes.

A job whose state is partitioned writes, with every batch, the state of each partition
the batch touched to partition `p` of `<app>-<job>-state-changelog` (compacted, as
many partitions as its input; `<group.id>-state-changelog` when the job's consumer
group is not the default `velo-<app>-<job>`). A snapshot is one or more chunk messages keyed
`chunk-<i>`, each with the headers `velo.input.offset` (the input partition's next
offset the state covers) and `velo.chunks` (how many chunks the snapshot has). In
transactional mode the chunks are produced in the batch's transaction with its
outputs and input offsets; in simple mode they are flushed before the offsets commit.

`restore` reads a partition's changelog to its end and keeps the last complete
snapshot whose input offset is at most the group's committed offset: that is the state
the committed offset was committed with. A snapshot past it is one whose commit never
happened (an aborted transaction some brokers still deliver, or a simple-mode crash
between flushing the changelog and committing the offsets), so it is passed over.

A snapshot is encoded as `VSS1`, a JSON header naming its plain values and tables,
then each table as an Arrow IPC stream.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from velostream.datasource.kafka.client import translate
from velostream.datasource.kafka.sink import KafkaSink, wait_delivered
from velostream.errors import SourceError, Stage
from velostream.sql.partitioning import changelog_topic

__all__ = [
    "CHUNK_BYTES",
    "ChangelogSink",
    "Restored",
    "changelog_topic",
    "decode_state",
    "encode_state",
    "restore",
]

log = logging.getLogger("velostream.kafka")

CHUNK_BYTES = 512 * 1024  # below the brokers' default message.max.bytes (1 MiB)
_MAGIC = b"VSS1"
_OFFSET = "velo.input.offset"
_CHUNKS = "velo.chunks"
_TIMEOUT = 30.0


# -- encoding ---------------------------------------------------------------------


def encode_state(state: Mapping[str, Any]) -> bytes:
    """A flat snapshot (plain values and Arrow tables) as bytes."""
    tables = {k: v for k, v in state.items() if isinstance(v, pa.Table)}
    values = {k: v for k, v in state.items() if not isinstance(v, pa.Table)}
    header = orjson.dumps({"values": values, "tables": list(tables)})
    parts = [_MAGIC, struct.pack(">I", len(header)), header]
    for table in tables.values():
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
        parts += [struct.pack(">Q", len(body)), body]
    return b"".join(parts)


def decode_state(data: bytes) -> dict[str, Any]:
    """The snapshot `encode_state` made; SourceError if `data` is not one."""
    try:
        if data[:4] != _MAGIC:
            raise ValueError("not a state snapshot")
        (n,) = struct.unpack_from(">I", data, 4)
        at = 8 + n
        header = orjson.loads(data[8:at])
        state: dict[str, Any] = dict(header["values"])
        for name in header["tables"]:
            (size,) = struct.unpack_from(">Q", data, at)
            at += 8
            if at + size > len(data):
                raise ValueError(f"table {name!r} is cut short")
            state[name] = ipc.open_stream(pa.py_buffer(data[at : at + size])).read_all()
            at += size
    except (ValueError, KeyError, TypeError, OSError, struct.error) as exc:
        raise SourceError(f"a changelog snapshot is unreadable: {exc}") from exc
    return state


Headers = list[tuple[str, str | bytes | None]]


def _chunks(data: bytes, input_offset: int) -> list[tuple[bytes, bytes, Headers]]:
    n = max(1, -(-len(data) // CHUNK_BYTES))
    headers: Headers = [(_OFFSET, str(input_offset).encode()), (_CHUNKS, str(n).encode())]
    return [
        (f"chunk-{i}".encode(), data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES], headers)
        for i in range(n)
    ]


# -- the topic --------------------------------------------------------------------


class ChangelogSink(KafkaSink):
    """Produces partitions' snapshots to the changelog; transactional like any Kafka
    sink (the committer attaches its producer), else flushed before the offsets."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self._staged: dict[int, bytes] = {}
        self._offsets: dict[int, int] = {}

    def stage(self, states: Mapping[int, tuple[int, bytes]]) -> None:
        """The batch's snapshots, `{partition: (input offset, encoded state)}`; they
        replace whatever an aborted batch staged."""
        self._staged = {p: data for p, (_, data) in states.items()}
        self._offsets = {p: offset for p, (offset, _) in states.items()}

    @property
    def pending(self) -> bool:
        return bool(self._staged)

    def discard(self) -> None:
        self._staged, self._offsets = {}, {}

    def write(self, table: pa.Table) -> None:
        raise TypeError("a changelog is written with stage(), not write()")

    def flush(self) -> None:
        staged, self._staged = self._staged, {}
        if not staged and self._producer is None:
            return
        producer = self.producer
        for partition, data in sorted(staged.items()):
            for key, value, headers in _chunks(data, self._offsets[partition]):
                while True:
                    try:
                        producer.produce(self.topic, value, key, partition, headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.05)
                    except KafkaException as exc:
                        raise translate(
                            exc, stage=Stage.COMMIT, name=self.name, doing="writing the changelog"
                        ) from exc
        wait_delivered(
            producer,
            self.config.flush_timeout,
            self._report,
            self._errors,
            stage=Stage.COMMIT,
            name=self.name,
            topic=self.topic,
        )


# -- restoring --------------------------------------------------------------------


@dataclass(slots=True)
class Restored:
    """What `restore` found for a partition."""

    state: dict[str, Any] | None
    input_offset: int | None  # the input offset the state covers
    records: int = 0  # changelog messages read
    bytes: int = 0
    seconds: float = 0.0
    passed_over: int = 0  # complete snapshots past the committed offset


def restore(
    client: Mapping[str, Any], topic: str, committed: Mapping[int, int | None], *, name: str
) -> dict[int, Restored]:
    """Read the changelog's partitions `committed` names, each to its end, with one
    consumer; `committed`: the group's committed input offset of each (None: nothing
    committed, so nothing to restore). See the module docstring."""
    started = time.monotonic()
    found = {p: Restored(None, None) for p in committed}
    wanted = sorted(p for p, offset in committed.items() if offset is not None)
    if not wanted:
        return found
    settings = {k: v for k, v in client.items() if not callable(v)}
    settings.update(
        {
            "group.id": f"velo-restore-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
        }
    )
    readers = {p: _Reader(found[p], committed[p]) for p in wanted}
    consumer = Consumer(settings)
    try:
        # To each partition's end as the broker reports it (partition EOF): some
        # brokers (tansu) give a high watermark one short of the last record.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        open_ = set(wanted)
        deadline = time.monotonic() + _TIMEOUT
        while open_:
            if time.monotonic() > deadline:
                read = sum(found[p].records for p in wanted)
                raise SourceError(
                    f"kafka '{name}': restoring partitions {sorted(open_)} from '{topic}' "
                    f"took over {_TIMEOUT:.0f}s ({read} messages read)",
                    stage=Stage.SOURCE,
                    source=name,
                )
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                partition = message.partition() or 0
                if error is None:
                    readers[partition].add(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    open_.discard(partition)
                else:
                    raise translate(
                        KafkaException(error), stage=Stage.SOURCE, name=name, doing="restoring"
                    )
    except KafkaException as exc:
        raise translate(exc, stage=Stage.SOURCE, name=name, doing="restoring") from exc
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    for partition in wanted:
        readers[partition].finish()
        found[partition].seconds = seconds
    return found


class _Reader:
    """Puts one partition's chunks together, keeping the last complete snapshot whose
    input offset is at most the committed one."""

    def __init__(self, found: Restored, committed: int | None) -> None:
        self.found = found
        self.committed = committed if committed is not None else -1
        self.current: tuple[int, int] | None = None  # (input offset, chunk count)
        self.chunks: dict[int, bytes] = {}
        self.best: tuple[int, bytes] | None = None

    def add(self, message: Any) -> None:
        value = message.value() or b""
        self.found.records += 1
        self.found.bytes += len(value)
        meta = dict(message.headers() or [])
        try:
            offset, count = int(meta[_OFFSET] or ""), int(meta[_CHUNKS] or "")
            index = int((message.key() or b"").decode().removeprefix("chunk-"))
        except (KeyError, ValueError, UnicodeDecodeError):
            return  # not a chunk of ours
        if self.current != (offset, count) or index == 0:
            self.current, self.chunks = (offset, count), {}
        self.chunks[index] = value
        if len(self.chunks) == count:
            data = b"".join(self.chunks[i] for i in range(count))
            if offset <= self.committed:
                self.best = (offset, data)
            else:
                self.found.passed_over += 1
            self.current, self.chunks = None, {}

    def finish(self) -> None:
        if self.best is not None:
            self.found.input_offset, self.found.state = self.best[0], decode_state(self.best[1])
