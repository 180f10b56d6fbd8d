"""The seed's rolling error buffer, with its exact semantics.

`ErrorMessageBuffer` keeps the last N unique error messages (default 10). A message
already in the buffer increments its entry in place (the entry keeps its position and
its first-seen timestamp); a new message is appended and, past capacity, the oldest
entry is evicted and its count subtracted from the per-message counts. `reset()`
clears messages, counts and the total but keeps the deployment context.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "DEFAULT_BUFFER_CAPACITY",
    "DeploymentContext",
    "ErrorEntry",
    "ErrorMessageBuffer",
    "ErrorStats",
]

DEFAULT_BUFFER_CAPACITY = 10


def _first_set(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class DeploymentContext:
    """Where an error happened: node, node name, region and version."""

    node_id: str | None = None
    node_name: str | None = None
    region: str | None = None
    version: str | None = None

    @classmethod
    def with_all(cls, node_id: str, node_name: str, region: str, version: str) -> DeploymentContext:
        return cls(node_id=node_id, node_name=node_name, region=region, version=version)

    @classmethod
    def from_env(
        cls, version: str | None = None, env: Mapping[str, str] | None = None
    ) -> DeploymentContext:
        """Build the context from the environment, in the seed's priority order.

        node_id = NODE_ID > HOSTNAME > POD_NAME; node_name = NODE_NAME > SERVICE_NAME;
        region = AWS_REGION > REGION > DEPLOYMENT_REGION; version = the job's version
        when given (non-empty), else APP_VERSION.
        """
        e = os.environ if env is None else env
        return cls(
            node_id=_first_set(e, "NODE_ID", "HOSTNAME", "POD_NAME"),
            node_name=_first_set(e, "NODE_NAME", "SERVICE_NAME"),
            region=_first_set(e, "AWS_REGION", "REGION", "DEPLOYMENT_REGION"),
            version=version if version else _first_set(e, "APP_VERSION"),
        )

    def has_any(self) -> bool:
        return any(v is not None for v in (self.node_id, self.node_name, self.region, self.version))

    def parts(self) -> list[str]:
        """`key=value` strings for the fields that are set, in the seed's order."""
        fields = (
            ("node_id", self.node_id),
            ("node_name", self.node_name),
            ("region", self.region),
            ("version", self.version),
        )
        return [f"{k}={v}" for k, v in fields if v is not None]

    def as_dict(self) -> dict[str, str | None]:
        return {
            "node_id": self.node_id,
            "node_name": self.node_name,
            "region": self.region,
            "version": self.version,
        }


@dataclass(slots=True)
class ErrorEntry:
    """One unique message in the buffer: first-seen timestamp (seconds) and count."""

    message: str
    timestamp: int = field(default_factory=lambda: int(time.time()))
    count: int = 1
    node_id: str | None = None
    deployment_context: DeploymentContext | None = None

    @classmethod
    def with_node(cls, message: str, node_id: str) -> ErrorEntry:
        return cls(message=message, node_id=node_id)

    @classmethod
    def with_deployment_context(cls, message: str, context: DeploymentContext) -> ErrorEntry:
        entry = cls(message=message)
        entry.set_deployment_context(context)
        return entry

    def set_deployment_context(self, context: DeploymentContext) -> None:
        if context.node_id is not None:
            self.node_id = context.node_id
        self.deployment_context = context

    def __str__(self) -> str:
        if self.deployment_context is not None:
            parts = self.deployment_context.parts()
        elif self.node_id is not None:
            parts = [f"node={self.node_id}"]
        else:
            parts = []
        prefix = f"[{', '.join(parts)}] " if parts else ""
        return f"{prefix}{self.message} (count: {self.count})"

    def as_dict(self) -> dict[str, object]:
        ctx = self.deployment_context
        return {
            "message": self.message,
            "timestamp": self.timestamp,
            "count": self.count,
            "node_id": self.node_id,
            "deployment_context": ctx.as_dict() if ctx is not None else None,
        }


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """A snapshot of a buffer's totals and per-message counts."""

    total_errors: int
    unique_errors: int
    buffered_messages: int
    message_counts: dict[str, int]

    def get_sorted_by_frequency(self) -> list[tuple[str, int]]:
        """Messages by count, most frequent first; ties by message text."""
        return sorted(self.message_counts.items(), key=lambda item: (-item[1], item[0]))

    def get_top_errors(self, limit: int) -> list[tuple[str, int]]:
        return self.get_sorted_by_frequency()[: max(limit, 0)]


