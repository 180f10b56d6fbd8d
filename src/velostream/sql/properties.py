"""WITH properties: parsing, scoping to connectors, and checking the generic keys.

A statement's `WITH ( 'key' = 'value', ... )` holds connector keys (`'<name>.<key>'`,
where `<name>` is a source of the SELECT or the statement itself, the sink) and
job-wide keys. Validation never stops at the first problem: every check reports
through a callback and carries on, so a user sees all of them at once.

Only what is common to every connector is here: each connector type checks its own
keys (`connectors`), `config_file` loading is in `config_file` and `${VAR}`
substitution in `variables`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from velostream.errors import ConfigurationError
from velostream.fsutil import PathRoots
from velostream.sql.config_file import load_config_file
from velostream.sql.duration import parse_duration_ms
from velostream.sql.model import FailureStrategy, Position
from velostream.sql.size import parse_size_bytes

__all__ = [
    "BOOLEANS",
    "BOOLEAN_ALIASES",
    "DLQ_TYPES",
    "FAILURE_STRATEGIES",
    "LATE_DATA_STRATEGIES",
    "PATH_KEYS",
    "Checker",
    "JobSettings",
    "Property",
    "Report",
    "Settings",
    "build_job_settings",
    "collect_settings",
    "invalid_choice",
    "parse_choice",
    "parse_failure_strategy",
    "parse_int",
    "parse_with_clause",
    "resolve_path",
]

Report = Callable[[Position, str], None]
"""Receives one problem (or warning) and where it is."""

FAILURE_STRATEGIES = tuple(strategy.value for strategy in FailureStrategy)
LATE_DATA_STRATEGIES = ("drop", "dead_letter")
DLQ_TYPES = ("file", "kafka", "memory")
BOOLEANS = ("true", "false")
BOOLEAN_ALIASES = dict.fromkeys(("1", "yes", "on"), "true") | dict.fromkeys(
    ("0", "no", "off"), "false"
)

_JOB_KEYS = frozenset({"failure_strategy", "max_retries", "retry_backoff_ms", "batch.size"}) | {
    "event.time.field",
    "watermark.max_out_of_orderness",
    "late.data.strategy",
    "job.memory.limit",
    "job.batch.timeout",
    "listagg.max.bytes",
    "distinct.ttl",
    "table.reload.interval",
    "join.timeout",
    "state.partitioned",
}
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
            value = value_text.lower() if value_text.lower() in BOOLEANS else value_text
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


class Checker:
    """Validates and normalises `values` in place, reporting each problem at its key.

    A non-empty `label` (such as "source 'trades' (file_source)") starts each message.
    """

    def __init__(
        self, values: dict[str, str], settings: Settings, report: Report, label: str = ""
    ) -> None:
        self.values, self.settings, self.report = values, settings, report
        self.label = label

    def at(self, key: str) -> Position:
        """Where `key` was given (or where its owner is, if it was not)."""
        return self.settings.at(key)

    def problem(self, key: str, message: str) -> None:
        """Report `message` at `key`, after the label."""
        self.report(self.at(key), f"{self.label}: {message}" if self.label else message)

    def choice(
        self,
        key: str,
        valid: Sequence[str],
        default: str | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> str | None:
        """The canonical spelling of `key`'s value among `valid`; `default` fills it in."""
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

    def boolean(self, key: str) -> str | None:
        """`true` or `false`, from any spelling in `BOOLEAN_ALIASES` too."""
        return self.choice(key, BOOLEANS, aliases=BOOLEAN_ALIASES)

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

    def size(self, key: str) -> int | None:
        """Bytes, from '512MB', '1GiB' or a bare number of bytes."""
        if key not in self.values:
            return None
        try:
            return parse_size_bytes(self.values[key])
        except ConfigurationError as exc:
            self.problem(key, f"{key}: {exc}")
            return None


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
    memory_limit_bytes: int | None = None
    batch_timeout_ms: int | None = None


def build_job_settings(settings: Settings, *, report: Report, warn: Report) -> JobSettings:
    """Validate job-wide keys; unknown keys are kept with a warning."""
    values = dict(settings.values)
    check = Checker(values, settings, report)
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
    check.duration("table.reload.interval")  # how often table files are checked
    check.choice("state.partitioned", BOOLEANS, aliases=BOOLEAN_ALIASES)  # sql/partitioning
    # dlq.type kafka without dlq.topic writes to the <job>.dlq topic.
    for key in values:
        if key not in _JOB_KEYS and not key.startswith("dlq."):
            warn(settings.at(key), _unknown_job_key(key))
    if check.size("listagg.max.bytes") == 0:  # read by the engine from the properties
        check.problem("listagg.max.bytes", "listagg.max.bytes must be above zero")
    _positive(check, "distinct.ttl")  # the executor reads it (normalised) from `properties`
    _positive(check, "join.timeout")  # a stream–stream join's (the planner reads it)
    return JobSettings(
        properties=values,
        failure_strategy=FailureStrategy(strategy) if strategy else None,
        max_retries=10 if max_retries is None else max_retries,
        retry_backoff_ms=backoff or 500,
        batch_size=check.integer("batch.size", 1),
        event_time_field=event_time,
        max_out_of_orderness_ms=check.duration("watermark.max_out_of_orderness"),
        late_data_strategy=check.choice("late.data.strategy", LATE_DATA_STRATEGIES) or "drop",
        memory_limit_bytes=check.size("job.memory.limit"),
        batch_timeout_ms=_positive(check, "job.batch.timeout"),
    )


def _positive(check: Checker, key: str) -> int | None:
    """A duration that must be above zero (a limit of nothing would fail every batch)."""
    millis = check.duration(key)
    if millis == 0:
        check.problem(key, f"{key} must be above zero")
        return None
    return millis


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
    roots: PathRoots | None = None,
) -> tuple[dict[str, Settings], Settings]:
    """Split WITH keys into each connector's settings and the job-wide settings.

    A connector's `config_file` is loaded first; its explicit WITH keys override it.
    Relative `config_file`s and `PATH_KEYS` are taken from `base_dir` (`resolve_path`).
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
            loaded = load_config_file(path if path.is_absolute() else base_dir / path, env, roots)
        except ConfigurationError as exc:
            report(at, exc.message)
            continue
        settings.values = {**loaded, **settings.values}
        for key in loaded:
            settings.where.setdefault(key, at)
    for settings in (*scoped.values(), job):
        for key in PATH_KEYS:
            if key in settings.values:
                settings.values[key] = resolve_path(settings.values[key], base_dir)
    return scoped, job


PATH_KEYS = ("path", "dlq.path")
"""The keys whose value is a file (a connector's `path`, a job's `dlq.path`): a relative
one is taken from the application's folder, as `config_file` is."""


def resolve_path(value: str, base_dir: Path) -> str:
    """`value` taken from `base_dir` when relative; absolute, `~` and blank ones as given.

    The one rule for paths in an application: relative to the folder of its file (for
    SQL sent without a file, the folder the deploy names, else the server's working
    directory), never to wherever the process happens to run.
    """
    text = value.strip()
    if not text or "://" in text or Path(text).expanduser().is_absolute():
        return value
    return str(base_dir / text)
