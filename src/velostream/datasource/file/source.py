"""`file_source`: CSV or JSON lines from a file or a glob, optionally followed as it grows.

Files are read in blocks of whole lines (up to `max_records` lines per batch, see
`lines`) and decoded by Arrow (see `formats`). A line longer than `max.record.bytes`
(default 1 MiB) is a bad record (stage `deserialize`, kind `ParseError`) whose payload
is its first 1 KiB: it is read past in bounded chunks, never held whole, and reading
goes on at the next line. Column types are inferred once, from the first `INFER_BYTES`
of data of the first file with data, and then fixed; a restart infers the same schema
from the same bytes. A batch's position is a `FilePosition`: the file's index in the
sorted glob, the byte offset of the next unread line and the number of lines before
it; `seek` resumes there.

Without `watch`, the next batch is read and decoded on a worker thread while the
current one is processed (Arrow's parser releases the GIL); `seek` and `close` drop
that read-ahead, so positions mean the same as without it.

With `watch`, the source is unbounded: the last file is followed for new lines (a line
is read once its newline is written) and files matching the glob that sort after it
are picked up. A file that shrinks is read again from its start.

With a pipe (`attach_pipe`: the file is an earlier statement's output, see `pipe`),
the source reads only what the writing job has committed, decodes with the schema it
writes, and ends when that job has ended and every committed line is read.
"""

from __future__ import annotations

import csv
import functools
import glob
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa

from velostream.datasource.bad_records import BadRecords
from velostream.datasource.file.csvlines import CsvDecoder
from velostream.datasource.file.formats import Block, Decoder, bad_raws, split_lines
from velostream.datasource.file.jsonl import JsonDecoder
from velostream.datasource.file.lines import LineBlock, LineReader
from velostream.datasource.file.options import (
    JSONL_ALIASES,
    MAX_RECORD_BYTES,
    SOURCE_FORMATS,
    SOURCE_KEYS,
    parse_delimiter,
    parse_record_limit,
)
from velostream.datasource.file.pipe import Pipe
from velostream.datasource.registry import bool_property, choice_property, duration_property
from velostream.datasource.traits import (
    BadRecord,
    NoRefs,
    RecordRefs,
    Source,
    SourceBatch,
    TruncatedRecord,
)
from velostream.errors import (
    ConfigurationError,
    ErrorKind,
    ResourceExhaustedError,
    SchemaError,
    SourceError,
)
from velostream.sql.pipeline import PIPE_FROM

__all__ = ["INFER_BYTES", "FilePosition", "FileSource", "FileSourceConfig"]

log = logging.getLogger(__name__)

INFER_BYTES = 1 << 20
_FORMATS = {f: f for f in SOURCE_FORMATS} | JSONL_ALIASES
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_KEYS = SOURCE_KEYS | {"type", PIPE_FROM}


class FilePosition(NamedTuple):
    """Where to resume: file index, byte offset of the next line, lines before it."""

    file_index: int
    offset: int
    line: int

    @classmethod
    def coerce(cls, value: Any) -> FilePosition:
        """From a FilePosition, a 3-sequence (e.g. JSON-decoded) or a mapping."""
        if isinstance(value, FilePosition):
            return value
        try:
            if isinstance(value, Mapping):
                return cls(int(value["file_index"]), int(value["offset"]), int(value["line"]))
            index, offset, line = value
            return cls(int(index), int(offset), int(line))
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"not a file position: {value!r}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSourceConfig:
    """The validated properties of a `file_source`."""

    path: str
    format: str
    has_headers: bool
    delimiter: str = ","
    watch: bool = False
    polling_interval: float = 1.0
    max_record_bytes: int = MAX_RECORD_BYTES

    @classmethod
    def from_properties(cls, name: str, props: Mapping[str, str]) -> FileSourceConfig:
        path = props.get("path")
        if not path:
            raise ConfigurationError(f"'{name}': file_source needs a 'path'", source=name)
        default = "jsonl" if str(path).lower().endswith(_JSON_SUFFIXES) else "csv"
        fmt = choice_property(props, "format", _FORMATS, default, name=name)
        raw = str(props.get("delimiter", ","))
        delimiter = parse_delimiter(raw)
        if delimiter is None:
            raise ConfigurationError(
                f"'{name}': delimiter must be one ASCII character, not {raw!r}", source=name
            )
        limit = props.get("max.record.bytes")
        try:
            max_record_bytes = MAX_RECORD_BYTES if limit is None else parse_record_limit(limit)
        except ConfigurationError as exc:
            raise ConfigurationError(f"'{name}': {exc.message}", source=name) from exc
        unknown = sorted(set(props) - _KEYS)
        if unknown:
            log.warning("file_source '%s': ignoring unknown properties %s", name, unknown)
        return cls(
            path=str(path),
            format="csv" if fmt == "csv_no_header" else fmt,
            has_headers=fmt != "jsonl"
            and bool_property(props, "has_headers", fmt == "csv", name=name),
            delimiter=delimiter,
            watch=bool_property(props, "watch", False, name=name),
            polling_interval=duration_property(props, "polling_interval", 1.0, name=name),
            max_record_bytes=max_record_bytes,
        )


