"""In-memory source and sink, for tests and embedding.

`MemorySource` serves tables (or lists of row dicts) given to it, sliced to
`max_records`, with injected `BadRecord`s where a test wants them; its position is
(item, row) so `seek` can replay. Created through the registry (`memory_source`), it
reads the JSON in its `rows` property. `MemorySink` keeps every table written;
`rows()` returns them as dicts. A sink created through the registry can be found by
name with `MemorySink.named(name)`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import orjson
import pyarrow as pa

from velostream.datasource.registry import bool_property
from velostream.datasource.traits import BadRecord, RecordRefs, Sink, Source, SourceBatch
from velostream.errors import ConfigurationError, ErrorKind, SourceError

__all__ = ["MemorySink", "MemorySource", "TableRefs"]

Rows: TypeAlias = pa.Table | Sequence[Mapping[str, Any]]


@dataclass(slots=True)
class _Item:
    table: pa.Table
    bad: list[BadRecord] = field(default_factory=list)


class TableRefs(RecordRefs):
    """Refs `<name>:<row>` (row counted over the whole source) and rows as JSON."""

    def __init__(self, name: str, table: pa.Table, first_row: int) -> None:
        self._name, self._table, self._first = name, table, first_row

    def ref(self, index: int) -> str:
        if not 0 <= index < self._table.num_rows:
            raise IndexError(index)
        return f"{self._name}:{self._first + index}"

    def raw(self, index: int) -> bytes:
        row = self._table.slice(index, 1).to_pylist()[0]
        return orjson.dumps(row, default=str)


class MemorySource(Source):
    """Serves queued tables; bounded unless `bounded=False` (then idles with empty batches)."""

    def __init__(
        self,
        name: str,
        properties: Mapping[str, str] | None = None,
        *,
        data: Iterable[Rows] = (),
        bounded: bool | None = None,
    ) -> None:
        super().__init__(name, properties or {})
        if bounded is None:
            bounded = bool_property(self.properties, "bounded", True, name=name)
        self.bounded = bounded
        self._items: list[_Item] = []
        self._schema: pa.Schema | None = None
        self._pos = (0, 0)
        self._committed: tuple[int, int] = (0, 0)
        self._served = 0  # rows served before the current item, for refs
        rows = self.properties.get("rows")
        if rows:
            try:
                self.add(orjson.loads(rows))
            except orjson.JSONDecodeError as exc:
                raise ConfigurationError(
                    f"'{name}': 'rows' must be a JSON list of objects: {exc}", source=name
                ) from exc
        for item in data:
            self.add(item)

    def add(self, data: Rows, bad: Iterable[BadRecord] = ()) -> None:
        """Queue a table (or row dicts) and bad records to come out with its first batch."""
        table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(list(data))
        if self._schema is not None and table.num_rows and table.schema != self._schema:
            table = table.cast(self._schema)
        elif self._schema is None and table.num_columns:
            self._schema = table.schema
        self._items.append(_Item(table, list(bad)))

    def add_bad(self, *records: BadRecord) -> None:
        """Queue bad records alone (a batch with no good rows)."""
        empty = self._schema.empty_table() if self._schema is not None else pa.table({})
        self._items.append(_Item(empty, list(records)))

    def read_batch(self, max_records: int) -> SourceBatch | None:
        item_index, row = self._pos
        if item_index >= len(self._items):
            if self.bounded:
                return None
            empty = self._schema.empty_table() if self._schema is not None else pa.table({})
            return SourceBatch(empty, TableRefs(self.name, empty, 0), [], self._pos)
        item = self._items[item_index]
        bad = item.bad if row == 0 else []
        take = max(1, max_records - len(bad))
        table = item.table.slice(row, take)
        first = self._rows_before(item_index) + row
        row += table.num_rows
        self._pos = (item_index + 1, 0) if row >= item.table.num_rows else (item_index, row)
        return SourceBatch(table, TableRefs(self.name, table, first), list(bad), self._pos)

    def commit(self, position: Any) -> None:
        self._committed = self._coerce(position)

    def decode_records(self, records: list[bytes]) -> SourceBatch:
        """Rows from their JSON form (what `TableRefs.raw` gives); refs `replay:<n>`."""
        rows, bad = [], []
        for i, raw in enumerate(records):
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                message = f"invalid JSON: {exc}"
                bad.append(BadRecord(raw, f"replay:{i + 1}", message, ErrorKind.PARSE))
                continue
            rows.append(row)
        table = pa.Table.from_pylist(rows, schema=self._schema)
        return SourceBatch(table, TableRefs("replay", table, 1), bad, None)

    def seek(self, position: Any) -> None:
        self._pos = self._committed if position is None else self._coerce(position)

    def _rows_before(self, item_index: int) -> int:
        return sum(item.table.num_rows for item in self._items[:item_index])

    def _coerce(self, position: Any) -> tuple[int, int]:
        try:
            item, row = position
            return int(item), int(row)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"memory_source '{self.name}': bad position {position!r}") from exc


class MemorySink(Sink):
    """Keeps every table written; `flush` and `close` are counted, for assertions."""

    _live: ClassVar[weakref.WeakValueDictionary[str, MemorySink]] = weakref.WeakValueDictionary()

    def __init__(self, name: str, properties: Mapping[str, str] | None = None) -> None:
        super().__init__(name, properties or {})
        self.tables: list[pa.Table] = []
        self.schema: pa.Schema | None = None
        self.flushes = 0
        self.closed = False
        self._flushed_rows = 0
        MemorySink._live[name] = self

    @classmethod
    def named(cls, name: str) -> MemorySink | None:
        """The live memory sink called `name`, if any (e.g. one built by a job)."""
        return cls._live.get(name)

    def open(self, schema: pa.Schema | None = None) -> None:
        self.schema = schema

    def write(self, table: pa.Table) -> None:
        self.tables.append(table)

    def flush(self) -> None:
        self.flushes += 1
        self._flushed_rows = sum(t.num_rows for t in self.tables)

    def committed_offset(self) -> int | None:
        """Rows written before the last `flush`."""
        return self._flushed_rows

    def truncate(self, offset: int) -> None:
        """Forget rows after the first `offset` (a transactional rollback)."""
        kept: list[pa.Table] = []
        left = offset
        for table in self.tables:
            if left <= 0:
                break
            kept.append(table.slice(0, left))
            left -= table.num_rows
        self.tables = kept
        self._flushed_rows = min(self._flushed_rows, offset)

    def close(self) -> None:
        self.closed = True

    def table(self) -> pa.Table:
        """Everything written, as one table."""
        if not self.tables:
            return self.schema.empty_table() if self.schema is not None else pa.table({})
        return pa.concat_tables(self.tables, promote_options="permissive")

    def rows(self) -> list[dict[str, Any]]:
        """Everything written, as row dicts in order."""
        return [row for t in self.tables for row in t.to_pylist()]
