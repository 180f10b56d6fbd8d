"""The dead-letter record: a bad record's original payload plus its error context.

The payload is kept as text when it is UTF-8 (`payload`) and as base64 otherwise
(`payload_base64`); `encode_payload` and `decode_payload` are the one place that says
so, for the file and the Kafka queue alike.

`dead_letters` builds the letters of a block's bad records (`BadRecords`) column by
column: what they share is worked out once, their ids come from one random draw and
their payloads are checked as UTF-8 at once, at a fraction of the cost of a letter at a
time (a block with 20,000 bad lines is a job's whole second otherwise).

Names and messages (`source`, `position`, `message`) are text, but a file name need not
be UTF-8: it arrives surrogate-escaped (`os.fsdecode`). Such a field is stored readable,
escaped by `safe_text` (`tr\\xffades.csv:7`), with its exact bytes beside it as
`<field>_base64`; `encode_text` and `DeadLetter.text` write and read it back. A letter's
document is therefore always valid UTF-8, whatever queue it is written to.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from velostream.datasource.bad_records import BadRecords, per_code
from velostream.datasource.traits import BadRecord, TruncatedRecord
from velostream.observability.error_tracker import DeploymentContext
from velostream.observability.text import raw_bytes, safe_text

__all__ = [
    "DeadLetter",
    "dead_letter",
    "dead_letters",
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


def dead_letters(
    bad: Sequence[BadRecord],
    fingerprints: list[str | None],
    *,
    job: str,
    app: str | None,
    version: str | None,
    source: str,
    context: DeploymentContext,
) -> list[DeadLetter]:
    """The dead letters of `bad` in order, each as `dead_letter` builds it,
    `fingerprints[i]` the fingerprint of record i; a block's bad lines (`BadRecords`)
    column by column, with one timestamp for them all."""
    if not isinstance(bad, BadRecords) or safe_text(bad.place) is not bad.place:
        # one at a time (a file name that is not UTF-8: each position keeps its bytes)
        return [
            dead_letter(
                record,
                job=job,
                app=app,
                version=version,
                source=source,
                fingerprint=fp,
                context=context,
            )
            for record, fp in zip(bad, fingerprints, strict=True)
        ]
    stage = bad.stage.value
    # each reason's fields made once, then spread over its records
    reasons = [{"kind": kind.value, **encode_text("message", m)} for kind, m in bad.reasons]
    named = encode_text("source", source)
    shared = {
        "timestamp": time.time(),
        "node_id": context.node_id,
        "node_name": context.node_name,
        "region": context.region,
    }
    payloads = _payloads(bad.raws)
    columns = zip(
        _uuid4_hexes(len(bad)),
        per_code(reasons, bad.codes),
        fingerprints,
        bad.refs(),
        payloads,
        strict=True,
    )
    return [
        DeadLetter(
            {
                "id": id_,
                "job": job,
                "app": app,
                "version": version,
                "stage": stage,
                **reason,
                "fingerprint": fp,
                **named,
                "position": position,
                **shared,
                **payload,
            }
        )
        for id_, reason, fp, position, payload in columns
    ]


def _payloads(raws: pa.Array) -> list[dict[str, str]]:
    """`encode_payload` of each raw record; all at once when they are all UTF-8."""
    try:
        texts: list[str] = raws.cast(pa.large_string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [encode_payload(raw) for raw in raws.to_pylist()]
    return [{"payload": text} for text in texts]


def _uuid4_hexes(n: int) -> list[str]:
    """`n` random UUIDs (version 4) as `uuid.uuid4().hex` gives them, from one draw."""
    draw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    draw[:, 6] = (draw[:, 6] & 0x0F) | 0x40  # version 4
    draw[:, 8] = (draw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexes = draw.tobytes().hex()
    return [hexes[i : i + 32] for i in range(0, 32 * n, 32)]
