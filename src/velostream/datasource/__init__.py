"""Sources and sinks: the contracts (`traits`) and the registry by `type`.

The registry is also what SQL validation accepts: `connector_catalog()` hands it the
registered types with the check of each one's WITH keys.

Connector modules (file, stdout, memory, Kafka) are imported only when a job asks for
their type, through `create_source` / `create_sink`.
"""

from velostream.datasource.registry import (
    connector_catalog,
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
    "connector_catalog",
    "create_sink",
    "create_source",
    "register_sink",
    "register_source",
    "sink_types",
    "source_types",
]
