"""Connector types as validation sees them: which exist, and how each checks its keys.

The SQL layer may not import `datasource/` (imports point down), so validation is
handed a `ConnectorCatalog`: `velostream.datasource.registry.connector_catalog()`
builds it from the registered sources and sinks, so a type added with
`register_source` / `register_sink` is accepted like a built-in one. Each type may
bring an `OptionCheck`, owned by its connector, that validates and normalises the
connector's WITH keys through a `ConnectorOptions`; a type without one keeps its keys
as given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from velostream.sql.model import ConnectorConfig
from velostream.sql.properties import Checker, Report, Settings, parse_choice

__all__ = [
    "ConnectorCatalog",
    "ConnectorOptions",
    "OptionCheck",
    "Role",
    "build_connector",
]

Role = Literal["source", "sink"]


class ConnectorOptions(Checker):
    """One connector's WITH keys (without `type`) while its type's check runs.

    A check reads and normalises `values` in place and reports each problem at the key
    it is about; every message starts with the connector, e.g.
    "source 'trades' (file_source): ...". `app` and `job` name what the connector
    belongs to, for defaults such as a consumer group.
    """

    def __init__(
        self,
        name: str,
        type: str,
        role: Role,
        settings: Settings,
        *,
        app: str,
        job: str,
        report: Report,
        warn: Report,
    ) -> None:
        values = {key: value for key, value in settings.values.items() if key != "type"}
        super().__init__(values, settings, report, f"{role} '{name}' ({type})")
        self.name, self.type, self.role = name, type, role
        self.app, self.job = app, job
        self._warn = warn

    def warning(self, key: str, message: str) -> None:
        """Warn at `key`: the application still validates."""
        self._warn(self.at(key), f"{self.label}: {message}")

    def require(self, key: str, what: str) -> str:
        """The value of `key`, stripped; a problem at the type if it is missing or blank."""
        value = self.values.get(key, "").strip()
        if not value:
            self.report(self.at("type"), f"{self.label} needs a {what}: add '{self.name}.{key}'")
        return value

    def rename(self, alias: str, canonical: str) -> None:
        """Move `alias` to `canonical`; when both are given and differ, `canonical` wins."""
        if alias not in self.values:
            return
        value = self.values.pop(alias)
        if self.values.setdefault(canonical, value) != value:
            self.warning(alias, f"'{canonical}' wins over '{alias}'")
        self.settings.where.setdefault(canonical, self.at(alias))

    def warn_unknown(self, known: Collection[str]) -> None:
        """Warn once about each key not in `known`: it is kept but nothing reads it."""
        listed = ", ".join(sorted(known))
        for key in sorted(set(self.values) - set(known)):
            self.warning(key, f"unknown key '{key}' is ignored; known keys: {listed}")


OptionCheck = Callable[[ConnectorOptions], None]
"""A connector type's check of its WITH keys, run at validation, before any row is read."""


@dataclass(frozen=True, slots=True)
class ConnectorCatalog:
    """The connector types validation accepts, in the order messages list them."""

    sources: Mapping[str, OptionCheck | None]
    sinks: Mapping[str, OptionCheck | None]

    def types(self, role: Role) -> tuple[str, ...]:
        return tuple(self.sources if role == "source" else self.sinks)

    def option_check(self, role: Role, type_name: str) -> OptionCheck | None:
        return (self.sources if role == "source" else self.sinks).get(type_name)


def build_connector(
    name: str,
    role: Role,
    settings: Settings,
    *,
    catalog: ConnectorCatalog,
    app: str,
    job: str,
    report: Report,
    warn: Report,
) -> ConnectorConfig | None:
    """Check one connector's type against `catalog`, then its keys with its type's check."""
    valid_types = catalog.types(role)
    if "type" not in settings.values:
        report(
            settings.default_at,
            f"{role} '{name}' has no type: add '{name}.type' = one of {', '.join(valid_types)}",
        )
        return None
    kind = parse_choice(settings.values["type"], valid_types)
    if kind is None:
        report(
            settings.at("type"),
            f"{role} '{name}': unknown type '{settings.values['type']}'; "
            f"valid {role} types: {', '.join(valid_types)}",
        )
        return None
    options = ConnectorOptions(
        name, kind, role, settings, app=app, job=job, report=report, warn=warn
    )
    check = catalog.option_check(role, kind)
    if check is not None:
        check(options)
    return ConnectorConfig(name=name, type=kind, properties=options.values)
