"""WITH properties: `${VAR}` substitution, parsing, config files and validation.

A statement's `WITH ( 'key' = 'value', ... )` holds connector keys (`'<name>.<key>'`,
where `<name>` is a source of the SELECT or the statement itself, the sink) and
job-wide keys. Validation never stops at the first problem: every check reports
through a callback and carries on, so a user sees all of them at once.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from velostream.errors import ConfigurationError
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import ConnectorConfig, FailureStrategy, Position

__all__ = [
    "BOOLEAN_ALIASES",
    "DLQ_TYPES",
    "FAILURE_STRATEGIES",
    "LATE_DATA_STRATEGIES",
    "SINK_TYPES",
    "SOURCE_TYPES",
    "JobSettings",
    "OffsetMap",
    "Property",
    "Report",
    "Settings",
    "build_connector",
    "build_job_settings",
    "collect_settings",
    "invalid_choice",
    "load_config_file",
    "parse_choice",
    "parse_failure_strategy",
    "parse_int",
    "parse_with_clause",
    "substitute_variables",
]

Report = Callable[[Position, str], None]
"""Receives one problem (or warning) and where it is."""

SOURCE_TYPES = ("file_source", "kafka_source", "memory_source")
SINK_TYPES = ("file_sink", "kafka_sink", "stdout_sink", "memory_sink")
FAILURE_STRATEGIES = tuple(strategy.value for strategy in FailureStrategy)
LATE_DATA_STRATEGIES = ("drop", "dead_letter")
DLQ_TYPES = ("file", "kafka", "memory")

_FILE_SOURCE_FORMATS = ("csv", "csv_no_header", "jsonl")
_FILE_SINK_FORMATS = ("csv", "jsonl")
_STDOUT_FORMATS = ("csv", "jsonl", "table")
_KAFKA_VALUE_FORMATS = ("json", "string", "bytes")
_JSONL_ALIASES = {"json": "jsonl", "jsonlines": "jsonl"}
_BOOLEANS = ("true", "false")
BOOLEAN_ALIASES = dict.fromkeys(("1", "yes", "on"), "true") | dict.fromkeys(
    ("0", "no", "off"), "false"
)
_DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}

_KAFKA_ALIASES = {
    "topic.name": "topic",
    "brokers": "bootstrap.servers",
    "value.serializer": "value.format",
}
_FILE_KEYS = frozenset({"path", "format", "delimiter", "has_headers", "watch", "polling_interval"})
_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "file_source": _FILE_KEYS,
    "file_sink": frozenset({"path", "format", "append", "delimiter"}),
    "stdout_sink": frozenset({"format"}),
}
_JOB_KEYS = frozenset({"failure_strategy", "max_retries", "retry_backoff_ms", "batch.size"}) | {
    "event.time.field",
    "watermark.max_out_of_orderness",
    "late.data.strategy",
}

# ---------------------------------------------------------------------------
# ${VAR} substitution


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class OffsetMap:
    """Maps an offset in substituted text back to the original text.

    Each chunk is `(new_start, original_start, copied)`; inside a copied chunk offsets
    move together, a replaced chunk maps wholly to its `${`.
    """

    chunks: tuple[tuple[int, int, bool], ...]
    starts: tuple[int, ...]

    def original(self, offset: int) -> int:
        index = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        new_start, original_start, copied = self.chunks[index]
        return original_start + (offset - new_start) if copied else original_start


def substitute_variables(
    text: str,
    env: Mapping[str, str],
    *,
    skip: Sequence[tuple[int, int]] = (),
) -> tuple[str, OffsetMap, list[tuple[int, str]]]:
    """Replace `${VAR}` / `${VAR:default}` from `env` outside the `skip` spans.

    Returns the new text, its map back to `text`, and `(offset in new text, name)` of
    each variable that is undefined and has no default (left in place).
    """
    pieces: list[str] = []
    chunks: list[tuple[int, int, bool]] = []
    undefined: list[tuple[int, str]] = []
    new_len = 0
    copied_from = 0
    for match in _VARIABLE.finditer(text):
        if any(start <= match.start() < end for start, end in skip):
            continue
        name, default = match.group(1), match.group(2)
        value = env.get(name, default)
        chunks.append((new_len, copied_from, True))
        pieces.append(text[copied_from : match.start()])
        new_len += match.start() - copied_from
        if value is None:
            undefined.append((new_len, name))
            value = match.group(0)
        chunks.append((new_len, match.start(), False))
        pieces.append(value)
        new_len += len(value)
        copied_from = match.end()
    chunks.append((new_len, copied_from, True))
    pieces.append(text[copied_from:])
    starts = tuple(chunk[0] for chunk in chunks)
    return "".join(pieces), OffsetMap(tuple(chunks), starts), undefined


def _substitute_value(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    new_text, _, undefined = substitute_variables(value, env)
    return new_text, [name for _, name in undefined]


# ---------------------------------------------------------------------------
# WITH ( ... )


@dataclass(frozen=True, slots=True)
class Property:
    """One `'key' = 'value'` of a WITH clause; `position` is where its key starts."""

    key: str
    value: str
    position: Position


_WITH_TOKEN = re.compile(
    r"""(?P<string>'(?:[^']|'')*')|(?P<quoted>"(?:[^"]|"")*")|(?P<punct>[=,])|(?P<word>[^\s=,'"]+)"""
)
_BARE_VALUE = re.compile(r"^(?:[+-]?\d+(?:\.\d+)?|true|false)$", re.IGNORECASE)


