"""Parse a SQL application: statements, their SELECT, EMIT, WITH and annotations.

The parser is a scanner, not a SQL grammar: it finds statement boundaries, comments,
strings and the few keywords it owns (`CREATE`, `AS SELECT`, `EMIT`, `WITH`,
`PRIMARY KEY`, `FROM`/`JOIN` sources) and hands the SELECT text on verbatim, so that
dialect extensions such as `WINDOW TUMBLING(1m)` or `OVER (ROWS WINDOW BUFFER ...)`
are left for the planner. Every problem is collected; one `SqlValidationError`
carries them all.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from velostream.errors import SqlValidationError
from velostream.sql.annotations import (
    Annotation,
    AnnotationSettings,
    assign_scopes,
    looks_like_annotation,
    parse_annotation,
    resolve_annotations,
)
from velostream.sql.model import (
    Application,
    EmitMode,
    FailureStrategy,
    JobMode,
    JobSpec,
    MetricSpec,
    Position,
    StatementKind,
)
from velostream.sql.properties import (
    Report,
    build_connector,
    build_job_settings,
    collect_settings,
    parse_with_clause,
    substitute_variables,
)

__all__ = ["parse_application"]

Locate = Callable[[int], "Position"]


def parse_application(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source_name: str = "<app>",
) -> Application:
    """Parse and validate an application; raise `SqlValidationError` listing every problem.

    `env` substitutes `${VAR}` / `${VAR:default}` (default: the process environment,
    read at call time); `base_dir` resolves relative `config_file` paths (default: the
    current directory); `source_name` names the text in messages.
    """
    parser = _ApplicationParser(
        text,
        env=os.environ if env is None else env,
        base_dir=Path.cwd() if base_dir is None else base_dir,
        source_name=source_name,
    )
    return parser.parse()


# ---------------------------------------------------------------------------
# scanning


@dataclass(slots=True)
class _Scan:
    """`code` is the text with comments blanked; `bare` also blanks quoted text.

    Both keep every offset and newline of the text, so positions carry over.
    """

    code: str
    bare: str
    comments: list[tuple[int, int]] = field(default_factory=list)
    line_comments: list[tuple[int, int]] = field(default_factory=list)
    breaks: list[int] = field(default_factory=list)
    unterminated: tuple[int, str] | None = None


def _blank(chars: list[str], start: int, end: int) -> None:
    chars[start:end] = ["\n" if ch == "\n" else " " for ch in chars[start:end]]


def _closing_quote(text: str, start: int) -> int:
    """Offset just past the quote closing the one at `start` (doubled quotes escape)."""
    quote, at = text[start], start + 1
    while True:
        close = text.find(quote, at)
        if close < 0:
            return -1
        if not text.startswith(quote * 2, close):
            return close + 1
        at = close + 2


_SPECIAL = re.compile(r"--|/\*|['\";]")


def _scan(text: str) -> _Scan:
    code, bare = list(text), list(text)
    scan = _Scan("", "")
    at = 0
    while (match := _SPECIAL.search(text, at)) is not None:
        start, token = match.start(), match.group()
        if token == ";":
            scan.breaks.append(start)
            at = start + 1
            continue
        if token in "'\"":
            at = _closing_quote(text, start)
            if at < 0:
                what = "string literal" if token == "'" else "quoted identifier"
                scan.unterminated = (start, f"{what} starting here is never closed with {token}")
                at = len(text) + 1
            _blank(bare, start + 1, at - 1)
            continue
        if token == "--":
            newline = text.find("\n", start)
            at = len(text) if newline < 0 else newline
            scan.line_comments.append((start, at))
        else:
            at = text.find("*/", start + 2) + 2
            if at < 2:
                scan.unterminated = (start, "comment '/*' is never closed with '*/'")
                at = len(text)
        scan.comments.append((start, at))
        _blank(code, start, at)
        _blank(bare, start, at)
    scan.code, scan.bare = "".join(code), "".join(bare)
    return scan


@dataclass(slots=True)
class _Statement:
    number: int
    start: int  # segment start (after the previous ';')
    create: int  # first character of code
    end: int  # the ';' or the end of the text
    annotations: list[Annotation] = field(default_factory=list)
    name: str = "?"


# ---------------------------------------------------------------------------
# one statement's structure


_TOKEN = re.compile(
    r"(?P<word>[^\W\d]\w*)|(?P<quoted>\"[^\"]*\"|'[^']*')|(?P<number>\d[\w.]*)|(?P<punct>\S)"
)
_CLAUSES = frozenset(
    {"WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "ON", "USING", "UNION", "EXCEPT"}
    | {"INTERSECT", "QUALIFY", "LEFT", "RIGHT", "INNER", "FULL", "CROSS", "OUTER", "NATURAL"}
)
_FORMS = (
    "a statement must start with CREATE STREAM <name> AS SELECT ... "
    "or CREATE TABLE <name> AS SELECT ..."
)
_IDENT = r'(?:[^\W\d]\w*|"(?:[^"]|"")+")'
_ALIASED = re.compile(rf"^.*\S\s+AS\s+({_IDENT})$", re.IGNORECASE | re.DOTALL)
_COLUMN = re.compile(rf"^(?:{_IDENT}\s*\.\s*)*({_IDENT})$")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str  # from the code text: quoted tokens keep their content
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


@dataclass(slots=True)
class _Parts:
    kind: StatementKind
    name: str
    select_offset: int
    select_sql: str = ""
    sources: list[str] = field(default_factory=list)
    source_offsets: dict[str, int] = field(default_factory=dict)
    primary_keys: tuple[str, ...] = ()
    emit: EmitMode | None = None
    with_span: tuple[int, int] | None = None


def _tokenize(scan: _Scan, start: int, end: int) -> list[_Token]:
    return [
        _Token(m.lastgroup or "", scan.code[m.start() : m.end()], m.start(), m.end())
        for m in _TOKEN.finditer(scan.bare, start, end)
    ]


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _describe(tokens: list[_Token], index: int) -> str:
    return f"'{tokens[index].text}'" if index < len(tokens) else "the end of the statement"


def _statement_name(bare: str, statement: _Statement) -> str | None:
    match = re.compile(r"CREATE\s+(?:STREAM|TABLE)\s+(?!AS\b)([^\W\d]\w*)", re.I).match(
        bare, statement.create, statement.end
    )
    return match.group(1) if match else None


class _StatementParser:
    """Finds a statement's header, SELECT, sources, PRIMARY KEYs, EMIT and WITH."""

    def __init__(self, scan: _Scan, statement: _Statement, locate: Locate, report: Report) -> None:
        self.scan = scan
        self.tokens = _tokenize(scan, statement.create, statement.end)
        self.end = statement.end
        self.at = locate
        self.report = report

    def problem(self, index: int, message: str) -> None:
        offset = self.tokens[index].start if index < len(self.tokens) else self.end
        self.report(self.at(offset), message)

    def parse(self) -> _Parts | None:
        t = self.tokens
        if t[0].upper != "CREATE":
            self.problem(0, f"{_FORMS}, found {_describe(t, 0)}")
            return None
        if len(t) < 2 or t[1].upper not in ("STREAM", "TABLE"):
            self.problem(1, f"expected STREAM or TABLE after CREATE, found {_describe(t, 1)}")
            return None
        if len(t) < 3 or t[2].kind != "word" or t[2].upper == "AS":
            found = _describe(t, 2)
            self.problem(2, f"expected the statement's name after {t[1].upper}, found {found}")
            return None
        for index, word in ((3, "AS"), (4, "SELECT")):
            if len(t) <= index or t[index].upper != word:
                found = _describe(t, index)
                self.problem(index, f"expected AS SELECT after '{t[2].text}', found {found}")
                return None
        if not self._balanced():
            return None
        parts = _Parts(StatementKind(t[1].upper), t[2].text, t[4].start)
        tail = self._select(parts)
        if tail is None:
            return None
        self._tail(parts, tail)
        return parts

    def _balanced(self) -> bool:
        opened: list[int] = []
        for index, token in enumerate(self.tokens):
            if token.text == "(":
                opened.append(index)
            elif token.text == ")":
                if not opened:
                    self.problem(index, "unbalanced parenthesis: ')' has no matching '('")
                    return False
                opened.pop()
        if opened:
            self.problem(opened[-1], "unbalanced parenthesis: '(' is never closed")
            return False
        return True

    def _select(self, parts: _Parts) -> int | None:
        """Collect sources and PRIMARY KEYs; return the index where EMIT/WITH starts."""
        t = self.tokens
        frames = [[True, False]]  # per parenthesis level: has SELECT, in a FROM list
        removed: list[tuple[int, int]] = []
        keys: list[str] = []
        item_start, top_from = 5, False
        index = 4
        while index < len(t):
            token, frame, upper = t[index], frames[-1], t[index].upper
            top = len(frames) == 1
            if token.text == "(":
                frames.append([False, False])
            elif token.text == ")":
                frames.pop()
            elif top and upper in ("EMIT", "WITH"):
                break
            elif top and upper == "CREATE":
                self.problem(index, "CREATE inside a statement: is a ';' missing before it?")
                return None
            elif upper == "SELECT":
                frame[:] = [True, False]
                if top and index == 4 and index + 1 < len(t) and t[5].upper in ("DISTINCT", "ALL"):
                    item_start = 6
            elif upper in ("FROM", "JOIN") and frame[0] and t[index - 1].upper != "DISTINCT":
                top_from = top_from or top
                self._source(parts, index + 1)
                frame[1] = upper == "FROM"
            elif upper in _CLAUSES:
                frame[1] = False
            elif token.text == "," and frame[0] and frame[1]:
                self._source(parts, index + 1)
            elif token.text == "," and top and not top_from:
                item_start = index + 1
            elif upper == "PRIMARY" and index + 1 < len(t) and t[index + 1].upper == "KEY":
                key = self._primary_key(item_start, index, top and not top_from)
                if key is not None:
                    removed.append((t[index - 1].end, t[index + 1].end))
                    if key in keys:
                        self.problem(index, f"column '{key}' is marked PRIMARY KEY twice")
                    keys.append(key)
                index += 1
            index += 1
        select_end = t[index].start if index < len(t) else self.end
        if not parts.sources:
            self.problem(
                4,
                "the SELECT has no FROM source: a job reads from a source named "
                "in FROM and configured in WITH",
            )
        parts.primary_keys = tuple(keys)
        parts.select_sql = self._select_text(t[4].start, select_end, removed)
        return index

    def _source(self, parts: _Parts, index: int) -> None:
        t = self.tokens
        if (
            index >= len(t)
            or t[index].kind not in ("word", "quoted")
            or t[index].upper in ("SELECT", "LATERAL")
        ):
            return
        if t[index].text.startswith("'"):
            self.problem(
                index,
                f"reading {t[index].text} directly is not supported: name a source in FROM "
                "and configure it in WITH",
            )
            return
        if index + 1 < len(t) and t[index + 1].text == "(":
            self.problem(
                index,
                f"table function {t[index].text}(...) in FROM is not "
                "supported: read from a source named in FROM and configured in WITH",
            )
            return
        if index + 2 < len(t) and t[index + 1].text == ".":
            self.problem(
                index,
                f"qualified name '{t[index].text}.{t[index + 2].text}' is not "
                "supported: name the source with a plain identifier",
            )
            return
        name = _unquote(t[index].text)
        if name.lower() not in {s.lower() for s in parts.sources}:
            parts.sources.append(name)
            parts.source_offsets[name] = t[index].start

    def _primary_key(self, item_start: int, index: int, allowed: bool) -> str | None:
        if not allowed:
            self.problem(
                index,
                "PRIMARY KEY is only allowed after a column of the outer "
                "SELECT list: 'col PRIMARY KEY' or 'expr AS alias PRIMARY KEY'",
            )
            return None
        item = ""
        if item_start < index:
            item = self.scan.code[self.tokens[item_start].start : self.tokens[index].start].strip()
        match = _ALIASED.match(item) or _COLUMN.match(item)
        if match is None:
            self.problem(
                index,
                f"PRIMARY KEY must follow a column name or 'expression AS alias', found {item!r}",
            )
            return None
        return _unquote(match.group(1))

    def _select_text(self, start: int, end: int, removed: list[tuple[int, int]]) -> str:
        pieces, at = [], start
        for cut_start, cut_end in removed:
            pieces.append(self.scan.code[at:cut_start])
            at = cut_end
        pieces.append(self.scan.code[at:end])
        lines = "".join(pieces).split("\n")
        return "\n".join(line.rstrip() for line in lines).strip()

    def _tail(self, parts: _Parts, index: int) -> None:
        t = self.tokens
        while index < len(t):
            upper = t[index].upper
            if upper == "EMIT":
                mode = t[index + 1].upper if index + 1 < len(t) else ""
                if mode not in ("CHANGES", "FINAL"):
                    self.problem(
                        index + 1,
                        "EMIT must be followed by CHANGES or FINAL, "
                        f"found {_describe(t, index + 1)}",
                    )
                elif parts.emit is not None:
                    self.problem(index, "EMIT is given twice")
                else:
                    parts.emit = EmitMode(mode)
                index += 2
            elif upper == "WITH" and index + 1 < len(t) and t[index + 1].text == "(":
                close, depth = index + 1, 0
                for close in range(index + 1, len(t)):
                    depth += {"(": 1, ")": -1}.get(t[close].text, 0)
                    if depth == 0:
                        break
                if parts.with_span is not None:
                    self.problem(index, "WITH ( ... ) is given twice")
                else:
                    parts.with_span = (t[index + 1].end, t[close].start)
                index = close + 1
            else:
                what = (
                    "the WITH must be followed by ( 'key' = 'value', ... )"
                    if upper == "WITH"
                    else "is a ';' missing before it?"
                    if upper == "CREATE"
                    else "only EMIT CHANGES|FINAL and WITH ( ... ) may follow the SELECT"
                )
                self.problem(index, f"unexpected {_describe(t, index)}: {what}")
                index = len(t) if upper == "CREATE" else self._skip_to_clause(index + 1)

    def _skip_to_clause(self, index: int) -> int:
        """The index of the next top-level EMIT or WITH, to resume after a problem."""
        depth = 0
        for at in range(index, len(self.tokens)):
            token = self.tokens[at]
            depth += {"(": 1, ")": -1}.get(token.text, 0)
            if depth == 0 and token.upper in ("EMIT", "WITH"):
                return at
        return len(self.tokens)


