"""Errors grouped by fingerprint, bounded, with where and when each group was seen.

A fingerprint is kind + stage + the message normalised: first line only, with
timestamps, UUIDs, IP addresses, hex values, quoted literals and numbers replaced
by placeholders, so "row 17 failed" and "row 42 failed" are one group. Groups are
kept per job. A repeated message hits a cache and costs O(1).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from velostream.errors import ErrorKind, Severity, Stage, default_severity
from velostream.observability.error_tracker import DeploymentContext

__all__ = [
    "DEFAULT_CATALOG_CAPACITY",
    "ErrorCatalog",
    "ErrorGroup",
    "RecordOutcome",
    "fingerprint",
    "normalize_message",
]

DEFAULT_CATALOG_CAPACITY = 1000
_NORMALIZE_CACHE_SIZE = 4096
_MAX_SAMPLE_CHARS = 2000

# Order matters: wider patterns first so their digits are not eaten by <num>.
# Each pattern names characters it cannot match without, to skip it cheaply.
# A quote that follows a letter is an apostrophe ("can't"), not a literal's start.
_QUOTED = (re.compile(r"(?<!\w)'(?:[^'\\]|\\.)*'|(?<!\w)\"(?:[^\"\\]|\\.)*\""), "<str>")
_DIGIT_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\b"
        ),
        "<ts>",
        "-",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>", "-"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
        "-",
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>", "."),
    (
        re.compile(r"\[?(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}\]?(?::\d+)?(?=\s|$|[,;)])"),
        "<ip>",
        "::",
    ),
    (
        # 0x.. or a long run of hex digits with at least one digit and one letter
        re.compile(
            r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b"
        ),
        "<hex>",
        "",
    ),
)
# A number standing alone, a number with a unit ("15ms"), or digits glued to the end
# of a word ("error5").
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])"
    r"|(?<![\w.])[-+]?\d+(?:\.\d+)?(?=[A-Za-z%]+\b)"
    r"|(?<=[A-Za-z_])\d+\b"
)
_HAS_DIGIT = re.compile(r"\d").search


def normalize_message(message: str) -> str:
    """The message's first line with its variable parts replaced by placeholders."""
    line = message.split("\n", 1)[0].strip()
    has_digit = _HAS_DIGIT(line) is not None
    if has_digit:
        colons = line.count(":")
        for pattern, placeholder, needs in _DIGIT_PATTERNS:
            # An IPv6 address has at least two colons, not necessarily adjacent.
            if needs in line or (needs == "::" and colons >= 2):
                line = pattern.sub(placeholder, line)
    if "'" in line or '"' in line:
        line = _QUOTED[0].sub(_QUOTED[1], line)
    if has_digit:
        line = _NUMBER.sub("<num>", line)
    return line


def fingerprint(kind: ErrorKind | str, stage: Stage | str, normalized: str) -> str:
    """A short stable id of (kind, stage, normalised message)."""
    key = f"{kind}\x1f{stage}\x1f{normalized}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=8).hexdigest()


class RecordOutcome(NamedTuple):
    """What one `ErrorCatalog.record` did: the group's fingerprint, and whether it is new."""

    fingerprint: str
    new_group: bool
    evicted: bool


_NO_OUTCOME = RecordOutcome("", new_group=False, evicted=False)


@dataclass(slots=True)
class ErrorGroup:
    """All occurrences of one fingerprint within one job."""

    fingerprint: str
    job: str
    stage: Stage
    kind: ErrorKind
    severity: Severity
    normalized: str
    sample_message: str
    count: int
    first_seen: float
    last_seen: float
    deployment_context: DeploymentContext | None
    last_record_ref: str | None
    seq: int = 0
    # Returned for every repeat: building a result per call costs more than the update.
    repeat_outcome: RecordOutcome = _NO_OUTCOME

    def as_dict(self) -> dict[str, object]:
        ctx = self.deployment_context
        return {
            "fingerprint": self.fingerprint,
            "job": self.job,
            "stage": str(self.stage),
            "kind": str(self.kind),
            "severity": str(self.severity),
            "message": self.sample_message,
            "normalized": self.normalized,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "node_id": ctx.node_id if ctx else None,
            "node_name": ctx.node_name if ctx else None,
            "region": ctx.region if ctx else None,
            "version": ctx.version if ctx else None,
            "last_record_ref": self.last_record_ref,
            "seq": self.seq,
        }