def parse_with_clause(
    body: str, offset: int, locate: Callable[[int], Position], report: Report
) -> list[Property]:
    """Parse the text between WITH's parentheses (`body` starts at `offset`)."""
    tokens = [
        (m.lastgroup or "", m.group(0), offset + m.start()) for m in _WITH_TOKEN.finditer(body)
    ]
    properties: list[Property] = []
    seen: dict[str, Position] = {}
    index = 0
    while index < len(tokens):
        kind, text, at = tokens[index]
        if kind == "punct" and text == ",":
            index += 1
            continue
        parts = tokens[index : index + 3]
        problem = _property_problem(parts)
        if problem is not None:
            report(locate(at), problem)
            while index < len(tokens) and tokens[index][1] != ",":
                index += 1
            continue
        key = text[1:-1].replace("''", "'")
        value_kind, value_text, _ = parts[2]
        if value_kind == "string":
            value = value_text[1:-1].replace("''", "'")
        else:
            value = value_text.lower() if value_text.lower() in _BOOLEANS else value_text
        if key in seen:
            report(locate(at), f"property '{key}' is given twice (first at {seen[key]})")
        else:
            seen[key] = locate(at)
            properties.append(Property(key, value, locate(at)))
        index += 3
        if index < len(tokens) and tokens[index][1] != ",":
            report(
                locate(tokens[index][2]),
                f"expected ',' or ')' after property '{key}', found {tokens[index][1]!r}",
            )
            while index < len(tokens) and tokens[index][1] != ",":
                index += 1
    return properties


def _property_problem(parts: list[tuple[str, str, int]]) -> str | None:
    kind, text, _ = parts[0]
    if kind != "string":
        return f"property keys must be single-quoted strings such as 'trades.type', found {text!r}"
    if len(parts) < 2 or parts[1][1] != "=":
        return f"expected '=' after property key {text}"
    if len(parts) < 3 or parts[2][1] == ",":
        return f"property {text} has no value"
    value_kind, value_text, _ = parts[2]
    if value_kind == "string" or (value_kind == "word" and _BARE_VALUE.match(value_text)):
        return None
    return (
        f"value of property {text} must be a single-quoted string "
        f"(or a bare number, true or false), found {value_text!r}"
    )


# ---------------------------------------------------------------------------
# config_file YAML


