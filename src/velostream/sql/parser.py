"""Parse a SQL application: statements, their SELECT, EMIT, WITH and annotations.

The parser is a scanner, not a SQL grammar: it finds statement boundaries, comments,
strings and the few keywords it owns (`CREATE`, `AS SELECT`, `EMIT`, `WITH`,
`PRIMARY KEY`, `FROM`/`JOIN` sources) and hands the SELECT text on verbatim, so that
dialect extensions such as `WINDOW TUMBLING(1m)` or `OVER (ROWS WINDOW BUFFER ...)`
are left for the planner. Every problem is collected; one `SqlValidationError`
carries them all.

`scan` blanks comments and quoted text, `statement` parses one statement's structure,
`properties` its WITH clause; this module runs those passes over the application and
builds its job specs.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Mapping
from pathlib import Path

from velostream.errors import SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql.annotations import (
    Annotation,
    AnnotationSettings,
    assign_scopes,
    looks_like_annotation,
    parse_annotation,
    resolve_annotations,
)
from velostream.sql.connectors import ConnectorCatalog, build_connector
from velostream.sql.model import (
    Application,
    ConnectorConfig,
    FailureStrategy,
    JobMode,
    JobSpec,
    MetricSpec,
    Position,
    StatementKind,
)
from velostream.sql.pipeline import pipeline_source
from velostream.sql.plan_union import stream_sources
from velostream.sql.properties import (
    Report,
    build_job_settings,
    collect_settings,
    parse_with_clause,
)
from velostream.sql.repartition import with_repartitions
from velostream.sql.scan import scan_text
from velostream.sql.statement import Statement, StatementParser, statement_name
from velostream.sql.variables import substitute_variables

__all__ = ["parse_application"]


def parse_application(
    text: str,
    *,
    connectors: ConnectorCatalog,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source_name: str = "<app>",
    roots: PathRoots | None = None,
) -> Application:
    """Parse and validate an application; raise `SqlValidationError` listing every problem.

    `connectors` lists the source and sink types there are, each with the check of its
    keys (`velostream.datasource.registry.connector_catalog()` gives the registered
    ones); `env` substitutes `${VAR}` / `${VAR:default}` (default: the process environment,
    read at call time); `base_dir` is where its relative paths are taken from
    (`config_file`, connectors' `path`, `dlq.path`; default: the current directory);
    `source_name` names the text in messages; `roots`, if given, confine the
    `config_file`s read (a server's `--allow-path`).
    """
    parser = _ApplicationParser(
        text,
        connectors=connectors,
        env=os.environ if env is None else env,
        base_dir=(Path.cwd() if base_dir is None else base_dir).absolute(),
        source_name=source_name,
        roots=roots,
    )
    return with_repartitions(parser.parse())


class _ApplicationParser:
    """One pass over an application: statements, annotations, jobs, cross-job checks."""

    def __init__(
        self,
        text: str,
        *,
        connectors: ConnectorCatalog,
        env: Mapping[str, str],
        base_dir: Path,
        source_name: str,
        roots: PathRoots | None = None,
    ) -> None:
        self.original = text
        self.roots = roots
        self.connectors = connectors
        self.env = env
        self.base_dir = base_dir
        self.source_name = source_name
        self.problems: list[tuple[Position, str]] = []
        # The in-app tables (sinkless CREATE TABLEs) so far, by lower-case name.
        self.tables: dict[str, JobSpec] = {}
        # The statements with a sink so far (their outputs), by lower-case name.
        self.outputs: dict[str, JobSpec] = {}
        self.warnings: list[tuple[Position, str]] = []
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        skip = scan_text(text).comments
        self.text, self.offsets, self.undefined = substitute_variables(text, env, skip=skip)
        self.scan = scan_text(self.text)

    # positions and messages ------------------------------------------------

    def position(self, offset: int) -> Position:
        original = self.offsets.original(offset)
        line = bisect.bisect_right(self.line_starts, original)
        return Position(line, original - self.line_starts[line - 1] + 1)

    def file_problem(self, at: Position, message: str) -> None:
        self.problems.append((at, f"line {at}: {message}"))

    def file_warning(self, at: Position, message: str) -> None:
        self.warnings.append((at, f"line {at}: {message}"))

    def _prefix(self, statement: Statement, at: Position) -> str:
        return f"statement {statement.number} ({statement.name}) at {at}: "

    def _reporters(self, statement: Statement) -> tuple[Report, Report]:
        def report(at: Position, message: str) -> None:
            self.problems.append((at, self._prefix(statement, at) + message))

        def warn(at: Position, message: str) -> None:
            self.warnings.append((at, self._prefix(statement, at) + message))

        return report, warn

    # the passes ------------------------------------------------------------

    def parse(self) -> Application:
        statements = self._statements()
        if not statements and self.scan.unterminated is None:
            self.file_problem(
                Position(1, 1),
                "empty application: no CREATE STREAM or CREATE TABLE statement found",
            )
        self._report_unterminated(statements)
        app_annotations = self._assign_annotations(statements)
        app = resolve_annotations(
            app_annotations, scope="application", report=self.file_problem, warn=self.file_warning
        )
        app_name = app.app or _default_app_name(self.source_name)
        jobs: list[tuple[Statement, JobSpec]] = []
        for statement in statements:
            job = self._job(statement, app, app_name)
            if job is not None and job.is_table:
                self.tables[job.statement_name.lower()] = job
            elif job is not None:
                jobs.append((statement, job))
                self.outputs[job.statement_name.lower()] = job
        self._check_across_jobs(jobs)
        if self.tables and not jobs and not self.problems:
            self.file_problem(
                Position(1, 1),
                "the application has only in-app tables (CREATE TABLE without a sink): "
                "add a statement that reads them, or give a table a sink in its WITH",
            )
        if self.problems:
            problems = _in_order(self.problems)
            count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            raise SqlValidationError(
                f"{self.source_name}: {count} found:\n" + "\n".join(f"  {p}" for p in problems),
                problems=problems,
            )
        return Application(
            name=app_name,
            version=app.version,
            jobs=tuple(job for _, job in jobs),
            description=app.description,
            annotations=dict(app.values),
            warnings=tuple(_in_order(self.warnings)),
            tables=tuple(self.tables.values()),
        )

    def _statements(self) -> list[Statement]:
        statements: list[Statement] = []
        starts = [0] + [b + 1 for b in self.scan.breaks]
        ends = [*self.scan.breaks, len(self.text)]
        for start, end in zip(starts, ends, strict=True):
            match = re.compile(r"\S").search(self.scan.bare, start, end)
            if match is not None:
                statement = Statement(len(statements) + 1, start, match.start(), end)
                statement.name = statement_name(self.scan.bare, statement) or "?"
                statements.append(statement)
        return statements

    def _report_unterminated(self, statements: list[Statement]) -> None:
        if self.scan.unterminated is None:
            return
        offset, message = self.scan.unterminated
        if statements and statements[-1].create <= offset:
            self._reporters(statements[-1])[0](self.position(offset), message)
        else:
            self.file_problem(self.position(offset), message)

    def _assign_annotations(self, statements: list[Statement]) -> list[Annotation]:
        """Give each statement the annotations before it; return the application's."""
        for start, end in self.scan.line_comments:
            comment, at = self.text[start:end], self.position(start)
            parsed = parse_annotation(comment)
            if parsed is None:
                if looks_like_annotation(comment):
                    self.file_warning(at, f"'{comment.strip()}' is not an annotation: missing ':'")
                continue
            owner = next((s for s in statements if s.start <= start < s.end), None)
            if owner is None or start >= owner.create:
                where = "inside a statement" if owner else "after the last statement"
                self.file_warning(at, f"annotation @{parsed[0]} {where} is ignored")
            else:
                value, _, undefined = substitute_variables(parsed[1], self.env)
                for _, name in undefined:
                    self._reporters(owner)[0](at, f"undefined variable ${{{name}}} in @{parsed[0]}")
                if not undefined:
                    owner.annotations.append(Annotation(parsed[0], value, at))
        blank = {n for n, line in enumerate(self.original.split("\n"), 1) if not line.strip()}
        first_line = self.position(statements[0].create).line if statements else 1
        app, jobs = assign_scopes([s.annotations for s in statements], first_line, blank)
        for statement, job in zip(statements, jobs, strict=True):
            statement.annotations = job
        return app

    # one statement ---------------------------------------------------------

    def _job(self, statement: Statement, app: AnnotationSettings, app_name: str) -> JobSpec | None:
        report, warn = self._reporters(statement)
        for offset, name in self.undefined:
            if statement.start <= offset < statement.end:
                report(
                    self.position(offset),
                    f"undefined variable ${{{name}}}: set it in the environment "
                    f"or give a default as ${{{name}:default}}",
                )
        own = resolve_annotations(statement.annotations, scope="job", report=report, warn=warn)
        unterminated = self.scan.unterminated
        if unterminated is not None and statement.create <= unterminated[0] < statement.end:
            return None
        parts = StatementParser(self.scan, statement, self.position, report).parse()
        if parts is None:
            return None
        properties = []
        if parts.with_span is not None:
            start, end = parts.with_span
            properties = parse_with_clause(self.scan.code[start:end], start, self.position, report)
        job_name = own.name or parts.name
        sink_name = parts.name
        loop = next((s for s in parts.sources if s.lower() == sink_name.lower()), None)
        connectors = parts.sources if loop else [*parts.sources, sink_name]
        with_keys = [p.key for p in properties]
        scoped, job_scope = collect_settings(
            properties,
            connectors,
            base_dir=self.base_dir,
            env=self.env,
            default_at=self.position(statement.create),
            report=report,
            roots=self.roots,
        )
        sources, tables = [], []
        for name in parts.sources:
            if name == loop:
                report(self.position(statement.create), f"statement '{name}' reads its own output")
                continue
            table = self.tables.get(name.lower())
            if table is not None and not _configures(with_keys, name):
                tables.append(table)
                continue
            writer = self.outputs.get(name.lower())
            if writer is not None and not _configures(with_keys, name):
                derived = pipeline_source(
                    name,
                    writer,
                    app=app_name,
                    job=job_name,
                    unbounded=any(_unbounded(s) for s in stream_sources(writer)),
                )
                if isinstance(derived, str):
                    report(self.position(parts.source_offsets[name]), derived)
                else:
                    sources.append(derived)
                continue
            scoped[name].default_at = self.position(parts.source_offsets[name])
            config = build_connector(
                name,
                "source",
                scoped[name],
                catalog=self.connectors,
                app=app_name,
                job=job_name,
                report=report,
                warn=warn,
            )
            if config is not None:
                sources.append(config)
        # A CREATE TABLE whose WITH configures no sink of its name is an in-app table.
        in_app = parts.kind == StatementKind.TABLE and not loop
        in_app = in_app and not _configures(with_keys, sink_name)
        sink = (
            None
            if in_app
            else build_connector(
                sink_name,
                "sink",
                scoped[loop or sink_name],
                catalog=self.connectors,
                app=app_name,
                job=job_name,
                report=report,
                warn=warn,
            )
        )
        stream = sources[0] if sources and parts.sources else None
        if in_app and stream is not None and stream.name == parts.sources[0] and _unbounded(stream):
            report(
                self.position(parts.source_offsets[stream.name]),
                f"in-app table '{sink_name}' reads {stream.name} ({stream.type}) in FROM, which "
                "never ends: an in-app table is computed to the end of its source, so build "
                "it from a file without 'watch' (a topic can be joined as a table instead)",
            )
        if in_app and parts.sources and parts.sources[0].lower() in self.tables:
            report(
                self.position(parts.source_offsets[parts.sources[0]]),
                f"in-app table '{sink_name}' reads in-app table '{parts.sources[0]}' in FROM: "
                "build it from a source (a file), and JOIN the other table",
            )
        settings = build_job_settings(job_scope, report=report, warn=warn)
        return JobSpec(
            name=job_name,
            statement_name=parts.name,
            kind=parts.kind,
            select_sql=parts.select_sql,
            emit=parts.emit,
            sources=tuple(sources),
            sinks=(sink,) if sink is not None else (),
            primary_keys=parts.primary_keys,
            job_mode=own.job_mode or app.job_mode or JobMode.SIMPLE,
            batch_size=settings.batch_size or own.batch_size or app.batch_size,
            failure_strategy=settings.failure_strategy
            or own.failure_strategy
            or app.failure_strategy
            or FailureStrategy.LOG_AND_CONTINUE,
            max_retries=settings.max_retries,
            retry_backoff_ms=settings.retry_backoff_ms,
            properties=settings.properties,
            annotations=dict(own.values),
            metrics=own.metrics,
            version=app.version,
            position=self.position(statement.create),
            select_position=self.position(parts.select_offset),
            text=self._original_text(statement),
            metrics_enabled=_first_bool(own.metrics_enabled, app.metrics_enabled, True),
            event_time_field=settings.event_time_field,
            max_out_of_orderness_ms=settings.max_out_of_orderness_ms,
            late_data_strategy=settings.late_data_strategy,
            memory_limit_bytes=settings.memory_limit_bytes,
            batch_timeout_ms=settings.batch_timeout_ms,
            tables=tuple(tables),
        )

    def _original_text(self, statement: Statement) -> str:
        start = self.offsets.original(statement.create)
        end = self.offsets.original(statement.end)
        return self.original[start:end].strip()

    def _check_across_jobs(self, jobs: list[tuple[Statement, JobSpec]]) -> None:
        seen: dict[str, JobSpec] = {}
        metrics: dict[str, tuple[JobSpec, MetricSpec]] = {}
        for statement, job in jobs:
            report = self._reporters(statement)[0]
            if job.name in seen:
                report(
                    job.position,
                    f"duplicate job name '{job.name}' (already used by the "
                    f"statement at {seen[job.name].position})",
                )
            seen.setdefault(job.name, job)
            for metric in job.metrics:
                other = metrics.setdefault(metric.name, (job, metric))
                if (other[1].type, other[1].labels) != (metric.type, metric.labels):
                    report(
                        job.position,
                        f"metric '{metric.name}' is also defined by job "
                        f"'{other[0].name}' with a different type or labels",
                    )


def _unbounded(connector: ConnectorConfig) -> bool:
    """Whether a source never ends: Kafka, or a watched file."""
    watched = str(connector.properties.get("watch", "false")).strip().lower()
    return connector.type == "kafka_source" or watched in ("true", "1", "yes", "on")


def _configures(keys: list[str], name: str) -> bool:
    """Whether WITH has a `'<name>.*'` key."""
    prefix = f"{name.lower()}."
    return any(key.lower().startswith(prefix) for key in keys)


def _default_app_name(source_name: str) -> str:
    stem = Path(source_name).stem
    return stem if stem and not source_name.startswith("<") else "app"


def _first_bool(*values: bool | None) -> bool:
    return next(value for value in values if value is not None)


def _in_order(messages: list[tuple[Position, str]]) -> list[str]:
    """Messages by position, each on one line (a quoted key may hold a line break)."""
    ordered = sorted(messages, key=lambda item: (item[0].line, item[0].column))
    return [message.replace("\n", "\\n") for _, message in ordered]