class ErrorCatalog:
    """Error groups keyed by (job, fingerprint); least-recently-seen evicted past capacity."""

    def __init__(self, capacity: int = DEFAULT_CATALOG_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"error catalog capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._groups: OrderedDict[tuple[str, str], ErrorGroup] = OrderedDict()
        self._fp_cache: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._evictions = 0
        self._groups_created = 0
        self._seq = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def groups_created(self) -> int:
        return self._groups_created

    def __len__(self) -> int:
        return len(self._groups)

    def fingerprint_of(self, kind: ErrorKind, stage: Stage, message: str) -> tuple[str, str]:
        """(fingerprint, normalised message), cached for repeated messages."""
        # `_value_` is a plain attribute; hashing the enum member itself runs Python code.
        key = (kind._value_, stage._value_, message)
        with self._lock:
            return self._fingerprint_locked(key)

    def _fingerprint_locked(self, key: tuple[str, str, str]) -> tuple[str, str]:
        hit = self._fp_cache.get(key)
        if hit is not None:
            return hit
        normalized = normalize_message(key[2])
        result = (fingerprint(key[0], key[1], normalized), normalized)
        if len(self._fp_cache) >= _NORMALIZE_CACHE_SIZE:
            # Drop the oldest entry (dicts keep insertion order).
            del self._fp_cache[next(iter(self._fp_cache))]
        self._fp_cache[key] = result
        return result

    def record(
        self,
        job: str,
        stage: Stage,
        kind: ErrorKind,
        message: str,
        severity: Severity | None = None,
        context: DeploymentContext | None = None,
        record_ref: str | None = None,
        now: float | None = None,
        count: int = 1,
    ) -> RecordOutcome:
        """File `count` occurrences of an error in its group (created if new)."""
        ts = time.time() if now is None else now
        with self._lock:
            fp, normalized = self._fingerprint_locked((kind._value_, stage._value_, message))
            self._seq += 1
            gkey = (job, fp)
            group = self._groups.get(gkey)
            if group is not None:
                group.count += count
                group.last_seen = ts
                if group.sample_message is not message:
                    group.sample_message = message[:_MAX_SAMPLE_CHARS]
                group.seq = self._seq
                if record_ref is not None:
                    group.last_record_ref = record_ref
                if context is not None:
                    group.deployment_context = context
                self._groups.move_to_end(gkey)
                return group.repeat_outcome
            self._groups[gkey] = ErrorGroup(
                fingerprint=fp,
                job=job,
                stage=stage,
                kind=kind,
                severity=severity or default_severity(kind),
                normalized=normalized,
                sample_message=message[:_MAX_SAMPLE_CHARS],
                count=count,
                first_seen=ts,
                last_seen=ts,
                deployment_context=context,
                last_record_ref=record_ref,
                seq=self._seq,
                repeat_outcome=RecordOutcome(fp, new_group=False, evicted=False),
            )
            self._groups_created += 1
            evicted = len(self._groups) > self._capacity
            if evicted:
                self._groups.popitem(last=False)
                self._evictions += 1
            return RecordOutcome(fp, new_group=True, evicted=evicted)

    def groups(
        self,
        *,
        job: str | None = None,
        stage: Stage | str | None = None,
        since: float | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[ErrorGroup]:
        """Snapshot of the groups, most recently seen first, filtered."""
        with self._lock:
            snapshot = [
                _copy(g)
                for g in reversed(self._groups.values())
                if (job is None or g.job == job)
                and (stage is None or g.stage == stage)
                and (since is None or g.last_seen >= since)
                and (after_seq is None or g.seq > after_seq)
            ]
        return snapshot if limit is None else snapshot[: max(limit, 0)]

    def get(self, job: str, fp: str) -> ErrorGroup | None:
        with self._lock:
            group = self._groups.get((job, fp))
            return _copy(group) if group is not None else None

    def remove_job(self, job: str) -> int:
        """Forget every group of `job`; return how many were removed."""
        with self._lock:
            keys = [k for k in self._groups if k[0] == job]
            for k in keys:
                del self._groups[k]
            return len(keys)

    def reset(self) -> None:
        with self._lock:
            self._groups.clear()
            self._fp_cache.clear()


def _copy(group: ErrorGroup) -> ErrorGroup:
    return ErrorGroup(
        fingerprint=group.fingerprint,
        job=group.job,
        stage=group.stage,
        kind=group.kind,
        severity=group.severity,
        normalized=group.normalized,
        sample_message=group.sample_message,
        count=group.count,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        deployment_context=group.deployment_context,
        last_record_ref=group.last_record_ref,
        seq=group.seq,
        repeat_outcome=group.repeat_outcome,
    )