def load_config_file(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Load a connector's keys from YAML, following `extends:`; nested maps flatten.

    Raises `ConfigurationError` naming the file when it is missing, unreadable, not
    YAML, not a mapping, part of an `extends` cycle or uses an undefined variable.
    """
    return _load_config(path, env, ())


def _load_config(path: Path, env: Mapping[str, str], chain: tuple[Path, ...]) -> dict[str, str]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigurationError(f"config file cycle through 'extends': {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"config file {path} not found") from exc
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"config file {path} cannot be read: {exc}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigurationError(f"config file {path} is not valid YAML: {detail}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"config file {path} must hold a mapping of keys to values, "
            f"found a {type(data).__name__}"
        )
    merged: dict[str, str] = {}
    extends = data.pop("extends", None)
    if extends is not None:
        if not isinstance(extends, str) or not extends.strip():
            raise ConfigurationError(f"config file {path}: 'extends' must be a file path")
        parent_text, missing = _substitute_value(extends, env)
        _raise_undefined(path, "extends", missing)
        parent = Path(parent_text).expanduser()
        if not parent.is_absolute():
            parent = path.parent / parent
        merged.update(_load_config(parent, env, (*chain, resolved)))
    for key, raw in _flatten(data, ""):
        value, missing = _substitute_value(raw, env)
        _raise_undefined(path, key, missing)
        merged[key] = value
    return merged


def _raise_undefined(path: Path, key: str, names: list[str]) -> None:
    if names:
        listed = ", ".join(f"${{{name}}}" for name in names)
        raise ConfigurationError(f"config file {path}: undefined variable {listed} in '{key}'")


def _flatten(data: Mapping[Any, Any], prefix: str) -> Iterable[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, _scalar(value)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_scalar(item) for item in value)
    return str(value)


# ---------------------------------------------------------------------------
# value helpers


_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


def parse_choice(
    value: str, valid: Sequence[str], aliases: Mapping[str, str] | None = None
) -> str | None:
    """The canonical spelling of `value` among `valid` (case-insensitive), or None."""
    wanted = value.strip().lower()
    for choice in valid:
        if choice.lower() == wanted:
            return choice
    return (aliases or {}).get(wanted)


def invalid_choice(what: str, value: str, valid: Sequence[str]) -> str:
    return f"unknown {what} '{value}'; valid values: {', '.join(valid)}"


def parse_failure_strategy(value: str) -> FailureStrategy | None:
    """A failure strategy by its name, in any letter case."""
    choice = parse_choice(value, FAILURE_STRATEGIES)
    return None if choice is None else FailureStrategy(choice)


def parse_int(value: str, minimum: int) -> int | None:
    if not _INTEGER.match(value):
        return None
    number = int(value)
    return number if number >= minimum else None


# ---------------------------------------------------------------------------
# connectors and job-wide keys


@dataclass(slots=True)
class Settings:
    """Resolved keys of one connector (or of the job) and where each came from."""

    values: dict[str, str] = field(default_factory=dict)
    where: dict[str, Position] = field(default_factory=dict)
    default_at: Position = field(default_factory=lambda: Position(1, 1))

    def at(self, key: str) -> Position:
        return self.where.get(key, self.default_at)

    def set(self, key: str, value: str, at: Position) -> None:
        self.values[key] = value
        self.where[key] = at


class _Checker:
    """Validates and normalises `values` in place, reporting each problem once."""

    def __init__(
        self, values: dict[str, str], settings: Settings, report: Report, label: str = ""
    ) -> None:
        self.values, self.settings, self.report = values, settings, report
        self.label = f"{label}: " if label else ""

    def problem(self, key: str, message: str) -> None:
        self.report(self.settings.at(key), self.label + message)

    def choice(
        self,
        key: str,
        valid: Sequence[str],
        default: str | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> str | None:
        if key not in self.values:
            if default is not None:
                self.values[key] = default
            return default
        choice = parse_choice(self.values[key], valid, aliases)
        if choice is None:
            self.problem(key, invalid_choice(key, self.values[key], valid))
        else:
            self.values[key] = choice
        return choice

    def integer(self, key: str, minimum: int) -> int | None:
        if key not in self.values:
            return None
        number = parse_int(self.values[key], minimum)
        if number is None:
            self.problem(key, f"{key} must be an integer >= {minimum}, found '{self.values[key]}'")
        return number

    def duration(self, key: str) -> int | None:
        """Milliseconds; a bare number (ms) gets its unit written out for readers."""
        if key not in self.values:
            return None
        try:
            millis = parse_duration_ms(self.values[key])
        except ConfigurationError:
            self.problem(
                key,
                f"{key} '{self.values[key]}' is not a duration such as '100ms', '5s', '1m' "
                "(units: ms, s, m, h, d)",
            )
            return None
        if _INTEGER.match(self.values[key]):
            self.values[key] = f"{self.values[key].strip()}ms"
        return millis


def build_connector(
    name: str,
    role: Literal["source", "sink"],
    settings: Settings,
    *,
    app: str,
    job: str,
    report: Report,
    warn: Report,
) -> ConnectorConfig | None:
    """Validate one connector's keys; normalise aliases and fill documented defaults."""
    valid_types = SOURCE_TYPES if role == "source" else SINK_TYPES
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
    properties = {key: value for key, value in settings.values.items() if key != "type"}
    check = _Checker(properties, settings, report, f"{role} '{name}' ({kind})")
    if kind in ("file_source", "file_sink"):
        path = properties.get("path", "").strip()
        if not path:
            report(settings.at("type"), f"{check.label[:-2]} needs a path: add '{name}.path'")
        formats = _FILE_SOURCE_FORMATS if kind == "file_source" else _FILE_SINK_FORMATS
        default = "jsonl" if path.endswith((".json", ".jsonl")) else "csv"
        check.choice("format", formats, default, _JSONL_ALIASES)
        for flag in ("has_headers", "watch", "append"):
            check.choice(flag, _BOOLEANS, aliases=BOOLEAN_ALIASES)
        check.duration("polling_interval")
        if "delimiter" in properties:
            delimiter = properties["delimiter"]
            delimiter = properties["delimiter"] = _DELIMITER_NAMES.get(delimiter.lower(), delimiter)
            if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
                check.problem(
                    "delimiter",
                    "delimiter must be one ASCII character other than a quote or a line break "
                    "(or one of: " + ", ".join(_DELIMITER_NAMES) + ")",
                )
    elif kind == "stdout_sink":
        check.choice("format", _STDOUT_FORMATS, "jsonl", _JSONL_ALIASES)
    elif kind in ("kafka_source", "kafka_sink"):
        for alias, canonical in _KAFKA_ALIASES.items():
            if alias in properties:
                value = properties.pop(alias)
                if properties.setdefault(canonical, value) != value:
                    warn(settings.at(alias), f"{check.label}'{canonical}' wins over '{alias}'")
                settings.where.setdefault(canonical, settings.at(alias))
        properties.setdefault("topic", name)
        if kind == "kafka_source":
            properties.setdefault("group.id", f"velo-{app}-{job}")
        check.choice("value.format", _KAFKA_VALUE_FORMATS, "json")
    for key in sorted(set(properties) - _KNOWN_KEYS.get(kind, set(properties))):
        known = ", ".join(sorted(_KNOWN_KEYS[kind]))
        warn(settings.at(key), f"{check.label}unknown key '{key}' is ignored; known keys: {known}")
    return ConnectorConfig(name=name, type=kind, properties=properties)


@dataclass(frozen=True, slots=True)
class JobSettings:
    """The job-wide WITH keys, parsed; `properties` keeps every key (normalised)."""

    properties: dict[str, str]
    failure_strategy: FailureStrategy | None = None
    max_retries: int = 10
    retry_backoff_ms: int = 500
    batch_size: int | None = None
    event_time_field: str | None = None
    max_out_of_orderness_ms: int | None = None
    late_data_strategy: str = "drop"


def build_job_settings(settings: Settings, *, report: Report, warn: Report) -> JobSettings:
    """Validate job-wide keys; unknown keys are kept with a warning."""
    values = dict(settings.values)
    check = _Checker(values, settings, report)
    strategy = check.choice("failure_strategy", FAILURE_STRATEGIES)
    max_retries = check.integer("max_retries", 0)
    backoff = check.integer("retry_backoff_ms", 1)
    event_time = values.get("event.time.field")
    if event_time is not None and not event_time.strip():
        check.problem("event.time.field", "event.time.field must name a column")
        event_time = None
    if "dlq.topic" in values:
        values.setdefault("dlq.type", "kafka")
    check.choice("dlq.type", DLQ_TYPES, aliases={"file_sink": "file", "kafka_sink": "kafka"})
    # dlq.type kafka without dlq.topic writes to the <job>.dlq topic.
    for key in values:
        if key not in _JOB_KEYS and not key.startswith("dlq."):
            warn(settings.at(key), _unknown_job_key(key))
    return JobSettings(
        properties=values,
        failure_strategy=FailureStrategy(strategy) if strategy else None,
        max_retries=10 if max_retries is None else max_retries,
        retry_backoff_ms=backoff or 500,
        batch_size=check.integer("batch.size", 1),
        event_time_field=event_time,
        max_out_of_orderness_ms=check.duration("watermark.max_out_of_orderness"),
        late_data_strategy=check.choice("late.data.strategy", LATE_DATA_STRATEGIES) or "drop",
    )


def _unknown_job_key(key: str) -> str:
    prefix, dot, rest = key.partition(".")
    if dot and rest in ("type", "config_file", "path", "topic", "format"):
        return (
            f"property '{key}' is not used: '{prefix}' is neither a source in FROM/JOIN "
            "nor the statement's name"
        )
    return f"unknown job-wide property '{key}' is kept but not used"


def collect_settings(
    properties: Sequence[Property],
    connectors: Sequence[str],
    *,
    base_dir: Path,
    env: Mapping[str, str],
    default_at: Position,
    report: Report,
) -> tuple[dict[str, Settings], Settings]:
    """Split WITH keys into each connector's settings and the job-wide settings.

    A connector's `config_file` is loaded first; its explicit WITH keys override it.
    """
    by_lower = {name.lower(): name for name in connectors}
    scoped = {name: Settings(default_at=default_at) for name in connectors}
    job = Settings(default_at=default_at)
    for prop in properties:
        prefix, dot, rest = prop.key.partition(".")
        owner = by_lower.get(prefix.lower()) if dot and rest else None
        if owner is None:
            job.set(prop.key, prop.value, prop.position)
        else:
            scoped[owner].set(rest, prop.value, prop.position)
    for settings in scoped.values():
        config_file = settings.values.pop("config_file", None)
        if config_file is None:
            continue
        at = settings.where.pop("config_file")
        path = Path(config_file).expanduser()
        try:
            loaded = load_config_file(path if path.is_absolute() else base_dir / path, env)
        except ConfigurationError as exc:
            report(at, exc.message)
            continue
        settings.values = {**loaded, **settings.values}
        for key in loaded:
            settings.where.setdefault(key, at)
    return scoped, job
