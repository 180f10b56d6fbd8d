"""Several sources read as one: the reader of a multi-source job (UNION ALL, later joins).

`MultiSource` reads its sources in turn, one batch from each (round-robin), so none
starves another; each batch is tagged with the source it came from
(`SourceBatch.source`) and the executor routes it by that tag. A bounded source ends on
its own; the multi-source ends (`read_batch` returns None) when every one has ended, and
never while one of them is unbounded.

Its position is one position per source, `{source name: position}`: a batch's position
is its own source's position after it plus, for every other source, the position after
the last batch read from it. The job runtime commits one batch at a time, so that is
what each of the others has committed, and a checkpoint of this position resumes every
source where it was. `commit` and `seek` hand each source its own position; after a
`seek` (an abort) the next read is again from the source of the batch in flight, so a
retried batch is the same source's rows.

`name` is the source in focus: the one being opened, read or closed, or that the batch
in flight came from; so an error or a dead letter names the source it belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from velostream.datasource.traits import Source, SourceBatch, TransactionCapability
from velostream.errors import ConfigurationError

__all__ = ["MultiSource", "sources_of"]

_log = logging.getLogger("velostream.source")


class MultiSource(Source):
    """Reads `sources` in turn, a batch from each; see the module docstring."""

    def __init__(self, sources: Sequence[Source]) -> None:
        if len(sources) < 2:
            raise ConfigurationError("a multi-source reader needs at least two sources")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"sources of one job must have distinct names: {names}")
        self.sources = list(sources)
        self.properties: dict[str, str] = {}
        self.bounded = all(s.bounded for s in sources)
        self._focus = 0
        self._next = 0  # the source the next read starts with
        self._last = 0  # the source of the last batch returned
        self._ended: set[int] = set()
        self._positions: dict[str, Any] = {}  # after the last batch read from each
        self._committed: dict[str, Any] = {}

    @property
    def name(self) -> str:
        """The source in focus (see the module docstring)."""
        return self.sources[self._focus].name

    @name.setter
    def name(self, value: str) -> None:
        raise AttributeError("a multi-source is named by the source in focus")

    @property
    def names(self) -> list[str]:
        """Every source's name, in the order they are read."""
        return [s.name for s in self.sources]

    def capability(self) -> TransactionCapability:
        """How the sources' positions commit in transactional mode; all must agree."""
        kinds = {s.transaction_capability for s in self.sources}
        if len(kinds) > 1:
            listed = ", ".join(f"{s.name} ({s.transaction_capability.value})" for s in self.sources)
            raise ConfigurationError(
                "transactional mode needs every source of a job to commit its position the "
                f"same way: {listed}; read Kafka and files in separate jobs, or use job_mode "
                "simple"
            )
        return kinds.pop()

    def open(self) -> None:
        for index, source in enumerate(self.sources):
            self._focus = index
            source.open()

    def read_batch(self, max_records: int) -> SourceBatch | None:
        """The next source's batch; an idle source (empty batch) gives its turn on, and
        an empty batch comes back only when every source that has not ended is idle."""
        count = len(self.sources)
        idle: SourceBatch | None = None
        for _ in range(count):
            index = self._next
            if index in self._ended:
                self._next = (index + 1) % count
                continue
            source = self.sources[index]
            self._focus = index
            # A read that raises leaves the turn with this source: its retry reads it again.
            batch = source.read_batch(max_records)
            self._next = (index + 1) % count
            if batch is None:
                self._ended.add(index)
                _log.info("source %r ended (%d of %d)", source.name, len(self._ended), count)
                continue
            self._last = index
            if batch.position is not None:
                self._positions[source.name] = batch.position
            batch.source = source.name
            batch.position = dict(self._positions)
            if batch.num_records:
                return batch
            idle = batch
        return idle

    def wake(self) -> None:
        for source in self.sources:
            source.wake()

    def commit(self, position: Any) -> None:
        """Commit each source's part of `position` (`{name: position}`)."""
        for source, part in self._parts(position):
            self._focus = self.sources.index(source)
            if part is not None:
                source.commit(part)
        self._committed = dict(position or {})

    def committed(self, position: Any) -> None:
        """Record `position` as committed elsewhere (a Kafka producer transaction)."""
        for source, part in self._parts(position):
            record = getattr(source, "committed", None)
            if part is not None and record is not None:
                record(part)
        self._committed = dict(position or {})

    def seek(self, position: Any) -> None:
        """Rewind every source to its part of `position` (None: the last commit)."""
        target = dict(self._committed if position is None else position)
        for source, part in self._parts(target):
            self._focus = self.sources.index(source)
            source.seek(part)
        self._positions = target
        self._ended.clear()  # a rewound source may have rows again
        self._next = self._focus = self._last

    def close(self) -> None:
        """Close every source; the first failure is raised once all were tried."""
        first: Exception | None = None
        for index, source in enumerate(self.sources):
            self._focus = index
            try:
                source.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def decode_records(self, records: list[bytes]) -> SourceBatch:
        raise NotImplementedError(
            "dead letters of a multi-source job are decoded by their own source: "
            "use decode_for(source, records)"
        )

    def decode_for(self, source: str, records: list[bytes]) -> SourceBatch:
        """Decode original payloads as the source named `source` would; tagged with it."""
        found = next((s for s in self.sources if s.name == source), None)
        if found is None:
            raise ConfigurationError(
                f"dead letters of source {source!r}: the job reads {', '.join(self.names)}"
            )
        batch = found.decode_records(records)
        batch.source = found.name
        return batch

    def message(self, ref: str) -> Any:
        """The key and headers of a recent message by its ref (Kafka sources, for a dead
        letter sent to a Kafka DLQ); None when no source knows it."""
        for source in self.sources:
            lookup = getattr(source, "message", None)
            found = lookup(ref) if lookup is not None else None
            if found is not None:
                return found
        return None

    def _parts(self, position: Any) -> list[tuple[Source, Any]]:
        parts = position if isinstance(position, dict) else {}
        return [(s, parts.get(s.name)) for s in self.sources]


def sources_of(source: Source) -> list[Source]:
    """The sources a job reads: those of a multi-source, else the one."""
    return list(source.sources) if isinstance(source, MultiSource) else [source]
