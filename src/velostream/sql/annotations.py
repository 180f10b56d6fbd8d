"""Annotations: `-- @key: value` comment lines before a statement or the application.

Keys fall in three scopes. `@app`, `@version` and `@description` always describe the
application. `@name` and the `@metric*` family describe one job. `@job_mode`,
`@batch_size`, `@failure_strategy` and `@observability.*` describe a job, or, in the
application's header, are the defaults of every job.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from velostream.errors import SandboxError
from velostream.sql.model import FailureStrategy, JobMode, MetricSpec, Position
from velostream.sql.properties import (
    BOOLEAN_ALIASES,
    FAILURE_STRATEGIES,
    Report,
    invalid_choice,
    parse_choice,
    parse_failure_strategy,
    parse_int,
)
from velostream.sql.sandbox import parse_condition

__all__ = [
    "APP_KEYS",
    "JOB_KEYS",
    "SHARED_KEYS",
    "Annotation",
    "AnnotationSettings",
    "assign_scopes",
    "looks_like_annotation",
    "parse_annotation",
    "resolve_annotations",
]

APP_KEYS = frozenset({"app", "version", "description"})
SHARED_KEYS = frozenset(
    {
        "job_mode",
        "batch_size",
        "failure_strategy",
        "observability.metrics.enabled",
        "observability.error_reporting.enabled",
    }
)
METRIC_KEYS = frozenset(
    {
        "metric_type",
        "metric_help",
        "metric_labels",
        "metric_field",
        "metric_condition",
        "metric_buckets",
    }
)
JOB_KEYS = frozenset({"name", "metric"}) | METRIC_KEYS

JOB_MODES = ("simple", "transactional", "adaptive")
METRIC_TYPES = ("counter", "gauge", "histogram")
_BOOLEANS = ("true", "false")

_ANNOTATION = re.compile(r"^--\s*@([A-Za-z_][A-Za-z0-9_.]*)\s*:(.*)$", re.DOTALL)
_LOOKS_LIKE = re.compile(r"^--\s*@[A-Za-z_]")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: The prefixes of the families the server exports itself (its own, and the client's
#: process and Python collectors): a user metric may not take one of their names.
RESERVED_METRIC_PREFIXES = ("velo_", "process_", "python_")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Annotation:
    """One `-- @key: value` line; `position` is where its `--` starts."""

    key: str
    value: str
    position: Position


def parse_annotation(comment: str) -> tuple[str, str] | None:
    """`(key, value)` of a `--` comment that is an annotation, else None.

    Surrounding quotes of the value are removed: `@metric_help: "Trades seen"`.
    """
    match = _ANNOTATION.match(comment.rstrip())
    if match is None:
        return None
    value = match.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return match.group(1), value


def looks_like_annotation(comment: str) -> bool:
    """True for `-- @something` without the `:` an annotation needs."""
    return _LOOKS_LIKE.match(comment) is not None and parse_annotation(comment) is None


def assign_scopes(
    per_statement: Sequence[Sequence[Annotation]], first_line: int, blank_lines: AbstractSet[int]
) -> tuple[list[Annotation], list[list[Annotation]]]:
    """Split annotations into the application's and each statement's.

    `per_statement[i]` holds the annotation lines between statement i-1 and statement
    i; `first_line` is the line of the first CREATE. Before the first statement, runs
    of annotation lines separated by blank lines form blocks: the first block is the
    application's header when another block follows it, when a blank line separates
    it from the statement, or when it names the application; later blocks belong to
    the job. Wherever they are, `@app`/`@version`/`@description` are the
    application's and `@name`/`@metric*` a job's.
    """
    app: list[Annotation] = []
    jobs: list[list[Annotation]] = []
    for index, preamble in enumerate(per_statement):
        blocks: list[list[Annotation]] = []
        for annotation in preamble:
            if not blocks or _blank_between(blocks[-1][-1], annotation.position.line, blank_lines):
                blocks.append([])
            blocks[-1].append(annotation)
        header = 0
        if index == 0 and blocks:
            attached = not _blank_between(blocks[-1][-1], first_line, blank_lines)
            names_app = any(a.key in APP_KEYS for a in blocks[0])
            header = 1 if len(blocks) > 1 or not attached or names_app else 0
        job: list[Annotation] = []
        for number, block in enumerate(blocks):
            for annotation in block:
                in_header = number < header and annotation.key not in JOB_KEYS
                (app if annotation.key in APP_KEYS or in_header else job).append(annotation)
        jobs.append(job)
    return app, jobs


def _blank_between(annotation: Annotation, line: int, blank_lines: AbstractSet[int]) -> bool:
    return any(n in blank_lines for n in range(annotation.position.line + 1, line))


@dataclass(frozen=True, slots=True)
class AnnotationSettings:
    """What a scope's annotations set; None where they set nothing."""

    app: str | None = None
    version: str | None = None
    description: str | None = None
    name: str | None = None
    job_mode: JobMode | None = None
    batch_size: int | None = None
    failure_strategy: FailureStrategy | None = None
    metrics_enabled: bool | None = None
    metrics: tuple[MetricSpec, ...] = ()
    values: dict[str, str] = field(default_factory=dict)


