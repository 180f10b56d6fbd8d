"""Which committer a job gets: by its declared mode and its source's capability.

Simple mode commits at-least-once whatever the source. Transactional mode asks the
source how its position can commit with the outputs (`Source.transaction_capability`):
in the job's checkpoint (files, memory) or in a Kafka producer transaction. A job
reading several sources needs them all to answer alike (`MultiSource.capability`). The Kafka
committer is imported only then, so file jobs never load confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Callable

from velostream.datasource.multi import MultiSource
from velostream.datasource.traits import Source, TransactionCapability
from velostream.server.processors.context import CommitContext, Committer
from velostream.server.processors.simple import SimpleCommitter
from velostream.server.processors.transactional import TransactionalCommitter
from velostream.sql.model import JobMode

__all__ = ["choose_committer", "committer_type"]


def committer_type(mode: JobMode, source: Source) -> Callable[[CommitContext], Committer]:
    """The committer class for a job of `mode` reading `source`."""
    if mode != JobMode.TRANSACTIONAL:
        return SimpleCommitter
    capability = (
        source.capability() if isinstance(source, MultiSource) else source.transaction_capability
    )
    if capability is TransactionCapability.KAFKA_OFFSETS:
        from velostream.server.processors.kafka_transactional import (
            KafkaTransactionalCommitter,
        )

        return KafkaTransactionalCommitter
    return TransactionalCommitter


def choose_committer(context: CommitContext) -> Committer:
    """The committer of the job in `context`, built on it."""
    return committer_type(context.job.job_mode, context.source)(context)
