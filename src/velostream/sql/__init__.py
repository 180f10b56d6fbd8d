"""The job language: parse Velostream-dialect SQL applications into job specs."""

from velostream.sql.connectors import ConnectorCatalog, ConnectorOptions, OptionCheck
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import (
    Application,
    ConnectorConfig,
    EmitMode,
    FailureStrategy,
    JobMode,
    JobSpec,
    MetricSpec,
    Position,
    StatementKind,
)
from velostream.sql.parser import parse_application

__all__ = [
    "Application",
    "ConnectorCatalog",
    "ConnectorConfig",
    "ConnectorOptions",
    "EmitMode",
    "FailureStrategy",
    "JobMode",
    "JobSpec",
    "MetricSpec",
    "OptionCheck",
    "Position",
    "StatementKind",
    "parse_application",
    "parse_duration_ms",
]