def resolve_annotations(
    annotations: Sequence[Annotation], *, scope: str, report: Report, warn: Report
) -> AnnotationSettings:
    """Validate one scope's annotations (`scope` is "application" or "job")."""
    values: dict[str, str] = {}
    seen: dict[str, Annotation] = {}
    metric_lines: list[Annotation] = []
    for annotation in annotations:
        key, value, at = annotation.key, annotation.value, annotation.position
        if key == "metric" or key in METRIC_KEYS:
            metric_lines.append(annotation)
            continue
        if key in seen:
            if seen[key].value != value:
                report(
                    at,
                    f"@{key} is given twice with different values "
                    f"('{seen[key].value}' at {seen[key].position}, '{value}' here)",
                )
            continue
        seen[key] = annotation
        values[key] = value
        if key not in APP_KEYS | SHARED_KEYS | JOB_KEYS:
            warn(at, f"unknown annotation @{key} is kept but not used")
    settings = AnnotationSettings(
        app=_name_value(seen.get("app"), "@app", report),
        version=values.get("version"),
        description=values.get("description"),
        name=_name_value(seen.get("name"), "@name", report),
        job_mode=_job_mode(seen.get("job_mode"), report, warn),
        batch_size=_batch_size(seen.get("batch_size"), report),
        failure_strategy=_failure_strategy(seen.get("failure_strategy"), report),
        metrics_enabled=_boolean(seen.get("observability.metrics.enabled"), report),
        metrics=_metrics(metric_lines, report) if scope == "job" else (),
        values=values,
    )
    error_reporting = seen.get("observability.error_reporting.enabled")
    if error_reporting is not None and _boolean(error_reporting, report) is False:
        warn(
            error_reporting.position,
            "@observability.error_reporting.enabled: false is accepted, but error "
            "reporting is always on and cannot be switched off per job",
        )
    return settings


def _name_value(annotation: Annotation | None, what: str, report: Report) -> str | None:
    if annotation is None:
        return None
    if not NAME.match(annotation.value):
        report(
            annotation.position,
            f"{what} '{annotation.value}' is not a valid name: use letters, digits, '_', '.' "
            "and '-', starting with a letter, digit or '_'",
        )
        return None
    return annotation.value


def _job_mode(annotation: Annotation | None, report: Report, warn: Report) -> JobMode | None:
    if annotation is None:
        return None
    choice = parse_choice(annotation.value, JOB_MODES)
    if choice is None:
        report(annotation.position, invalid_choice("@job_mode", annotation.value, JOB_MODES))
        return None
    if choice == "adaptive":
        warn(annotation.position, "@job_mode: adaptive is run as simple")
        return JobMode.SIMPLE
    return JobMode(choice)


def _batch_size(annotation: Annotation | None, report: Report) -> int | None:
    if annotation is None:
        return None
    number = parse_int(annotation.value, 1)
    if number is None:
        report(
            annotation.position, f"@batch_size must be an integer >= 1, found '{annotation.value}'"
        )
    return number


def _failure_strategy(annotation: Annotation | None, report: Report) -> FailureStrategy | None:
    if annotation is None:
        return None
    strategy = parse_failure_strategy(annotation.value)
    if strategy is None:
        report(
            annotation.position,
            invalid_choice("@failure_strategy", annotation.value, FAILURE_STRATEGIES),
        )
    return strategy


