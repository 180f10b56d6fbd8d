"""The job language: parse Velostream-dialect SQL applications into job specs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velostream.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__ = lazy_exports(
    __name__,
    {
        "ConnectorCatalog": "velostream.sql.connectors",
        "ConnectorOptions": "velostream.sql.connectors",
        "OptionCheck": "velostream.sql.connectors",
        "parse_duration_ms": "velostream.sql.duration",
        "Application": "velostream.sql.model",
        "ConnectorConfig": "velostream.sql.model",
        "EmitMode": "velostream.sql.model",
        "FailureStrategy": "velostream.sql.model",
        "JobMode": "velostream.sql.model",
        "JobSpec": "velostream.sql.model",
        "MetricSpec": "velostream.sql.model",
        "Position": "velostream.sql.model",
        "StatementKind": "velostream.sql.model",
        "parse_application": "velostream.sql.parser",
    },
)
