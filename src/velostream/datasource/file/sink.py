"""`file_sink`: output rows appended to a CSV or JSON lines file.

The file is truncated at open unless `append` is true; a CSV header is written once,
and not at all when appending to a file that already has content. `flush` makes the
data durable (fsync); `committed_offset` and `truncate` let a job roll the file back
to its last commit. A write that failed part-way (a full disk) leaves a torn line and
unwritten bytes in the stream's buffer; `truncate` closes that stream without keeping
them (whatever its closing flush still lands is cut too), so a retry never writes the
batch twice and never leaves a torn line behind.

Transactional mode stages instead (`begin_staging`), so the file only ever holds
committed rows: a batch goes to a hidden file beside it, `.<name>.velo-pending`;
`flush` fsyncs that (prepare) and `committed_offset` counts the file's length plus
the staged bytes; once the checkpoint holds that length, `publish` moves the staged
bytes into the file, and an abort's `discard` empties the staging file (dropping what
a failed write left in the stream's buffer). Publishing
renames the staging file over the file (atomic) while the file holds no committed
bytes, and otherwise appends the staged bytes at the committed length with
`os.copy_file_range` (a kernel-side copy; a read/write loop where the kernel cannot)
and fsyncs: a rename would replace committed rows, and an append that first cuts the
file back to the committed length is safe to repeat after a torn attempt.
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
from velostream.datasource.file.options import (
    JSONL_ALIASES,
    SINK_FORMATS,
    SINK_KEYS,
    parse_delimiter,
)
from velostream.datasource.registry import bool_property, choice_property
from velostream.datasource.traits import StagingSink
from velostream.errors import (
    ConfigurationError,
    InternalError,
    ResourceExhaustedError,
    SchemaError,
    SinkError,
    Stage,
    VelostreamError,
)
from velostream.fsutil import fsync_directory

__all__ = ["FileSink", "FileSinkConfig", "RowWriter", "sink_error"]

log = logging.getLogger(__name__)

_FORMATS = {f: f for f in SINK_FORMATS} | JSONL_ALIASES
_KEYS = SINK_KEYS | {"type"}
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# copy_file_range refusing the pair of files (old kernels, some filesystems).
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
)
_CHUNK = 1 << 20
_STAGING_SUFFIX = ".velo-pending"


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
        raw = str(props.get("delimiter", ","))
        delimiter = parse_delimiter(raw)
        if delimiter is None:
            raise ConfigurationError(
                f"'{name}': delimiter must be one character (ASCII, not a quote or a line "
                f"break), not {raw!r}",
                source=name,
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


class FileSink(StagingSink):
    """Writes rows to `path` as CSV or JSON lines; see the module docstring."""

    def __init__(self, name: str, properties: Mapping[str, str]) -> None:
        super().__init__(name, properties)
        self.config = FileSinkConfig.from_properties(name, self.properties)
        self._stream: BinaryIO | None = None
        self._writer: RowWriter | None = None
        self._durable = 0  # bytes made durable by the last flush (staged: prepared)
        self._staged = False  # transactional mode: writes go to the staging file
        self._published = 0  # staged: committed bytes in the file at `path`
        self._new_staging = False  # staged: the staging file's name is not yet durable

    @property
    def path(self) -> str:
        return self.config.path

    @property
    def staging_path(self) -> str:
        """The hidden file a staged batch is written to, beside `path`."""
        head, base = os.path.split(self.path)
        return os.path.join(head, f".{base}{_STAGING_SUFFIX}")

    def open(self, schema: pa.Schema | None = None) -> None:
        if self._stream is not None or self._staged:
            return  # staged: `begin_staging` set up; the staging file opens on a write
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
            if self._new_staging:  # the checkpoint may name it: its name must survive
                self._sync_names()
                self._new_staging = False
            self._durable = self._stream.tell()
        except OSError as exc:
            raise sink_error(self.name, self._stream_path, exc) from exc

    def committed_offset(self) -> int | None:
        """Bytes made durable by the last `flush` (before opening: what open keeps).

        Staged, the length the file will have once the prepared batch is published.
        """
        if self._staged:
            return self._published + self._durable
        if self._stream is None:
            return _size(self.path) if self.config.append else 0
        return self._durable

    def truncate(self, offset: int) -> None:
        """Roll the file back to a committed length and go on writing from there."""
        if self._staged:
            self.discard()
            try:
                self._cut(offset)
            except OSError as exc:
                raise sink_error(self.name, self.path, exc) from exc
            self._published = offset
            assert self._writer is not None
            self._writer.restart(header=offset == 0)
            return
        # Past the commit: what a failed write left in the buffer is never to be written.
        self._drop_stream()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            exists = os.path.exists(self.path)
            stream = open(self.path, "r+b") if exists else open(self.path, "w+b")  # noqa: SIM115
            self._stream = stream
            size = os.fstat(stream.fileno()).st_size
            if offset > size:
                raise self._too_short(offset, size)
            if size > offset:
                stream.truncate(offset)
                os.fsync(stream.fileno())
            stream.seek(offset)
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc
        if self._writer is None:
            self._writer = RowWriter(self.config.format, self.config.delimiter)
        self._writer.restart(header=offset == 0)
        self._durable = offset

    # --- staged writes (transactional mode) ------------------------------------------

    def begin_staging(self, committed: int) -> None:
        """Stage from now on, the file at `path` committed up to `committed` bytes.

        Called before `open`, with the length the last checkpoint holds. It settles
        what a crash left: with the file holding T bytes and the staging file S,

        - T == L (L = `committed`): the file is as committed; a staging file is left
          over (a batch never committed, or one already published) and is removed;
        - T > L: the file has a tail never committed (a torn write of simple mode, or
          of a version that wrote directly): cut back to L;
        - T < L and L - S <= T: the crash came after the checkpoint named the staged
          batch and before its publish ended: rolled forward (published again at
          L - S, after checking that any torn append matches the staging file);
        - otherwise committed bytes are missing: SinkError naming both files and the
          lengths.
        """
        if self._stream is not None:
            raise InternalError(f"sink '{self.name}': begin_staging after open", source=self.name)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            target, staged = _file_size(self.path), _file_size(self.staging_path)
            if target < committed:
                self._roll_forward(target, staged, committed)
            elif target > committed:
                log.warning(
                    "sink '%s': cutting %s back from %d to its committed %d bytes",
                    self.name,
                    self.path,
                    target,
                    committed,
                )
                self._cut(committed)
            if os.path.exists(self.staging_path):
                os.unlink(self.staging_path)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666))
            self._sync_names()
        except OSError as exc:
            raise sink_error(self.name, self.path, exc) from exc
        self._staged = True
        self._published, self._durable = committed, 0
        self._writer = RowWriter(self.config.format, self.config.delimiter, header=committed == 0)

    def publish(self) -> None:
        """Move the batch the last `flush` prepared into the file (the checkpoint holds it)."""
        size, stream = self._durable, self._stream
        if not self._staged or size == 0 or stream is None:
            return
        try:
            if self._published == 0 and os.fstat(stream.fileno()).st_size == size:
                os.replace(self.staging_path, self.path)  # the staged file becomes the output
                self._published, self._durable, self._stream = size, 0, None
                stream.close()
                self._sync_names()
                return
            self._append_staged(self._published, size)
            self._published += size
            self._durable, self._stream = 0, None
            stream.truncate(0)
            stream.seek(0)
            self._stream = stream  # emptied: the next batch reuses it
        except OSError as exc:
            if self._stream is None and not stream.closed:
                stream.close()  # the next write opens the staging file afresh
            raise sink_error(self.name, self.path, exc) from exc

    def discard(self) -> None:
        """Empty the staging file (an abort); the file at `path` is untouched."""
        if not self._staged:
            return
        self._durable = 0
        if self._stream is not None:
            self._drop_stream()  # the next write opens (and empties) it afresh
            try:
                os.truncate(self.staging_path, 0)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise sink_error(self.name, self.staging_path, exc) from exc
        assert self._writer is not None
        self._writer.restart(header=self._published == 0)

    def close(self) -> None:
        if self._staged:
            self._close_staged()
            return
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

    def _close_staged(self) -> None:
        """Close without publishing; keep the staging file only if it holds a prepared
        batch, which a checkpoint may hold (the next `begin_staging` settles it)."""
        stream, self._stream = self._stream, None
        try:
            if stream is not None:
                stream.close()
            if self._durable == 0 and os.path.exists(self.staging_path):
                os.unlink(self.staging_path)
        except OSError as exc:
            raise sink_error(self.name, self.staging_path, exc) from exc

    def _drop_stream(self) -> None:
        """Close the stream without keeping what it has not written.

        After a failed write its buffer still holds bytes; closing tries to write them
        once more (and fails again, or lands them), so the caller cuts the file after.
        """
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.close()
        except OSError as exc:  # expected after a failed write: the bytes are let go
            log.debug("sink '%s': dropping unwritten bytes: %s", self.name, exc)

    def _roll_forward(self, target: int, staged: int, committed: int) -> None:
        """Publish again the staged batch a crash interrupted; see `begin_staging`."""
        base = committed - staged
        if staged == 0 or base < 0 or target < base:
            raise SinkError(
                f"sink '{self.name}': cannot recover {self.path}: the checkpoint commits "
                f"{committed} bytes, the file holds {target} and {self.staging_path} holds "
                f"{staged}, not the {committed - target} missing",
                stage=Stage.SINK,
                source=self.name,
            )
        if target > base and _read(self.path, base, target - base) != _read(
            self.staging_path, 0, target - base
        ):
            raise SinkError(
                f"sink '{self.name}': cannot recover {self.path}: its bytes {base}..{target} "
                f"do not match {self.staging_path} ({staged} bytes; committed {committed})",
                stage=Stage.SINK,
                source=self.name,
            )
        log.warning(
            "sink '%s': publishing the committed batch a crash interrupted: %s from %d to %d bytes",
            self.name,
            self.path,
            target,
            committed,
        )
        if base == 0:
            os.replace(self.staging_path, self.path)
        else:
            self._append_staged(base, staged)

    def _append_staged(self, base: int, size: int) -> None:
        """Make the file its first `base` bytes then the staged `size`, durably."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            length = os.fstat(fd).st_size
            if length < base:
                raise self._too_short(base, length)
            if length > base:  # a torn earlier attempt
                os.ftruncate(fd, base)
            with open(self.staging_path, "rb") as staging:
                _copy_range(staging.fileno(), fd, size, base)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _cut(self, length: int) -> None:
        """Cut the file at `path` back to `length` bytes, durably."""
        with open(self.path, "r+b") as out:
            size = os.fstat(out.fileno()).st_size
            if length > size:
                raise self._too_short(length, size)
            if length < size:
                out.truncate(length)
                os.fsync(out.fileno())

    def _too_short(self, offset: int, size: int) -> SinkError:
        return SinkError(
            f"sink '{self.name}': cannot roll {self.path} back to {offset} bytes: "
            f"it holds only {size}",
            stage=Stage.SINK,
            source=self.name,
        )

    def _sync_names(self) -> None:
        """Make the names in the file's directory durable (a rename, a new file)."""
        fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    @property
    def _stream_path(self) -> str:
        return self.staging_path if self._staged else self.path

    def _open_stream(self) -> BinaryIO:
        """Open the destination: the file, or staged the (emptied) staging file."""
        path = self._stream_path
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            if self._staged:
                self._new_staging = not os.path.exists(path)
                return open(path, "w+b")
            return open(path, "ab" if self.config.append else "wb")
        except OSError as exc:
            raise sink_error(self.name, path, exc) from exc

    def _put(self, parts: Iterable[bytes | pa.Buffer]) -> None:
        if self._stream is None and self._staged:
            self._stream = self._open_stream()
        assert self._stream is not None
        try:
            for part in parts:
                self._stream.write(memoryview(part))
        except OSError as exc:
            raise sink_error(self.name, self._stream_path, exc) from exc


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _file_size(path: str) -> int:
    """The size of `path`, 0 if it does not exist (other errors are raised)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _read(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _copy_range(src: int, dst: int, size: int, dst_offset: int) -> None:
    """Copy the first `size` bytes of `src` to `dst` at `dst_offset`, in the kernel if it can."""
    done = 0
    copy = getattr(os, "copy_file_range", None)
    try:
        while copy is not None and done < size:
            n = copy(src, dst, size - done, done, dst_offset + done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    while done < size:
        chunk = os.pread(src, min(_CHUNK, size - done), done)
        if not chunk:
            raise OSError(errno.EIO, f"the staging file ends after {done} of {size} bytes")
        done += os.pwrite(dst, chunk, dst_offset + done)


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