# ---------------------------------------------------------------------------
# the application


class _ApplicationParser:
    def __init__(
        self, text: str, *, env: Mapping[str, str], base_dir: Path, source_name: str
    ) -> None:
        self.original = text
        self.env = env
        self.base_dir = base_dir
        self.source_name = source_name
        self.problems: list[tuple[Position, str]] = []
        self.warnings: list[tuple[Position, str]] = []
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        skip = _scan(text).comments
        self.text, self.offsets, self.undefined = substitute_variables(text, env, skip=skip)
        self.scan = _scan(self.text)

    # positions and messages ------------------------------------------------

    def position(self, offset: int) -> Position:
        original = self.offsets.original(offset)
        line = bisect.bisect_right(self.line_starts, original)
        return Position(line, original - self.line_starts[line - 1] + 1)

    def file_problem(self, at: Position, message: str) -> None:
        self.problems.append((at, f"line {at}: {message}"))

    def file_warning(self, at: Position, message: str) -> None:
        self.warnings.append((at, f"line {at}: {message}"))

    def _prefix(self, statement: _Statement, at: Position) -> str:
        return f"statement {statement.number} ({statement.name}) at {at}: "

    def _reporters(self, statement: _Statement) -> tuple[Report, Report]:
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
        jobs: list[tuple[_Statement, JobSpec]] = []
        for statement in statements:
            job = self._job(statement, app, app_name)
            if job is not None:
                jobs.append((statement, job))
        self._check_across_jobs(jobs)
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
        )

    def _statements(self) -> list[_Statement]:
        statements: list[_Statement] = []
        starts = [0] + [b + 1 for b in self.scan.breaks]
        ends = [*self.scan.breaks, len(self.text)]
        for start, end in zip(starts, ends, strict=True):
            match = re.compile(r"\S").search(self.scan.bare, start, end)
            if match is not None:
                statement = _Statement(len(statements) + 1, start, match.start(), end)
                statement.name = _statement_name(self.scan.bare, statement) or "?"
                statements.append(statement)
        return statements

    def _report_unterminated(self, statements: list[_Statement]) -> None:
        if self.scan.unterminated is None:
            return
        offset, message = self.scan.unterminated
        if statements and statements[-1].create <= offset:
            self._reporters(statements[-1])[0](self.position(offset), message)
        else:
            self.file_problem(self.position(offset), message)

    def _assign_annotations(self, statements: list[_Statement]) -> list[Annotation]:
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

    def _job(self, statement: _Statement, app: AnnotationSettings, app_name: str) -> JobSpec | None:
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
        parts = _StatementParser(self.scan, statement, self.position, report).parse()
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
        scoped, job_scope = collect_settings(
            properties,
            connectors,
            base_dir=self.base_dir,
            env=self.env,
            default_at=self.position(statement.create),
            report=report,
        )
        sources = []
        for name in parts.sources:
            if name == loop:
                report(self.position(statement.create), f"statement '{name}' reads its own output")
                continue
            scoped[name].default_at = self.position(parts.source_offsets[name])
            config = build_connector(
                name, "source", scoped[name], app=app_name, job=job_name, report=report, warn=warn
            )
            if config is not None:
                sources.append(config)
        sink = build_connector(
            sink_name,
            "sink",
            scoped[loop or sink_name],
            app=app_name,
            job=job_name,
            report=report,
            warn=warn,
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
        )

    def _original_text(self, statement: _Statement) -> str:
        start = self.offsets.original(statement.create)
        end = self.offsets.original(statement.end)
        return self.original[start:end].strip()

    def _check_across_jobs(self, jobs: list[tuple[_Statement, JobSpec]]) -> None:
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


def _default_app_name(source_name: str) -> str:
    stem = Path(source_name).stem
    return stem if stem and not source_name.startswith("<") else "app"


def _first_bool(*values: bool | None) -> bool:
    return next(value for value in values if value is not None)


def _in_order(messages: list[tuple[Position, str]]) -> list[str]:
    """Messages by position, each on one line (a quoted key may hold a line break)."""
    ordered = sorted(messages, key=lambda item: (item[0].line, item[0].column))
    return [message.replace("\n", "\\n") for _, message in ordered]
