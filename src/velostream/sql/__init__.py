"""The job language: parse Velostream-dialect SQL applications into job specs."""

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
from velostream.sql.properties import SINK_TYPES, SOURCE_TYPES

__all__ = [
    "SINK_TYPES",
    "SOURCE_TYPES",
    "Application",
    "ConnectorConfig",
    "EmitMode",
    "FailureStrategy",
    "JobMode",
    "JobSpec",
    "MetricSpec",
    "Position",
    "StatementKind",
    "parse_application",
    "parse_duration_ms",
]
