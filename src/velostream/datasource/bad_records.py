"""Bad records as columns, and the groups of bad records that fail alike.

A dirty file block holds thousands of bad lines. `BadRecords` keeps them as a few
columns: their bytes in one Arrow array, their line numbers in one numpy array, and
each one's reason (kind and message) as a code into the few distinct reasons. It
builds a `BadRecord` only when one is asked for: the job counts and records them by
group (`failure_groups`), so a batch with 20,000 bad lines costs no Python object per
line on the reader's thread, which the job's thread would otherwise wait for (the GIL).

`failure_groups` works on any sequence of bad records: records that fail alike (same
stage, kind and message) are one group, with its count and the reference of its last
record, found by C-level passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple, TypeAlias, TypeVar, overload

import numpy as np
import pyarrow as pa

from velostream.datasource.traits import BadRecord
from velostream.errors import ErrorKind, Stage

__all__ = [
    "BadRecords",
    "FailureGroup",
    "FailureKey",
    "Reason",
    "coded",
    "failure_groups",
    "failure_keys",
    "joined",
    "per_code",
]

_T = TypeVar("_T")

#: Why a record is bad: its kind and message.
Reason: TypeAlias = tuple[ErrorKind, str]

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

    Record i is `raws[i]`, from `{place}{numbers[i]}`, with the kind and message
    `reasons[codes[i]]`, at `stage`. `raws` may be given as a function that makes them:
    they are then made when first asked for (a job that only counts and logs its bad
    records, with no dead-letter queue, never asks, and its reader saves the copy).
    """

    __slots__ = ("_raws", "codes", "numbers", "place", "reasons", "stage")

    def __init__(
        self,
        raws: pa.Array | Callable[[], pa.Array],
        place: str,
        numbers: np.ndarray,
        codes: np.ndarray,
        reasons: list[Reason],
        stage: Stage = Stage.DESERIALIZE,
    ) -> None:
        self._raws, self.place, self.numbers = raws, place, numbers
        self.codes, self.reasons, self.stage = codes, reasons, stage

    @property
    def raws(self) -> pa.Array:
        """Each record's bytes, as binary."""
        if not isinstance(self._raws, pa.Array):
            self._raws = self._raws()
        return self._raws

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> BadRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[BadRecord]: ...

    def __getitem__(self, index: int | slice) -> BadRecord | list[BadRecord]:
        if isinstance(index, slice):
            return list(self)[index]
        i = range(len(self))[index]  # negative indexes; IndexError past the end
        raw: bytes = self.raws[i].as_py()
        kind, message = self.reasons[self.codes[i]]
        return BadRecord(raw, self.ref(i), message, kind, self.stage)

    def __iter__(self) -> Iterator[BadRecord]:
        columns = zip(
            self.raws.to_pylist(),
            self.refs(),
            per_code([message for _, message in self.reasons], self.codes),
            per_code([kind for kind, _ in self.reasons], self.codes),
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
        """`failure_groups` by numpy passes over the codes, then a step per reason."""
        codes, stage = self.codes, self.stage
        counts = np.bincount(codes).tolist()
        present, firsts = np.unique(codes, return_index=True)
        from_end = np.unique(codes[::-1], return_index=True)[1]
        lasts = len(codes) - 1 - from_end
        # [first, records, last, code] of each group; equal reasons under two codes
        # are one group
        found: dict[FailureKey, list[int]] = {}
        spans = zip(present.tolist(), firsts.tolist(), lasts.tolist(), strict=True)
        for code, first, last in spans:
            kind, message = self.reasons[code]
            key = (id(stage), id(kind), message)
            seen = found.get(key)
            if seen is None:
                found[key] = [first, counts[code], last, code]
            else:
                seen[0], seen[2] = min(seen[0], first), max(seen[2], last)
                seen[1] += counts[code]
        return [
            FailureGroup(key, stage, *self.reasons[code], records, self.ref(last))
            for key, (_, records, last, code) in sorted(found.items(), key=_first)
        ]

    def keys(self) -> Iterable[FailureKey]:
        """Each record's `FailureKey`, in order."""
        stage = id(self.stage)
        return per_code([(stage, id(kind), message) for kind, message in self.reasons], self.codes)


def coded(kinds: Iterable[ErrorKind], messages: Iterable[str]) -> tuple[np.ndarray, list[Reason]]:
    """Each (kind, message)'s index among the distinct ones, and those, in order of
    first occurrence."""
    index: dict[tuple[int, str], int] = {}
    reasons: list[Reason] = []
    codes: list[int] = []
    for kind, message in zip(kinds, messages, strict=True):
        key = (id(kind), message)  # by identity: hashing an enum member calls Python
        code = index.get(key)
        if code is None:
            code = index[key] = len(reasons)
            reasons.append((kind, message))
        codes.append(code)
    return np.array(codes, np.intp), reasons


def per_code(values: list[_T], codes: np.ndarray) -> list[_T]:
    """`values[c]` for each code `c`, with no Python step per code."""
    if len(values) == 1:
        return values * len(codes)
    table = np.empty(len(values), object)
    for i, value in enumerate(values):  # one by one: numpy would take a tuple apart
        table[i] = value
    listed: list[_T] = table[codes].tolist()
    return listed


def _first(item: tuple[FailureKey, list[int]]) -> int:
    return item[1][0]


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
