"""The dead-letter record: a bad record's original payload plus its error context.

The payload is kept as text when it is UTF-8 (`payload`) and as base64 otherwise
(`payload_base64`); `encode_payload` and `decode_payload` are the one place that says
so, for the file and the Kafka queue alike.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velostream.datasource.traits import BadRecord
from velostream.observability.error_tracker import DeploymentContext

__all__ = ["DeadLetter", "dead_letter", "decode_payload", "encode_payload"]


def encode_payload(raw: bytes) -> dict[str, str]:
    """The document fields that keep `raw`: `payload` (text) or `payload_base64`."""
    try:
        return {"payload": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(raw).decode("ascii")}


def decode_payload(doc: Mapping[str, Any]) -> bytes:
    """The original bytes kept by `encode_payload` in `doc`."""
    if "payload_base64" in doc:
        return base64.b64decode(doc["payload_base64"])
    return str(doc.get("payload", "")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, as stored."""

    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def payload(self) -> bytes:
        return decode_payload(self.doc)

    def with_replayed(self, replayed: bool) -> DeadLetter:
        """A copy that says whether the letter was sent through its job again."""
        return DeadLetter({**self.doc, "replayed": replayed})


def dead_letter(
    record: BadRecord,
    *,
    job: str,
    app: str | None,
    version: str | None,
    source: str,
    fingerprint: str | None,
    context: DeploymentContext,
) -> DeadLetter:
    """Build the dead letter of a bad record."""
    doc: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "job": job,
        "app": app,
        "version": version,
        "stage": record.stage.value,
        "kind": record.kind.value,
        "message": record.message,
        "fingerprint": fingerprint,
        "source": source,
        "position": record.ref,
        "timestamp": time.time(),
        "node_id": context.node_id,
        "node_name": context.node_name,
        "region": context.region,
    }
    doc.update(encode_payload(record.raw))
    return DeadLetter(doc)
