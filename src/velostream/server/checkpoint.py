"""Durable job checkpoints: source position plus committed sink and DLQ lengths.

A checkpoint is a small JSON document written to a temp file, fsynced and renamed
over `<data_dir>/checkpoints/<job>.json`, so a crash leaves either the old or the new
one, never half of either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from velostream.errors import ResourceExhaustedError, SourceError

__all__ = ["Checkpoint", "CheckpointStore"]


@dataclass(slots=True)
class Checkpoint:
    """What a job has durably done: where to resume and how much output is committed."""

    position: Any = None
    sink_offsets: dict[str, int] = field(default_factory=dict)
    dlq_offset: int | None = None
    version: str | None = None
    batches: int = 0


class CheckpointStore:
    """Checkpoints of every job under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

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
        )

    def save(self, job: str, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(job)
        tmp = path.with_suffix(".json.tmp")
        body = orjson.dumps(
            {
                "position": checkpoint.position,
                "sink_offsets": checkpoint.sink_offsets,
                "dlq_offset": checkpoint.dlq_offset,
                "version": checkpoint.version,
                "batches": checkpoint.batches,
            },
            default=_encode,
        )
        try:
            with open(tmp, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ResourceExhaustedError(
                f"cannot write checkpoint {path}: {exc.strerror or exc}", job=job
            ) from exc

    def delete(self, job: str) -> None:
        self.path(job).unlink(missing_ok=True)


def _encode(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return value._asdict()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")
