"""Check an application against the connector types registered here, and its sources.

`velostream.sql.check.check_application` is handed its connector types because the
SQL layer may not import this one; this is that check with the registry's types, as
`velo-sql validate`, `velo-sql run` and server deploys use it. It is also handed each
source's columns, sampled here (`schema`), so that every job's queries are bound to
them before anything runs: an unknown column, type or function is a validation
problem at its line:column, not a DuckDB error when the job runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from velostream.datasource.registry import connector_catalog, source_class
from velostream.datasource.schema import sample_schema
from velostream.errors import ConfigurationError, SqlValidationError
from velostream.fsutil import PathRoots
from velostream.sql import check
from velostream.sql.bind import SchemaLookup, SourceSchema
from velostream.sql.model import Application, JobMode, JobSpec
from velostream.sql.plan_union import stream_sources

__all__ = ["check_application"]

# The built-in connectors whose `path` is a file the job reads or writes.
_FILE_TYPES = frozenset({"file_source", "file_sink"})


def check_application(
    text: str,
    *,
    base_dir: Path,
    source_name: str,
    env: Mapping[str, str] | None = None,
    roots: PathRoots | None = None,
    notes: Callable[[str], None] | None = None,
) -> Application:
    """The parsed and planned application; `SqlValidationError` lists every problem.

    The types registered at the time of the call are the ones accepted. `base_dir` is
    where relative paths (`path`, `dlq.path`, `config_file`) are taken from: the
    application file's folder. `env` is what
    `${VAR}` resolves from: a server passes only its operator's variables; None is the
    process environment (a local `velo-sql run` or `validate`, trusted like a shell).

    With `roots` (a server's `--allow-path`), every file a job names — file sources and
    sinks, `dlq.path`, `config_file` — must lie under them; each one outside is a problem
    naming the path and the roots; a file outside them is not sampled.

    Each job's queries are bound to its source's columns (see the module docstring);
    where they are not known, `notes` (if given) is told why, once per source.
    """
    app = check.check_application(
        text,
        connectors=connector_catalog(),
        base_dir=base_dir,
        source_name=source_name,
        env=env,
        roots=roots,
        schemas=_sampler(roots, notes),
    )
    problems = list(_mixed_commits(app))
    if roots is not None:
        problems += _outside(app, roots)
    if problems:
        found = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        raise SqlValidationError(f"{source_name}: {found} found", problems=problems)
    return app


def _mixed_commits(app: Application) -> Iterator[str]:
    """Transactional jobs reading several sources whose positions commit differently
    (Kafka offsets in the producer transaction, files in the checkpoint): refused."""
    for job in app.jobs:
        streams = stream_sources(job)
        if job.job_mode != JobMode.TRANSACTIONAL or len(streams) < 2:
            continue
        try:
            kinds = {c.name: source_class(c.name, c.type).transaction_capability for c in streams}
        except ConfigurationError:
            continue  # a type that cannot be loaded fails when the job starts, saying why
        if len(set(kinds.values())) > 1:
            listed = ", ".join(f"{name} ({kind.value})" for name, kind in kinds.items())
            yield (
                f"statement {job.name} at {job.position}: transactional mode needs every source "
                f"of a job to commit its position the same way: {listed}; read Kafka and "
                "files in separate jobs, or use job_mode simple"
            )


def _outside(app: Application, roots: PathRoots) -> Iterator[str]:
    for job in (*app.jobs, *app.tables):
        named = [
            (f"{c.name}.path", c.properties.get("path"))
            for c in (*job.sources, *job.sinks)
            if c.type in _FILE_TYPES
        ]
        named.append(("dlq.path", job.properties.get("dlq.path")))
        for what, path in named:
            if not path:
                continue
            try:
                roots.check(path, f"{what}")
            except ConfigurationError as exc:
                yield f"statement {job.name} at {job.position}: {exc}"


def _sampler(roots: PathRoots | None, notes: Callable[[str], None] | None) -> SchemaLookup:
    """The columns of each job's source, sampled once per source and its settings."""
    seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], SourceSchema | str] = {}
    noted: set[str] = set()

    def lookup(job: JobSpec, source: str) -> SourceSchema | None:
        connector = next((c for c in job.sources if c.name == source), None)
        if connector is None:
            return None
        key = (connector.name, connector.type, tuple(sorted(connector.properties.items())))
        if key not in seen:
            seen[key] = sample_schema(connector, roots=roots)
        found = seen[key]
        if isinstance(found, SourceSchema):
            return found
        if notes is not None and found not in noted:
            noted.add(found)
            notes(found)
        return None

    return lookup
