"""Dead letters for the dlq tests: bad records of one job, `f.csv:<i>` each."""

from __future__ import annotations

from velostream.datasource.traits import BadRecord
from velostream.dlq import DeadLetter, dead_letter
from velostream.errors import ErrorKind
from velostream.observability.error_tracker import DeploymentContext


def bad(i: int, raw: bytes = b"1,x") -> BadRecord:
    return BadRecord(raw=raw, ref=f"f.csv:{i}", message="bad", kind=ErrorKind.TYPE)


def letters(first: int, n: int = 1) -> list[DeadLetter]:
    """Letters of job `j` for the bad records `first` .. `first + n - 1`."""
    ctx = DeploymentContext()
    return [
        dead_letter(
            bad(i), job="j", app=None, version=None, source="s", fingerprint=None, context=ctx
        )
        for i in range(first, first + n)
    ]
