"""`stdout_sink`: output rows on standard output as JSON lines (default) or CSV."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import BinaryIO

import pyarrow as pa

from velostream.datasource.file.options import JSONL_ALIASES
from velostream.datasource.file.sink import RowWriter
from velostream.datasource.registry import choice_property
from velostream.datasource.traits import Sink
from velostream.errors import SchemaError, SinkError, Stage
from velostream.sql.connectors import ConnectorOptions

__all__ = ["StdoutSink", "check_stdout_sink"]

_FORMATS = {"csv": "csv", "jsonl": "jsonl"} | JSONL_ALIASES
# `table` passes validation although StdoutSink refuses it when the job starts: an old
# gap, left as it was when this check moved here from the SQL layer.
_CHECKED_FORMATS = ("csv", "jsonl", "table")


def check_stdout_sink(options: ConnectorOptions) -> None:
    """Check and normalise a `stdout_sink`'s keys (at validation, through the registry)."""
    options.choice("format", _CHECKED_FORMATS, "jsonl", JSONL_ALIASES)
    options.warn_unknown({"format"})


class StdoutSink(Sink):
    """Writes rows to `stream` (standard output unless given), formatted as a file sink."""

    def __init__(
        self, name: str, properties: Mapping[str, str], *, stream: BinaryIO | None = None
    ) -> None:
        super().__init__(name, properties)
        self.format = choice_property(self.properties, "format", _FORMATS, "jsonl", name=name)
        self._stream = stream
        self._writer = RowWriter(self.format, str(self.properties.get("delimiter", ",")))

    def _out(self) -> BinaryIO:
        return self._stream if self._stream is not None else sys.stdout.buffer

    def open(self, schema: pa.Schema | None = None) -> None:
        if schema is not None:
            self._emit(self._writer.start(schema))

    def write(self, table: pa.Table) -> None:
        try:
            parts = self._writer.rows(table)
        except SchemaError as exc:
            message = f"stdout_sink '{self.name}': {exc.message}"
            raise SchemaError(message, source=self.name) from exc
        self._emit(parts)

    def flush(self) -> None:
        try:
            self._out().flush()
        except OSError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self.flush()

    def _emit(self, parts: Iterable[bytes | pa.Buffer]) -> None:
        out = self._out()
        try:
            for part in parts:
                out.write(memoryview(part))
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> SinkError:
        return SinkError(
            f"stdout_sink '{self.name}': cannot write to standard output: {exc}",
            stage=Stage.SINK,
            source=self.name,
        )
