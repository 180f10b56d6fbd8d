"""A dead-letter queue in a list, for tests (never for production use: not durable)."""

from __future__ import annotations

from velostream.dlq.letter import DeadLetter
from velostream.dlq.replay import ReplayLog
from velostream.errors import DeadLetterError

__all__ = ["MemoryDeadLetterQueue"]


class MemoryDeadLetterQueue:
    """Dead letters in a list; `fail_writes` makes `flush` fail (a broken queue)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self._pending: list[DeadLetter] = []
        self._replayed = ReplayLog()
        self.fail_writes = False

    @property
    def replayed(self) -> set[str]:
        """The ids marked replayed."""
        return self._replayed.ids()

    def write(self, letters: list[DeadLetter]) -> None:
        self._pending.extend(letters)

    def flush(self) -> int:
        if self.fail_writes:
            self._pending.clear()
            raise DeadLetterError("memory DLQ configured to fail")
        self.letters.extend(self._pending)
        self._pending.clear()
        return len(self.letters)

    def truncate(self, offset: int | None) -> None:
        self._pending.clear()
        if offset is not None:
            del self.letters[offset:]

    def read(self, offset: int = 0, limit: int = 100) -> tuple[list[DeadLetter], int | None]:
        replayed = self._replayed.ids()
        page = [d.with_replayed(d.id in replayed) for d in self.letters[offset : offset + limit]]
        nxt = offset + limit if offset + limit < len(self.letters) else None
        return page, nxt

    def mark_replayed(self, ids: list[str]) -> None:
        self._replayed.add(ids)

    def close(self) -> None:
        pass
