"""A source's columns before its job runs, for validation to bind the job's queries to.

Nothing is read beyond what the source itself reads to fix its columns, and no schema
is guessed here: a file source infers its types from the start of its first file with
data, as it does when the job runs (`FileSource`), and gives its first rows; a memory
source has its `rows`; a Kafka source of `string` or `bytes` values has fixed columns.
A Kafka source of JSON values learns its columns from the first messages, which
validation does not consume; it, a file that is not there yet and any other type of
source are bound without their columns, and a note says so.

A column that came out as text from a sample where it mostly holds numbers (or
timestamps) gets its *evidence*: the first value that is not one, and where it is.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pyarrow as pa

from velostream.datasource.file.source import FileSource
from velostream.datasource.memory import MemorySource
from velostream.datasource.registry import create_source
from velostream.datasource.traits import RecordRefs, Source, SourceBatch
from velostream.errors import ConfigurationError
from velostream.fsutil import PathRoots
from velostream.sql.bind import SourceSchema
from velostream.sql.model import ConnectorConfig

__all__ = ["SAMPLE_ROWS", "sample_schema"]

#: Rows read from the start of a file (after its inference) to explain its types.
SAMPLE_ROWS = 200
_LOOKS = (
    ("number", re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")),
    ("timestamp", re.compile(r"^\s*\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")),
)
_SHOWN = 40
_SAMPLED = frozenset({"file_source", "memory_source", "kafka_source"})


def sample_schema(
    connector: ConnectorConfig, *, roots: PathRoots | None = None
) -> SourceSchema | str:
    """The columns of source `connector`, or a note saying why they are not known.

    With `roots` (a server's `--allow-path`), a file outside them is not read.
    """
    label = f"source '{connector.name}' ({connector.type})"
    unknown = (
        f"{label}: its columns are known only when the job reads it, so only types and "
        "functions are checked before it runs"
    )
    if connector.type not in _SAMPLED:
        return unknown  # not even made: who knows what making a plugin's source does
    properties = dict(connector.properties)
    if connector.type == "file_source":
        # A followed file is sampled as it is now: the same start the job infers from.
        properties["watch"] = "false"
    # Whatever a source raises while it is made or sampled (a `rows` that is not a list,
    # say) only means its columns are not known here: the job reports it when it runs.
    try:
        source = create_source(connector.name, connector.type, properties)
    except Exception as exc:
        return _not_checked(label, connector.name, exc)
    try:
        if isinstance(source, FileSource):
            return _file(source, label, roots)
        if isinstance(source, MemorySource):
            return _memory(source, label)
        if connector.type == "kafka_source":
            return _kafka(source, label)
        return unknown
    except Exception as exc:
        return _not_checked(label, connector.name, exc)
    finally:
        with contextlib.suppress(Exception):
            source.close()


def _not_checked(label: str, name: str, exc: BaseException) -> str:
    # The source's own messages start with its type and name, which `label` says.
    said = re.sub(rf"^[\w ]*'{re.escape(name)}': ", "", str(exc))
    return f"{label}: its columns are not checked: {said}"


def _file(source: FileSource, label: str, roots: PathRoots | None) -> SourceSchema | str:
    if roots is not None:
        try:
            roots.check(source.config.path, f"{source.name}.path")
        except ConfigurationError:
            return f"{label}: its columns are not checked: its path is outside the allowed ones"
    source.open()
    batch = source.read_batch(SAMPLE_ROWS)
    schema = source.schema
    if schema is None:
        return f"{label}: its columns are not checked: no data yet to infer them from"
    typed = batch is not None and batch.table.num_rows > 0
    if batch is not None and typed:
        path = batch.refs.ref(0).rpartition(":")[0]
        origin = f"as inferred from the first lines of {path}"
    else:
        origin = f"as named in the header of {source.files[0]} (no row yet to type them)"
    return SourceSchema(
        source=source.name,
        columns=schema,
        origin=origin,
        typed=typed,
        evidence=dict(_evidence(batch)) if batch is not None and typed else {},
    )


def _memory(source: MemorySource, label: str) -> SourceSchema | str:
    batch = source.read_batch(SAMPLE_ROWS)
    if batch is None or batch.table.num_columns == 0:
        return f"{label}: its columns are not checked: it has no rows to take them from"
    return SourceSchema(
        source=source.name,
        columns=batch.table.schema,
        origin="as its 'rows' give them",
        typed=batch.table.num_rows > 0,
    )


def _kafka(source: Source, label: str) -> SourceSchema | str:
    value_format = str(getattr(getattr(source, "config", None), "value_format", "json"))
    if value_format == "json":
        return (
            f"{label}: its columns are inferred from the first messages, which validation "
            "does not read, so only types and functions are checked before it runs"
        )
    empty = source.decode_records([])
    return SourceSchema(
        source=source.name,
        columns=empty.table.schema,
        origin=f"as a topic of '{value_format}' values has them",
    )


def _evidence(batch: SourceBatch) -> Iterator[tuple[str, str]]:
    """(column, why it is text) for text columns whose values are mostly of one type."""
    table = batch.table
    for index, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        values: list[str | None] = table.column(index).to_pylist()
        found = _odd_one(values, batch.refs)
        if found is not None:
            yield field.name, found


def _odd_one(values: list[str | None], refs: RecordRefs) -> str | None:
    """`'x' at t.csv:3 is not a number` when most values look like numbers but one not."""
    filled = [(row, v) for row, v in enumerate(values) if v is not None and v.strip()]
    for kind, pattern in _LOOKS:
        matching = sum(1 for _, v in filled if pattern.match(v))
        if matching == 0 or matching * 2 < len(filled):
            continue
        for row, value in filled:
            if not pattern.match(value):
                shown = value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "..."
                return f"{shown!r} at {refs.ref(row)} is not a {kind}"
    return None