class ErrorMessageBuffer:
    """Rolling buffer of the last `capacity` unique error messages. Thread-safe."""

    def __init__(self, capacity: int = DEFAULT_BUFFER_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"error buffer capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        # Insertion order is the buffer order (oldest first); values are the entries.
        self._entries: dict[str, ErrorEntry] = {}
        self._message_counts: dict[str, int] = {}
        self._total_errors = 0
        self._node_id: str | None = None
        self._context: DeploymentContext | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    def set_node_id(self, node_id: str | None) -> None:
        with self._lock:
            self._node_id = node_id
            if self._context is not None:
                self._context = replace(self._context, node_id=node_id)

    def set_deployment_context(self, context: DeploymentContext) -> None:
        with self._lock:
            if context.node_id is not None:
                self._node_id = context.node_id
            self._context = context

    def get_deployment_context(self) -> DeploymentContext | None:
        return self._context

    def add_error(
        self, message: str, context: DeploymentContext | None = None, count: int = 1
    ) -> str | None:
        """Record `count` occurrences of `message`; return the message evicted, if any.

        `context`, when given, attributes a new entry to that deployment context
        instead of the buffer's own (one server buffer serves many jobs).
        """
        with self._lock:
            self._total_errors += count
            self._message_counts[message] = self._message_counts.get(message, 0) + count
            entry = self._entries.get(message)
            if entry is not None:
                entry.count += count
                return None
            entry = ErrorEntry(message=message, count=count)
            if self._node_id is not None:
                entry.node_id = self._node_id
            ctx = context if context is not None else self._context
            if ctx is not None:
                entry.set_deployment_context(ctx)
            self._entries[message] = entry
            if len(self._entries) <= self._capacity:
                return None
            oldest = next(iter(self._entries))
            removed = self._entries.pop(oldest)
            remaining = self._message_counts.get(oldest, 0) - removed.count
            if remaining > 0:
                self._message_counts[oldest] = remaining
            else:
                self._message_counts.pop(oldest, None)
            return oldest

    def get_messages(self) -> list[ErrorEntry]:
        """Copies of the buffered entries, oldest first."""
        with self._lock:
            return [replace(e) for e in self._entries.values()]

    def get_message_count(self, message: str) -> int:
        return self._message_counts.get(message, 0)

    def get_message_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._message_counts)

    def get_stats(self) -> ErrorStats:
        with self._lock:
            return ErrorStats(
                total_errors=self._total_errors,
                unique_errors=len(self._message_counts),
                buffered_messages=len(self._entries),
                message_counts=dict(self._message_counts),
            )

    @property
    def total_errors(self) -> int:
        return self._total_errors

    def reset(self) -> None:
        """Clear messages, counts and the total; the deployment context stays."""
        with self._lock:
            self._entries.clear()
            self._message_counts.clear()
            self._total_errors = 0

    def buffer_size(self) -> int:
        return len(self._entries)

    def is_full(self) -> bool:
        return len(self._entries) >= self._capacity

    def format_for_report(self) -> str:
        """The seed's text report: header with context, totals, newest entry first."""
        with self._lock:
            entries = list(self._entries.values())
            total = self._total_errors
            unique = len(self._message_counts)
            ctx, node_id = self._context, self._node_id
        if not entries:
            return "No errors recorded"
        if ctx is not None:
            parts = ctx.parts()
            header = f"=== Error Report [{', '.join(parts)}] ===\n" if parts else None
        elif node_id is not None:
            header = f"=== Error Report [Node: {node_id}] ===\n"
        else:
            header = None
        lines = [header or "=== Error Report ===\n"]
        lines.append(
            f"Total Errors: {total}\nUnique Errors: {unique}\nBuffered Messages: {len(entries)}\n\n"
        )
        lines.append("Recent Errors (most recent first):\n")
        lines.append("================================\n")
        for idx, entry in enumerate(reversed(entries), start=1):
            lines.append(f"{idx}. {entry}\n")
        return "".join(lines)