class _BlockRefs(RecordRefs):
    """file:line and raw bytes of a batch's good rows, computed only when asked."""

    def __init__(
        self,
        path: str,
        block: Block,
        n_lines: int,
        first: int,
        rows: pa.Array | None,
        lines: pa.Array | None,
    ) -> None:
        self._path, self._block, self._n = path, block, n_lines
        self._first, self._rows, self._lines = first, rows, lines

    def _line(self, index: int) -> int:
        return index if self._rows is None else int(self._rows[index].as_py())

    def ref(self, index: int) -> str:
        return f"{self._path}:{self._first + self._line(index) + 1}"

    def raw(self, index: int) -> bytes:
        if self._lines is None:
            self._lines = split_lines(self._block, self._n)
        value: bytes = self._lines[self._line(index)].as_py()
        return value


class FileSource(Source):
    """Reads `path` (a file or a glob) as CSV or JSON lines; see the module docstring."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self.config = FileSourceConfig.from_properties(name, self.properties)
        self.bounded = not self.config.watch
        self._files: list[str] | None = None
        self._index = 0
        self._cursor: LineReader | None = None
        self._decoder: Decoder | None = None
        self._names: list[str] | None = None
        self._committed: FilePosition | None = None
        self._avg_line = 64.0
        # read-ahead (bounded sources): the next batch, being read on `_worker`
        self._ahead: Future[SourceBatch | None] | None = None
        self._ahead_size = 0
        self._ahead_from = FilePosition(0, 0, 0)
        self._worker: ThreadPoolExecutor | None = None
        self.pipe: Pipe | None = None
        self._resume = FilePosition(0, 0, 0)  # piped: where the cursor opens, once it can

    def attach_pipe(self, pipe: Pipe) -> None:
        """Read only what `pipe`'s writer has committed; see the module docstring."""
        self.pipe = pipe
        self.bounded = False  # read as it grows: no read-ahead

    @property
    def schema(self) -> pa.Schema | None:
        """The inferred schema, once known."""
        return None if self._decoder is None else self._decoder.schema

    @property
    def files(self) -> list[str]:
        """The files read, in order."""
        if self._files is None:
            self.open()
        return list(self._files or [])

    def open(self) -> None:
        if self.pipe is not None:  # its writer creates the file, maybe after this opens
            self._files = [self.config.path]
            return
        self._files = self._glob()
        if not self._files:
            raise SourceError(
                f"file_source '{self.name}': no file matches '{self.config.path}'", source=self.name
            )

    def close(self) -> None:
        self._drop_read_ahead()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def commit(self, position: Any) -> None:
        """Remember `position` for `seek(None)`; the job server persists positions."""
        self._committed = FilePosition.coerce(position)

    def seek(self, position: Any) -> None:
        """Resume at `position` (None: the last committed position, else the start)."""
        if self._files is None:
            self.open()
        self._drop_read_ahead()
        target = self._committed if position is None else position
        pos = FilePosition(0, 0, 0) if target is None else FilePosition.coerce(target)
        files = self._files or []
        if not 0 <= pos.file_index <= len(files) or pos.offset < 0 or pos.line < 0:
            raise SourceError(
                f"file_source '{self.name}': position {tuple(pos)} is outside {len(files)} files",
                source=self.name,
            )
        self.close()
        self._index = pos.file_index
        if self.pipe is not None:  # the cursor opens when the writer has published
            self._resume = pos
            return
        if pos.file_index < len(files):
            skip_header = pos.offset == 0 and self.config.has_headers
            self._cursor = self._reader(files[pos.file_index], pos.offset, pos.line, skip_header)

    def decode_records(self, records: list[bytes]) -> SourceBatch:
        """Decode stored lines (dead letters) with this source's schema; refs `replay:<n>`."""
        if self._files is None:
            self.open()
        self._wait_read_ahead()
        if self._decoder is None and not self._infer():
            raise SourceError(f"file_source '{self.name}': no schema yet to decode records")
        assert self._decoder is not None
        block = b"".join(r.rstrip(b"\r\n") + b"\n" for r in records)
        decoded = self._decoder.isolate(block, len(records))
        bad = [
            BadRecord(records[e.line], f"replay:{e.line + 1}", e.message, e.kind)
            for e in decoded.errors
        ]
        refs = _BlockRefs("replay", block, len(records), 0, decoded.rows, decoded.lines)
        return SourceBatch(decoded.table, refs, bad, None)

    def read_batch(self, max_records: int) -> SourceBatch | None:
        if self._files is None:
            self.open()
        if self.pipe is not None:
            return self._read_pipe(self.pipe, max(1, max_records))
        if self.bounded:
            return self._read_ahead(max(1, max_records))
        batch = self._read(max(1, max_records))
        if batch is not None:
            return batch
        time.sleep(self.config.polling_interval)
        batch = self._read(max(1, max_records))
        if batch is not None:
            return batch
        schema = self.schema or pa.schema([])
        return SourceBatch(schema.empty_table(), NoRefs(), [], self._position())

    def _read_pipe(self, pipe: Pipe, max_records: int) -> SourceBatch | None:
        """The next committed lines of the writer's file; None once it has ended and
        all are read; an empty batch (after waiting up to `polling_interval` for the
        writer) when there are none yet."""
        state = pipe.state
        if state.failure is not None:
            raise SourceError(
                f"file_source '{self.name}': statement {pipe.writer}, whose output it reads, "
                f"failed: {state.failure}",
                source=self.name,
            )
        if state.committed is not None:
            if self._decoder is None and state.schema is not None:
                self._decoder = _decoder_for(state.schema, self.config)
            batch = self._read(max_records, end=state.committed)
            if batch is not None:
                return batch
            # Ended, and all read; or no schema from what it committed: a header alone.
            read = self._decoder is None or self._position().offset >= state.committed
            if state.ended and read:
                return None
        pipe.wait(state, self.config.polling_interval)
        schema = self.schema or pa.schema([])
        return SourceBatch(schema.empty_table(), NoRefs(), [], self._position())

    def _read_ahead(self, max_records: int) -> SourceBatch | None:
        """The batch read ahead (its error, if it failed), then start reading the next."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self._ahead_size != max_records:
            ahead.exception()  # wait for it, then read again from where it started
            self.seek(self._ahead_from)
            ahead = None
        batch = ahead.result() if ahead is not None else self._read(max_records)
        if batch is not None:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.name}")
            self._ahead_from = self._position()
            self._ahead_size = max_records
            self._ahead = self._worker.submit(self._read, max_records)
        return batch

    def _wait_read_ahead(self) -> None:
        """Let the read in flight finish (the decoder and cursor are then ours)."""
        if self._ahead is not None:
            self._ahead.exception()

    def _drop_read_ahead(self) -> None:
        """Forget the batch read ahead: the next read starts where the last batch ended."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        ahead.exception()
        position = self._ahead_from
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        self._index = position.file_index
        files = self._files or []
        if position.file_index < len(files) and (position.offset or position.line):
            self._cursor = self._reader(
                files[position.file_index], position.offset, position.line, False
            )

    def _position(self) -> FilePosition:
        if self._cursor is None:
            return self._resume if self.pipe is not None else FilePosition(self._index, 0, 0)
        return FilePosition(self._index, self._cursor.offset, self._cursor.line)

    def _read(self, max_records: int, end: int | None = None) -> SourceBatch | None:
        """The next batch; `end` (piped): read nothing at or past that offset."""
        if self.config.watch:
            self._refresh()
        files = self._files or []
        while self._index < len(files):
            if self._decoder is None and not self._infer(end):
                return None
            cursor = self._cursor_at(self._index)
            cursor.end = end
            growing = self.config.watch or self.pipe is not None
            final = not growing or self._index < len(files) - 1
            got = cursor.read_block(max_records, final)
            if cursor.header is not None:
                self._check_header(cursor)
            if got is not None:
                return self._decode(cursor, got)
            if not final:
                return None
            cursor.close()
            self._cursor = None
            self._index += 1
        return None

    def _cursor_at(self, index: int) -> LineReader:
        if self._cursor is None:
            files = self._files or []
            at = self._resume if self.pipe is not None else FilePosition(index, 0, 0)
            skip_header = at.offset == 0 and self.config.has_headers
            self._cursor = self._reader(files[index], at.offset, at.line, skip_header)
        return self._cursor

    def _reader(self, path: str, offset: int, line: int, skip_header: bool) -> LineReader:
        limit = self.config.max_record_bytes
        return LineReader(path, offset, line, skip_header, limit=limit, avg=self._avg_line)

    def _decode(self, cursor: LineReader, got: LineBlock) -> SourceBatch:
        assert self._decoder is not None
        block, n, first = got.block, got.n_lines, got.first
        try:
            decoded = self._decoder.decode(block, n)
        except pa.ArrowMemoryError as exc:
            raise ResourceExhaustedError(
                f"file_source '{self.name}': out of memory decoding {cursor.path}",
                source=self.name,
                position=f"{cursor.path}:{first + 1}",
            ) from exc
        except pa.ArrowException as exc:
            raise SourceError(
                f"file_source '{self.name}': cannot decode {cursor.path}: {exc}",
                source=self.name,
                position=f"{cursor.path}:{first + 1}",
            ) from exc
        bad: Sequence[BadRecord] = []
        errors = decoded.errors
        if errors:  # as columns: no Python object per bad line (see `bad_records`)
            numbers = errors.lines + (first + 1)
            # made if asked for, from the block and its bounds (not the table)
            raws = functools.partial(
                bad_raws, block, n, errors.lines, decoded.bounds, decoded.lines
            )
            bad = BadRecords(raws, f"{cursor.path}:", numbers, errors.codes, errors.reasons)
        if got.long:
            bad = self._long_records(cursor.path, got, bad)
        refs = _BlockRefs(cursor.path, block, n, first, decoded.rows, decoded.lines)
        position = FilePosition(self._index, cursor.offset, cursor.line)
        return SourceBatch(decoded.table, refs, bad, position)

    def _long_records(
        self, path: str, got: LineBlock, decoded: Sequence[BadRecord]
    ) -> list[BadRecord]:
        """The block's lines over `max.record.bytes` as bad records, in line order."""
        limit = self.config.max_record_bytes
        bad = list(decoded)
        for long in got.long:
            number = got.first + long.line + 1
            message = (
                f"record too large: line {number} has {long.size} bytes, more than "
                f"max.record.bytes ({limit}); skipped to the next line, "
                f"its first {len(long.prefix)} bytes kept"
            )
            bad.append(TruncatedRecord(long.prefix, f"{path}:{number}", message, ErrorKind.PARSE))
        return sorted(bad, key=lambda record: int(record.ref.rsplit(":", 1)[1]))

    def _glob(self) -> list[str]:
        pattern = os.path.expanduser(self.config.path)
        if glob.has_magic(pattern):
            return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not os.path.exists(pattern):
            raise SourceError(
                f"file_source '{self.name}': no such file: {pattern}", source=self.name
            )
        if not os.path.isfile(pattern):
            raise SourceError(f"file_source '{self.name}': not a file: {pattern}", source=self.name)
        return [pattern]

    def _refresh(self) -> None:
        """Watch mode: pick up new files that sort after the ones known."""
        files = self._files or []
        if not glob.has_magic(os.path.expanduser(self.config.path)) or not files:
            return
        newer = [p for p in self._glob() if p > files[-1]]
        if newer:
            self._files = files + newer

    def _infer(self, end: int | None = None) -> bool:
        """Fix the schema from the first file with data; False when there is none yet.

        `end` (piped): only what lies before it, the writer's committed length; bytes
        past it may yet be cut back by the writer's retry.
        """
        unusable = None
        for path in self._files or []:
            cursor = self._reader(path, 0, 0, self.config.has_headers)
            cursor.end = end
            try:
                block = cursor.head(INFER_BYTES)
            finally:
                cursor.close()
            if cursor.header is not None and self._names is None:
                self._names = _header_names(cursor.header, self.config.delimiter)
            if not block.strip():
                continue
            self._avg_line = len(block) / max(1, block.count(b"\n"))
            if self.config.format == "jsonl":
                self._decoder = JsonDecoder.infer(block)
            else:
                self._decoder = CsvDecoder.infer(block, self._names, self.config.delimiter)
            if self._decoder is not None:
                self._decoder.max_record_bytes = self.config.max_record_bytes
                return True
            unusable = unusable or path
        if self._names is not None and self.bounded:
            schema = pa.schema([(n, pa.string()) for n in self._names])
            self._decoder = _decoder_for(schema, self.config)
            return True
        if unusable is not None:
            raise SourceError(
                f"file_source '{self.name}': no valid {self.config.format} record in the first "
                f"{INFER_BYTES} bytes of {unusable} to infer the columns from",
                source=self.name,
            )
        return False

    def _check_header(self, cursor: LineReader) -> None:
        header, cursor.header = cursor.header, None
        names = _header_names(header or b"", self.config.delimiter)
        if self._names is not None and names != self._names:
            raise SchemaError(
                f"file_source '{self.name}': {cursor.path} has columns {names}, "
                f"but the first file has {self._names}",
                source=self.name,
            )


def _header_names(header: bytes, delimiter: str) -> list[str]:
    text = header.decode("utf-8", errors="replace")
    row = next(csv.reader([text], delimiter=delimiter), [])
    return [name.strip() or f"column{i}" for i, name in enumerate(row)]


def _decoder_for(schema: pa.Schema, config: FileSourceConfig) -> Decoder:
    """A decoder of `config`'s format for rows of `schema` (a pipe's writer's, or a
    header's names as text)."""
    decoder: Decoder
    if config.format == "jsonl":
        decoder = JsonDecoder(schema)
    else:
        decoder = CsvDecoder(schema, config.delimiter)
    decoder.max_record_bytes = config.max_record_bytes
    return decoder
