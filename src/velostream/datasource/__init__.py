"""Sources and sinks: the contracts (`traits`) and the registry by `type`.

Connector modules (file, stdout, memory, Kafka) are imported only when a job asks for
their type, through `create_source` / `create_sink`.
"""

from velostream.datasource.registry import (
    create_sink,
    create_source,
    register_sink,
    register_source,
    sink_types,
    source_types,
)
from velostream.datasource.traits import (
    BadRecord,
    RecordRefs,
    Sink,
    Source,
    SourceBatch,
    TransactionCapability,
)

__all__ = [
    "BadRecord",
    "RecordRefs",
    "Sink",
    "Source",
    "SourceBatch",
    "TransactionCapability",
    "create_sink",
    "create_source",
    "register_sink",
    "register_source",
    "sink_types",
    "source_types",
]
