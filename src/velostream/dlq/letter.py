"""The dead-letter record: a bad record's original payload plus its error context.

The payload is kept as text when it is UTF-8 (`payload`) and as base64 otherwise
(`payload_base64`); `encode_payload` and `decode_payload` are the one place that says
so, for the file and the Kafka queue alike.

Names and messages (`source`, `position`, `message`) are text, but a file name need not
be UTF-8: it arrives surrogate-escaped (`os.fsdecode`). Such a field is stored readable,
escaped by `safe_text` (`tr\\xffades.csv:7`), with its exact bytes beside it as
`<field>_base64`; `encode_text` and `DeadLetter.text` write and read it back. A letter's
document is therefore always valid UTF-8, whatever queue it is written to.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from velostream.datasource.traits import BadRecord, TruncatedRecord
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.text import raw_bytes, safe_text

__all__ = [
    "DeadLetter",
    "dead_letter",
    "decode_payload",
    "decode_text",
    "encode_payload",
    "encode_text",
]

# The text fields that may hold what a source read (a file name, a decoder's message).
_TEXT_FIELDS = ("message", "source", "position")


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


def encode_text(field: str, value: str | None) -> dict[str, str | None]:
    """`{field: value}`; a value that is not UTF-8 is escaped for reading and its bytes
    kept as `<field>_base64`."""
    if value is None:
        return {field: None}
    shown = safe_text(value)
    if shown is value:
        return {field: value}
    return {field: shown, f"{field}_base64": base64.b64encode(raw_bytes(value)).decode("ascii")}


def decode_text(doc: Mapping[str, Any], field: str) -> str | None:
    """The text `encode_text` kept for `field`, undecodable bytes surrogate-escaped again."""
    encoded = doc.get(f"{field}_base64")
    if encoded is not None:
        return base64.b64decode(encoded).decode("utf-8", "surrogateescape")
    value = doc.get(field)
    return None if value is None else str(value)


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

    def text(self, field: str) -> str | None:
        """A text field as it was before it was stored (`decode_text`)."""
        return decode_text(self.doc, field)

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
    """Build the dead letter of a bad record; its document is valid UTF-8 throughout."""
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
    for field in _TEXT_FIELDS:
        doc.update(encode_text(field, doc[field]))
    doc.update(encode_payload(record.raw))
    if isinstance(record, TruncatedRecord):
        doc["truncated"] = True  # only the record's start: never replayed
    return DeadLetter(doc)
