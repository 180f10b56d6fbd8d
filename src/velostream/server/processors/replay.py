"""Dead-letter replay: send a job's dead letters through it again, between two batches.

The rows are written and committed with the job's position unchanged, then the
letters are marked replayed. If any letter still fails, none is replayed (ReplayError
lists the failures). In a job that reads several sources each letter is decoded by the
source it names and runs through that source's branch of the query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velostream.datasource.multi import MultiSource
from velostream.datasource.traits import BadRecord, SourceBatch
from velostream.dlq import DeadLetter
from velostream.dlq.replay import refuse_truncated
from velostream.errors import JobStateError, ReplayError

if TYPE_CHECKING:
    import pyarrow as pa

    from velostream.server.processors.processor import JobProcessor

__all__ = ["replay_letters"]


def _decoded(processor: JobProcessor, letters: list[DeadLetter]) -> list[SourceBatch]:
    """The letters' records decoded as their sources would: one batch per source."""
    source = processor.source
    if not isinstance(source, MultiSource):
        return [source.decode_records([letter.payload for letter in letters])]
    groups: dict[str, list[bytes]] = {}
    for letter in letters:
        name = letter.text("source") or ""
        groups.setdefault(name, []).append(letter.payload)
    return [source.decode_for(name, payloads) for name, payloads in groups.items()]


def replay_letters(processor: JobProcessor, letters: list[DeadLetter]) -> int:
    """Replay `letters` through `processor`'s job; return the rows they produced."""
    if not letters:
        return 0
    job = processor.job
    refuse_truncated(letters, job.name)
    with processor._batch_lock:
        if processor._closed or not processor._ready:
            state = "has ended" if processor._closed else "is not running yet"
            raise JobStateError(f"job {job.name!r} {state}", job=job.name)
        try:
            tables: list[pa.Table] = []
            bad: list[BadRecord] = []
            for batch in _decoded(processor, letters):
                output = processor.executor.process(batch)
                bad += [*batch.bad, *output.bad]
                tables.append(output.table)
            if bad:
                raise ReplayError(
                    f"{len(bad)} of {len(letters)} dead letters still fail; none was "
                    f"replayed. First: {bad[0].message}",
                    failures=bad,
                    job=job.name,
                )
            written = sum(processor._write(table) for table in tables)
            processor._pending_out = written
            processor.committer.commit(None)
        except BaseException:
            # Between batches the source sits at the committed position, so the
            # abort only undoes the replay's state changes and uncommitted output.
            processor._abort()
            raise
        processor._pending_out = 0
        processor._count_out(written)
        if processor.dlq is not None:
            processor.dlq.mark_replayed([letter.id for letter in letters])
        return written