def _boolean(annotation: Annotation | None, report: Report) -> bool | None:
    if annotation is None:
        return None
    choice = parse_choice(annotation.value, _BOOLEANS, BOOLEAN_ALIASES)
    if choice is None:
        report(
            annotation.position, invalid_choice(f"@{annotation.key}", annotation.value, _BOOLEANS)
        )
        return None
    return choice == "true"


def _metrics(lines: Sequence[Annotation], report: Report) -> tuple[MetricSpec, ...]:
    groups: list[tuple[Annotation, dict[str, Annotation]]] = []
    for line in lines:
        if line.key == "metric":
            groups.append((line, {}))
        elif not groups:
            report(line.position, f"@{line.key} must follow the @metric it describes")
        elif line.key in groups[-1][1]:
            report(line.position, f"@{line.key} is given twice for metric '{groups[-1][0].value}'")
        else:
            groups[-1][1][line.key] = line
    metrics: list[MetricSpec] = []
    names: set[str] = set()
    for head, fields in groups:
        metric = _metric(head, fields, report)
        if metric is None:
            continue
        if metric.name in names:
            report(head.position, f"metric '{metric.name}' is defined twice in this job")
            continue
        names.add(metric.name)
        metrics.append(metric)
    return tuple(metrics)


def _metric(head: Annotation, fields: dict[str, Annotation], report: Report) -> MetricSpec | None:
    ok = True
    name = head.value
    if not _METRIC_NAME.match(name):
        report(
            head.position,
            f"metric name '{name}' is invalid: it must match [a-zA-Z_:][a-zA-Z0-9_:]*",
        )
        ok = False
    elif name.lower().startswith(RESERVED_METRIC_PREFIXES):
        reserved = ", ".join(f"{p}*" for p in RESERVED_METRIC_PREFIXES)
        report(
            head.position,
            f"metric name '{name}' is reserved: the server's own families are named "
            f"{reserved}; choose another name",
        )
        ok = False
    kind = "counter"
    if "metric_type" in fields:
        choice = parse_choice(fields["metric_type"].value, METRIC_TYPES)
        if choice is None:
            report(
                fields["metric_type"].position,
                invalid_choice("@metric_type", fields["metric_type"].value, METRIC_TYPES),
            )
            ok = False
        else:
            kind = choice
    labels: list[str] = []
    if "metric_labels" in fields:
        at = fields["metric_labels"].position
        for label in (part.strip() for part in fields["metric_labels"].value.split(",")):
            if not label:
                continue
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                report(
                    at,
                    f"metric '{name}': label name '{label}' is invalid: it must match "
                    "[a-zA-Z_][a-zA-Z0-9_]* and not start with '__'",
                )
                ok = False
            elif label in labels:
                report(at, f"metric '{name}': label '{label}' is listed twice")
                ok = False
            else:
                labels.append(label)
    value_field = fields["metric_field"].value.strip() if "metric_field" in fields else None
    if kind in ("gauge", "histogram") and not value_field:
        report(head.position, f"{kind} metric '{name}' needs @metric_field (the value to observe)")
        ok = False
    buckets = _buckets(name, kind, fields.get("metric_buckets"), report)
    if buckets is None:
        ok = False
    condition = fields["metric_condition"].value.strip() if "metric_condition" in fields else None
    if condition:
        try:
            condition = parse_condition(condition)
        except SandboxError as exc:
            report(fields["metric_condition"].position, f"metric '{name}': @metric_condition {exc}")
            ok = False
    if not ok or buckets is None:
        return None
    return MetricSpec(
        name=name,
        type=kind,
        help=fields["metric_help"].value if "metric_help" in fields else "",
        labels=tuple(labels),
        field=value_field or None,
        condition=condition or None,
        buckets=buckets,
    )


def _buckets(
    name: str, kind: str, annotation: Annotation | None, report: Report
) -> tuple[float, ...] | None:
    if annotation is None:
        return ()
    if kind != "histogram":
        report(annotation.position, f"metric '{name}': @metric_buckets only applies to histograms")
        return None
    text = annotation.value.strip().removeprefix("[").removesuffix("]")
    try:
        buckets = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        buckets = ()
    if (
        not buckets
        or not all(math.isfinite(b) for b in buckets)
        or any(a >= b for a, b in itertools.pairwise(buckets))
    ):
        report(
            annotation.position,
            f"metric '{name}': @metric_buckets '{annotation.value}' must be a list of "
            "finite, increasing numbers such as [0.1, 0.5, 1, 5]",
        )
        return None
    return buckets
