"""Bad records as columns, and the groups of bad records that fail alike.

A dirty file block holds thousands of bad lines. `BadRecords` keeps them as a few
columns (their bytes in one Arrow array, their line numbers in one numpy array, their
kinds and messages as lists) and builds a `BadRecord` only when one is asked for: the
job counts and records them by group (`failure_groups`), so a batch with 20,000 bad
lines costs no Python object per line on the reader's thread, which the job's thread
would otherwise wait for (the GIL).

`failure_groups` works on any sequence of bad records: records that fail alike (same
stage, kind and message) are one group, with its count and the reference of its last
record, found by C-level passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from velostream.datasource.traits import BadRecord
from velostream.errors import ErrorKind, Stage

__all__ = [
    "BadRecords",
    "FailureGroup",
    "FailureKey",
    "failure_groups",
    "failure_keys",
    "joined",
]

#: What makes records fail alike: their stage, kind and message. The stage and kind
#: by identity (their members are singletons): hashing an enum member calls Python.
FailureKey = tuple[int, int, str]


class FailureGroup(NamedTuple):
    """Bad records that fail alike: how many, and where the last one came from."""

    key: FailureKey
    stage: Stage
    kind: ErrorKind
    message: str
    records: int
    last_ref: str


class BadRecords(Sequence[BadRecord]):
    """Bad records of one block as columns (see the module docstring), in order.

    Record i is `raws[i]`, from `{place}{numbers[i]}`, with `kinds[i]` and
    `messages[i]`, at `stage`. `raws` may be given as a function that makes them: they
    are then made when first asked for (a job that only counts and logs its bad records,
    with no dead-letter queue, never asks, and its reader saves the copy).
    """

    __slots__ = ("_raws", "kinds", "messages", "numbers", "place", "stage")

    def __init__(
        self,
        raws: pa.Array | Callable[[], pa.Array],
        place: str,
        numbers: np.ndarray,
        kinds: list[ErrorKind],
        messages: list[str],
        stage: Stage = Stage.DESERIALIZE,
    ) -> None:
        self._raws, self.place, self.numbers = raws, place, numbers
        self.kinds, self.messages, self.stage = kinds, messages, stage

    @property
    def raws(self) -> pa.Array:
        """Each record's bytes, as binary."""
        if not isinstance(self._raws, pa.Array):
            self._raws = self._raws()
        return self._raws

    def __len__(self) -> int:
        return len(self.kinds)

    @overload
    def __getitem__(self, index: int) -> BadRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[BadRecord]: ...

    def __getitem__(self, index: int | slice) -> BadRecord | list[BadRecord]:
        if isinstance(index, slice):
            return list(self)[index]
        i = range(len(self))[index]  # negative indexes; IndexError past the end
        raw: bytes = self.raws[i].as_py()
        return BadRecord(raw, self.ref(i), self.messages[i], self.kinds[i], self.stage)

    def __iter__(self) -> Iterator[BadRecord]:
        columns = zip(
            self.raws.to_pylist(),
            self.refs(),
            self.messages,
            self.kinds,
            repeat(self.stage),
            strict=False,  # the stage repeats; the other columns are as long
        )
        # No Python step per record: BadRecord's own constructor costs more.
        return map(tuple.__new__, repeat(BadRecord), columns)

    def ref(self, index: int) -> str:
        """Where record `index` came from, e.g. `trades.csv:42`."""
        return f"{self.place}{self.numbers[index]}"

    def refs(self) -> list[str]:
        """Every record's reference, in order."""
        return list(map(self.place.__add__, map(str, self.numbers.tolist())))

    def groups(self) -> list[FailureGroup]:
        """`failure_groups` by Arrow kernels: kind and message joined, then encoded."""
        text = pa.string()
        joined = pc.binary_join_element_wise(
            pa.array(self.kinds, text), pa.array(self.messages, text), pa.scalar("\n", text)
        )
        # codes in order of first occurrence: the groups come in that order
        codes = pc.dictionary_encode(joined).indices.to_numpy()
        counts = np.bincount(codes)
        firsts_from_end = np.unique(codes[::-1], return_index=True)[1]
        lasts = (len(codes) - 1 - firsts_from_end).tolist()
        stage = self.stage
        return [
            FailureGroup(
                (id(stage), id(self.kinds[i]), self.messages[i]),
                stage,
                self.kinds[i],
                self.messages[i],
                int(records),
                self.ref(i),
            )
            for i, records in zip(lasts, counts.tolist(), strict=True)
        ]

    def keys(self) -> Iterable[FailureKey]:
        """Each record's `FailureKey`, in order."""
        return zip(repeat(id(self.stage)), map(id, self.kinds), self.messages, strict=False)


def failure_keys(bad: Sequence[BadRecord]) -> Iterable[FailureKey]:
    """Each record's `FailureKey`, in order, with no Python step per record."""
    if isinstance(bad, BadRecords):
        return bad.keys()
    stages, kinds, messages = (map(itemgetter(i), bad) for i in (4, 3, 2))
    return zip(map(id, stages), map(id, kinds), messages, strict=True)


def failure_groups(bad: Sequence[BadRecord]) -> list[FailureGroup]:
    """The groups of records that fail alike, in the order each first occurs."""
    if isinstance(bad, BadRecords):
        return bad.groups()
    keys = list(failure_keys(bad))
    counts = Counter(keys)
    last = dict(zip(keys, range(len(keys)), strict=True))
    groups = []
    for key, records in counts.items():
        one = bad[last[key]]
        groups.append(FailureGroup(key, one.stage, one.kind, one.message, records, one.ref))
    return groups


def joined(first: Sequence[BadRecord], second: Sequence[BadRecord]) -> Sequence[BadRecord]:
    """Both in order; either as it is (columns stay columns) when the other is empty."""
    if not second:
        return first
    if not first:
        return second
    return [*first, *second]
