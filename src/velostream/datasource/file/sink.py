"""`file_sink`: output rows appended to a CSV or JSON lines file.

The file is truncated at open unless `append` is true; a CSV header is written once,
and not at all when appending to a file that already has content. `flush` makes the
data durable (fsync); `committed_offset` and `truncate` let a transactional job roll
the file back to its last commit. Subclasses choose where bytes go by overriding
`_open_stream` (e.g. a sink writing a temporary file renamed on commit).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from velostream.datasource.file.encode import csv_header, encode_csv, encode_jsonl
from velostream.datasource.registry import bool_property, choice_property
from velostream.datasource.traits import Sink
from velostream.errors import (
    ConfigurationError,
    ResourceExhaustedError,
    SchemaError,
    SinkError,
    Stage,
    VelostreamError,
)

__all__ = ["FileSink", "FileSinkConfig", "RowWriter", "sink_error"]

log = logging.getLogger(__name__)

_FORMATS = {"csv": "csv", "jsonl": "jsonl", "json": "jsonl", "jsonlines": "jsonl"}
_KEYS = frozenset({"type", "path", "format", "append", "delimiter"})
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSinkConfig:
    """The validated properties of a `file_sink`."""

    path: str
    format: str = "csv"
    append: bool = False
    delimiter: str = ","

    @classmethod
    def from_properties(cls, name: str, props: Mapping[str, str]) -> FileSinkConfig:
        path = props.get("path")
        if not path:
            raise ConfigurationError(f"'{name}': file_sink needs a 'path'", source=name)
        delimiter = str(props.get("delimiter", ","))
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise ConfigurationError(
                f"'{name}': delimiter must be one character, not {delimiter!r}", source=name
            )
        unknown = sorted(set(props) - _KEYS)
        if unknown:
            log.warning("file_sink '%s': ignoring unknown properties %s", name, unknown)
        return cls(
            path=os.path.expanduser(str(path)),
            format=choice_property(props, "format", _FORMATS, "csv", name=name),
            append=bool_property(props, "append", False, name=name),
            delimiter=delimiter,
        )


class RowWriter:
    """Formats tables into a binary stream: the header once, columns checked each time."""

    def __init__(self, fmt: str, delimiter: str = ",", *, header: bool = True) -> None:
        self.format = fmt
        self.delimiter = delimiter
        self._header_due = header and fmt == "csv"
        self._names: list[str] | None = None

    def restart(self, *, header: bool) -> None:
        """After the destination was rolled back: write the header again if `header`."""
        self._header_due = header and self.format == "csv"
        if header:
            self._names = None

    def start(self, schema: pa.Schema) -> Iterable[bytes | pa.Buffer]:
        """The bytes that precede the first row: the CSV header, if one is due."""
        self._names = list(schema.names)
        if self._header_due:
            self._header_due = False
            return [csv_header(self._names, self.delimiter)]
        return []

    def rows(self, table: pa.Table) -> Iterable[bytes | pa.Buffer]:
        """The header if not yet written, then the table's rows."""
        head: Iterable[bytes | pa.Buffer] = []
        if self._names is None:
            head = self.start(table.schema)
        elif table.column_names != self._names:
            raise SchemaError(f"columns {table.column_names} do not match {self._names}")
        body = encode_csv(table, self.delimiter) if self.format == "csv" else encode_jsonl(table)
        return [*head, *body]


class FileSink(Sink):
    """Writes rows to `path` as CSV or JSON lines; see the module docstring."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self.config = FileSinkConfig.from_properties(name, self.properties)
        self._stream: BinaryIO | None = None
        self._writer: RowWriter | None = None
        self._durable = 0  # bytes made durable by the last flush

    @property
    def path(self) -> str:
        return self.config.path

    def open(self, schema: pa.Schema | None = None) -> None:
        if self._stream is not None:
            return
        has_content = self.config.append and _size(self.path) > 0
        self._stream = self._open_stream()
        self._writer = RowWriter(self.config.format, self.config.delimiter, header=not has_content)
        if schema is not None:
            self._put(self._writer.start(schema))

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.open(table.schema)
        assert self._writer is not None
        try:
            parts = self._writer.rows(table)
        except SchemaError as exc:
            raise SchemaError(f"file_sink '{self.name}': {exc.message}", source=self.name) from exc
        except pa.ArrowException as exc:
            raise SinkError(
                f"file_sink '{self.name}': cannot format rows for {self.path}: {exc}",
                stage=Stage.SINK,
                source=self.name,
            ) from exc
        self._put(parts)

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._durable = self._stream.tell()
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc

    def committed_offset(self) -> int | None:
        """Bytes made durable by the last `flush` (before opening: what open keeps)."""
        if self._stream is None:
            return _size(self.path) if self.config.append else 0
        return self._durable

    def truncate(self, offset: int) -> None:
        """Roll the file back to a committed length and go on writing from there."""
        try:
            stream = self._stream
            if stream is None:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                exists = os.path.exists(self.path)
                stream = open(self.path, "r+b") if exists else open(self.path, "w+b")  # noqa: SIM115
                self._stream = stream
                self._writer = RowWriter(self.config.format, self.config.delimiter)
            else:
                stream.flush()
            size = os.fstat(stream.fileno()).st_size
            if offset > size:
                raise SinkError(
                    f"sink '{self.name}': cannot roll {self.path} back to {offset} bytes: "
                    f"it holds only {size}",
                    stage=Stage.SINK,
                    source=self.name,
                )
            stream.truncate(offset)
            stream.seek(offset)
            os.fsync(stream.fileno())
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc
        assert self._writer is not None
        self._writer.restart(header=offset == 0)
        self._durable = offset

    def close(self) -> None:
        if self._stream is None:
            return
        try:
            self.flush()
        finally:
            stream, self._stream = self._stream, None
            try:
                stream.close()
            except OSError as exc:
                raise sink_error(self.name, self.path, exc) from exc

    def _open_stream(self) -> BinaryIO:
        """Open the destination file (the hook a transactional subclass overrides)."""
        try:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            return open(self.path, "ab" if self.config.append else "wb")
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc

    def _put(self, parts: Iterable[bytes | pa.Buffer]) -> None:
        assert self._stream is not None
        try:
            for part in parts:
                self._stream.write(memoryview(part))
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def sink_error(name: str, path: str, exc: OSError) -> VelostreamError:
    """Translate an OS error on `path` into SinkError or ResourceExhaustedError."""
    where = f"sink '{name}'"
    if exc.errno in _NO_SPACE:
        return ResourceExhaustedError(
            f"{where}: no space left writing {path}", stage=Stage.SINK, source=name
        )
    if isinstance(exc, PermissionError):
        return SinkError(f"{where}: permission denied: {path}", stage=Stage.SINK, source=name)
    if isinstance(exc, IsADirectoryError):
        return SinkError(f"{where}: {path} is a directory", stage=Stage.SINK, source=name)
    detail = exc.strerror or str(exc)
    return SinkError(f"{where}: cannot write {path}: {detail}", stage=Stage.SINK, source=name)
