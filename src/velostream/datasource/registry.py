"""Sources and sinks by `type`: a static table resolved lazily, plus explicit extras.

Built-in types are listed below as ``"module:Class"`` strings and imported only when a
job asks for them, so importing this package never imports Kafka or file code. A new
connector is one line in `_SOURCES` / `_SINKS` (and one in `_SOURCE_OPTIONS` /
`_SINK_OPTIONS` if it checks its WITH keys); tests and plugins may also call
`register_source` / `register_sink` explicitly.

This is the one registry: `connector_catalog()` hands the same types, each with the
check of its keys, to SQL validation (which may not import this layer), so a
registered type validates like a built-in one and an unknown type is refused with the
list of known ones.

The property helpers (`bool_property`, `duration_property`, `choice_property`) give
every connector the same parsing and the same error messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar

from velostream.datasource.traits import Sink, Source
from velostream.errors import ConfigurationError
from velostream.sql.connectors import ConnectorCatalog, ConnectorOptions, OptionCheck
from velostream.sql.duration import parse_duration_ms

__all__ = [
    "bool_property",
    "choice_property",
    "connector_catalog",
    "create_sink",
    "create_source",
    "duration_property",
    "register_sink",
    "register_source",
    "sink_types",
    "source_class",
    "source_types",
]

_SOURCES: dict[str, str] = {
    "file_source": "velostream.datasource.file.source:FileSource",
    "kafka_source": "velostream.datasource.kafka.source:KafkaSource",
    "memory_source": "velostream.datasource.memory:MemorySource",
}
_SINKS: dict[str, str] = {
    "file_sink": "velostream.datasource.file.sink:FileSink",
    "kafka_sink": "velostream.datasource.kafka.sink:KafkaSink",
    "stdout_sink": "velostream.datasource.stdout:StdoutSink",
    "memory_sink": "velostream.datasource.memory:MemorySink",
}
# Each built-in type's check of its WITH keys, run at validation. Memory connectors
# take no keys worth checking.
_SOURCE_OPTIONS: dict[str, str] = {
    "file_source": "velostream.datasource.file.options:check_file_source",
    "kafka_source": "velostream.datasource.kafka.options:check_kafka_source",
}
_SINK_OPTIONS: dict[str, str] = {
    "file_sink": "velostream.datasource.file.options:check_file_sink",
    "kafka_sink": "velostream.datasource.kafka.options:check_kafka_sink",
    "stdout_sink": "velostream.datasource.stdout:check_stdout_sink",
}
# Optional dependencies a connector module may need, and how to install them.
_INSTALL_HINTS: dict[str, str] = {"confluent_kafka": "pip install 'velostream[kafka]'"}

_extra_sources: dict[str, SourceClass] = {}
_extra_sinks: dict[str, SinkClass] = {}
_extra_source_options: dict[str, OptionCheck] = {}
_extra_sink_options: dict[str, OptionCheck] = {}

SourceClass: TypeAlias = type[Source]
SinkClass: TypeAlias = type[Sink]
SourceT = TypeVar("SourceT", bound=SourceClass)
SinkT = TypeVar("SinkT", bound=SinkClass)


def register_source(
    type_name: str, *, options: OptionCheck | None = None
) -> Callable[[SourceT], SourceT]:
    """Class decorator: make `type_name` create this source (overrides a built-in).

    `options` checks the source's WITH keys at validation; without it an overridden
    built-in keeps its check and a new type's keys are taken as given.
    """

    def decorate(cls: SourceT) -> SourceT:
        _extra_sources[_normalise(type_name)] = cls
        if options is not None:
            _extra_source_options[_normalise(type_name)] = options
        return cls

    return decorate


def register_sink(
    type_name: str, *, options: OptionCheck | None = None
) -> Callable[[SinkT], SinkT]:
    """Class decorator: make `type_name` create this sink (overrides a built-in).

    `options` checks the sink's WITH keys at validation; without it an overridden
    built-in keeps its check and a new type's keys are taken as given.
    """

    def decorate(cls: SinkT) -> SinkT:
        _extra_sinks[_normalise(type_name)] = cls
        if options is not None:
            _extra_sink_options[_normalise(type_name)] = options
        return cls

    return decorate


def source_types() -> list[str]:
    """Every known source type, sorted."""
    return sorted(set(_SOURCES) | set(_extra_sources))


def sink_types() -> list[str]:
    """Every known sink type, sorted."""
    return sorted(set(_SINKS) | set(_extra_sinks))


def connector_catalog() -> ConnectorCatalog:
    """The types as they are registered now, for SQL validation.

    Built-in types come first, in the order of `_SOURCES` / `_SINKS` (the order
    validation messages have always listed them in), then registered ones.
    """
    return ConnectorCatalog(
        sources=_checks(_SOURCES, _extra_sources, _SOURCE_OPTIONS, _extra_source_options),
        sinks=_checks(_SINKS, _extra_sinks, _SINK_OPTIONS, _extra_sink_options),
    )


def _checks(
    builtin: Mapping[str, str],
    extra: Mapping[str, type],
    builtin_options: Mapping[str, str],
    extra_options: Mapping[str, OptionCheck],
) -> dict[str, OptionCheck | None]:
    checks: dict[str, OptionCheck | None] = {}
    for type_name in [*builtin, *(t for t in extra if t not in builtin)]:
        target = builtin_options.get(type_name)
        checks[type_name] = extra_options.get(type_name) or (
            None if target is None else _deferred_check(target)
        )
    return checks


def _deferred_check(target: str) -> OptionCheck:
    """The check at ``"module:function"``, imported when a connector of its type is checked."""

    def check(options: ConnectorOptions) -> None:
        module_name, _, attr = target.partition(":")
        getattr(importlib.import_module(module_name), attr)(options)

    return check


def source_class(name: str, type: str) -> SourceClass:
    """The class of the source called `name` of `type`; an unknown type names the valid ones."""
    key = _normalise(type)
    cls: SourceClass | None = _extra_sources.get(key)
    if cls is None:
        target = _SOURCES.get(key)
        if target is None:
            raise ConfigurationError(
                f"source '{name}': unknown type '{type}'; valid types: {', '.join(source_types())}",
                source=name,
            )
        cls = _resolve(target, key, name, Source)
    return cls


def create_source(name: str, type: str, properties: Mapping[str, str]) -> Source:
    """Build the source called `name`; an unknown type names the valid ones."""
    return source_class(name, type)(name, properties)


def create_sink(name: str, type: str, properties: Mapping[str, str]) -> Sink:
    """Build the sink called `name`; an unknown type names the valid ones."""
    key = _normalise(type)
    cls: SinkClass | None = _extra_sinks.get(key)
    if cls is None:
        target = _SINKS.get(key)
        if target is None:
            raise ConfigurationError(
                f"sink '{name}': unknown type '{type}'; valid types: {', '.join(sink_types())}",
                source=name,
            )
        cls = _resolve(target, key, name, Sink)
    return cls(name, properties)


def _resolve(target: str, type_name: str, name: str, base: type) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        hint = _INSTALL_HINTS.get(missing.split(".")[0], f"install the '{missing}' package")
        raise ConfigurationError(
            f"'{name}': type '{type_name}' needs '{missing}', which is not installed ({hint})",
            source=name,
        ) from exc
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigurationError(f"'{name}': {target} is not a {base.__name__}", source=name)
    return cls


def _normalise(type_name: str) -> str:
    return type_name.strip().lower()


# -- property helpers shared by every connector -------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def bool_property(props: Mapping[str, str], key: str, default: bool, *, name: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off); anything else is a ConfigurationError."""
    raw = props.get(key)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"'{name}': '{key}' must be true or false, not '{raw}'", source=name)


def duration_property(props: Mapping[str, str], key: str, default: float, *, name: str) -> float:
    """A duration in seconds from `500ms`, `1s`, `2m`, `1h`, `1d`; a bare number is ms."""
    raw = props.get(key)
    if raw is None:
        return default
    try:
        return parse_duration_ms(str(raw)) / 1000
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"'{name}': '{key}' must be a duration such as 500ms, 1s or 2m, not '{raw}'",
            source=name,
        ) from exc


def choice_property(
    props: Mapping[str, str],
    key: str,
    choices: Mapping[str, str],
    default: str,
    *,
    name: str,
) -> str:
    """One of `choices` (alias -> canonical value); an unknown value names the valid ones."""
    raw = props.get(key)
    if raw is None:
        return default
    value = choices.get(str(raw).strip().lower())
    if value is None:
        raise ConfigurationError(
            f"'{name}': unknown {key} '{raw}'; valid values: {', '.join(sorted(choices))}",
            source=name,
        )
    return value
