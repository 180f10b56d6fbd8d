"""The contract every dead-letter queue keeps."""

from __future__ import annotations

from typing import Protocol

from velostream.dlq.letter import DeadLetter

__all__ = ["DeadLetterQueue"]


class DeadLetterQueue(Protocol):
    """Where a job's dead letters go: durable on `flush`, cut back on `truncate`."""

    def write(self, letters: list[DeadLetter]) -> None:
        """Queue letters; nothing is durable before `flush`."""
        ...

    def flush(self) -> int:
        """Make queued letters durable; return the committed offset."""
        ...

    def truncate(self, offset: int | None) -> None:
        """Drop queued letters and, where the queue can, anything past `offset` (an
        abort, or a restart settling to the last commit)."""
        ...

    def mark_replayed(self, ids: list[str]) -> None:
        """Remember that these letters were sent through their job again."""
        ...

    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]:
        """A page of letters, oldest first, each with `replayed`; and the next offset.

        A stored record that is not a whole letter (a torn line) is skipped and
        reported, never raised: the letters around it stay readable and replayable.
        """
        ...

    def close(self) -> None:
        """Release clients and files."""
        ...
