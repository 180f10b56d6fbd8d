"""Durable job checkpoints: source position, committed sink and DLQ lengths, and the
executor's state.

A checkpoint is a small JSON document written to a temp file, fsynced and renamed
over `<data_dir>/checkpoints/<job>.json`, so a crash leaves either the old or the new
one, never half of either. State tables (aggregates, row buffers) are Arrow IPC files
in a directory named after the checkpoint's batch number, written before the JSON that
points at them; older directories are removed after the switch.

A position means something only for the source it was read from, so a checkpoint also
names its source (`source_identity`: the connector type and the properties that say
what it reads), as Kafka Connect and Flink key source offsets by source. A job that
reads several sources (UNION ALL) keeps one position per source, each named
(`Checkpoint.sources`; see server/processors/positions.py).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc

from velostream.errors import ResourceExhaustedError, SourceError
from velostream.fsutil import fsync_directory
from velostream.sql.model import ConnectorConfig

__all__ = ["Checkpoint", "CheckpointStore", "describe_source", "source_identity"]

# The properties that say what a source reads (not how), each with its aliases: a
# position read from one of them means nothing for another.
_LOCATORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("path", ("path",)),
    ("topic", ("topic", "topic.name")),
    ("bootstrap.servers", ("bootstrap.servers", "brokers")),
)


def source_identity(connector: ConnectorConfig) -> dict[str, str]:
    """What a source reads: its type and the properties naming its data.

    A file source is its `path` (a file or a glob, made absolute); a Kafka source its
    topic (which defaults to the source's name) and its bootstrap servers. A source
    type with none of these properties is known by its name.
    """
    kind = connector.type.strip().lower()
    props = connector.properties
    identity = {"type": kind}
    for key, aliases in _LOCATORS:
        value = next((str(props[a]).strip() for a in aliases if props.get(a)), "")
        if not value:
            continue
        if key == "path":  # a relative path is read from the working directory
            value = os.path.abspath(os.path.expanduser(value))
        elif key == "bootstrap.servers":  # the same cluster, however listed
            value = ",".join(sorted(v.strip() for v in value.split(",") if v.strip()))
        identity[key] = value
    if kind in ("kafka_source", "kafka_sink"):
        identity.setdefault("topic", connector.name)
    if len(identity) == 1:
        identity["name"] = connector.name
    return identity


def describe_source(identity: Mapping[str, Any]) -> str:
    """A source identity as one line, e.g. `file_source path=/data/a.jsonl`."""
    rest = " ".join(f"{k}={v}" for k, v in identity.items() if k != "type")
    return f"{identity.get('type', '?')} {rest}".strip()


@dataclass(slots=True)
class Checkpoint:
    """What a job has durably done: where to resume and how much output is committed."""

    position: Any = None
    sink_offsets: dict[str, int] = field(default_factory=dict)
    dlq_offset: int | None = None
    version: str | None = None
    batches: int = 0
    state: dict[str, Any] | None = None
    source: dict[str, str] | None = None
    """The source the position was read from (`source_identity`); None before it was kept."""
    sinks: dict[str, dict[str, str]] | None = None
    """What each sink of `sink_offsets` wrote to (`source_identity` of its config)."""
    sources: dict[str, dict[str, str]] | None = None
    """A multi-source job's sources by name (`source_identity`); its `position` is then
    `{source name: position}`. None in a single-source job's checkpoint."""


class CheckpointStore:
    """Checkpoints of every job under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The state directory each job's checkpoint points at, once this store has
        # saved one: later saves remove just that one instead of listing the directory.
        self._state_dirs: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def path(self, job: str) -> Path:
        return self.directory / f"{job}.json"

    def load(self, job: str) -> Checkpoint | None:
        path = self.path(job)
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SourceError(f"checkpoint {path} is unreadable: {exc}", job=job) from exc
        return Checkpoint(
            position=doc.get("position"),
            sink_offsets={k: int(v) for k, v in (doc.get("sink_offsets") or {}).items()},
            dlq_offset=doc.get("dlq_offset"),
            version=doc.get("version"),
            batches=int(doc.get("batches", 0)),
            state=self._load_state(job, doc.get("state")),
            source=_identity(doc.get("source")),
            sinks=_sink_identities(doc.get("sinks")),
            sources=_sink_identities(doc.get("sources")),
        )

    def _state_dir(self, job: str, batches: int) -> Path:
        return self.directory / f"{job}.state-{batches}"

    def _load_state(self, job: str, doc: Any) -> dict[str, Any] | None:
        if doc is None:
            return None
        state: dict[str, Any] = dict(doc.get("values", {}))
        directory = self.directory / doc["dir"] if doc.get("dir") else None
        for name in doc.get("tables", []):
            assert directory is not None
            path = directory / f"{name}.arrow"
            try:
                with pa.memory_map(str(path)) as source:
                    state[name] = ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                raise SourceError(f"checkpoint state {path} is unreadable: {exc}", job=job) from exc
        return state

    def _save_state(self, job: str, checkpoint: Checkpoint) -> dict[str, Any] | None:
        state = checkpoint.state
        if state is None:
            return None
        tables = {k: v for k, v in state.items() if isinstance(v, pa.Table)}
        values = {k: v for k, v in state.items() if not isinstance(v, pa.Table)}
        doc: dict[str, Any] = {"values": values, "tables": sorted(tables)}
        if tables:
            directory = self._state_dir(job, checkpoint.batches)
            directory.mkdir(parents=True, exist_ok=True)
            for name, table in tables.items():
                path = directory / f"{name}.arrow"
                with open(path, "wb") as out:
                    with ipc.new_file(out, table.schema) as writer:
                        writer.write_table(table)
                    out.flush()
                    os.fsync(out.fileno())
            fsync_directory(directory)  # the files' names, before the JSON names them
            doc["dir"] = directory.name
        return doc

    def _prune_state(self, job: str, keep: str | None) -> None:
        """Remove the job's state directories other than `keep`."""
        with self._lock:
            known = job in self._state_dirs
            previous = self._state_dirs.get(job)
            self._state_dirs[job] = keep
        if known:
            if previous is not None and previous != keep:
                shutil.rmtree(self.directory / previous, ignore_errors=True)
            return
        # The first save of this process: clear what an earlier one left (a crash
        # between writing a state directory and the checkpoint naming it).
        for path in self.directory.glob(f"{job}.state-*"):
            if path.name != keep:
                shutil.rmtree(path, ignore_errors=True)

    def save(self, job: str, checkpoint: Checkpoint) -> None:
        path = self.path(job)
        tmp = path.with_suffix(".json.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            state = self._save_state(job, checkpoint)
            body = orjson.dumps(
                {
                    "position": checkpoint.position,
                    "sink_offsets": checkpoint.sink_offsets,
                    "dlq_offset": checkpoint.dlq_offset,
                    "version": checkpoint.version,
                    "batches": checkpoint.batches,
                    "state": state,
                    "source": checkpoint.source,
                    "sinks": checkpoint.sinks,
                    "sources": checkpoint.sources,
                },
                default=_encode,
            )
            with open(tmp, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            fsync_directory(path.parent)  # the rename itself, or a crash may undo it
            self._prune_state(job, state.get("dir") if state else None)
        except OSError as exc:
            raise ResourceExhaustedError(
                f"cannot write checkpoint {path}: {exc.strerror or exc}", job=job
            ) from exc

    def delete(self, job: str) -> None:
        self.path(job).unlink(missing_ok=True)
        with self._lock:
            self._state_dirs.pop(job, None)
        self._prune_state(job, None)


def _sink_identities(doc: Any) -> dict[str, dict[str, str]] | None:
    if not isinstance(doc, Mapping):
        return None
    return {str(name): ident for name, value in doc.items() if (ident := _identity(value))}


def _identity(doc: Any) -> dict[str, str] | None:
    if not isinstance(doc, Mapping):
        return None
    return {str(k): str(v) for k, v in doc.items()}


def _encode(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return value._asdict()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")
