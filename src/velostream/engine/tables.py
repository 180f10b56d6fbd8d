"""A job's table sides: loaded into its DuckDB before the stream, reloaded on change.

Each table side of a plan (`QueryPlan.tables`) is either a bounded source of the job (a
`file_source` without `watch`, read to its end) or an in-app table (a sinkless `CREATE
TABLE`, whose SELECT runs through the engine over its own source to the end). Its rows
become a DuckDB temporary table of the job's connection (`__table_<name>`), so they
count against the job's memory limit and every batch query joins them in DuckDB.

A table is reloaded when one of its files changes (size or modification time, checked
at most once per `check_interval`). Rows that could not be decoded, or that failed in
an in-app table's query, come back as `BadRecord`s under the table's name, for the
job's failure strategy: never dropped silently. A reload that fails keeps the table
as it was and raises: the job records the error and carries on with the old rows.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from velostream.datasource.registry import create_source
from velostream.datasource.traits import BadRecord, Source
from velostream.errors import SourceError
from velostream.sql.model import ConnectorConfig, JobSpec
from velostream.sql.plan import QueryPlan, TableSide

__all__ = ["TABLE_READ_ROWS", "TableLoad", "TableSides"]

#: Records read per batch while a table side is loaded.
TABLE_READ_ROWS = 100_000
_ARROW = "__table_arrow"

Signature = tuple[tuple[str, int, int], ...]


@dataclass(slots=True)
class TableLoad:
    """One table side loaded: its rows and the records that failed on the way."""

    name: str
    rows: int
    bad: list[BadRecord] = field(default_factory=list)


def _connectors(job: JobSpec) -> list[ConnectorConfig]:
    """Every source a job reads, its in-app tables' sources included."""
    found = list(job.sources)
    for table in job.tables:
        found += _connectors(table)
    return found


#: A Kafka table side's end offsets are asked for at most this often (a broker round trip).
KAFKA_CHECK_SECONDS = 1.0


def _signature(connectors: list[ConnectorConfig]) -> Signature:
    """Size and modification time of every file the connectors read (cheap to take), and
    the end offsets of every Kafka topic they read."""
    out: list[tuple[str, int, int]] = []
    for connector in connectors:
        if connector.type == "kafka_source":
            from velostream.datasource.kafka.table import topic_ends

            source = create_source(connector.name, connector.type, connector.properties)
            topic = str(getattr(source, "topic", connector.name))
            out += [(f"{topic}-{p}", end, 0) for p, end in topic_ends(source)]  # type: ignore[arg-type]
            continue
        if connector.type != "file_source":
            continue
        pattern = os.path.expanduser(str(connector.properties.get("path", "")))
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                out.append((path, -1, -1))
                continue
            out.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def _read(connector: ConnectorConfig) -> tuple[pa.Table | None, list[BadRecord]]:
    """A source table side's rows: a file to its end, a Kafka topic's latest row per key."""
    if connector.type == "kafka_source":
        from velostream.datasource.kafka.table import read_compacted

        source = create_source(connector.name, connector.type, connector.properties)
        return read_compacted(source)  # type: ignore[arg-type]
    return read_to_end(_bounded(connector))


def _bounded(connector: ConnectorConfig) -> Source:
    """The table side's source, read once to its end (never followed)."""
    properties = dict(connector.properties)
    if connector.type == "file_source":
        properties["watch"] = "false"
    return create_source(connector.name, connector.type, properties)


def read_to_end(source: Source) -> tuple[pa.Table | None, list[BadRecord]]:
    """All of a bounded source's rows, and its bad records."""
    tables: list[pa.Table] = []
    bad: list[BadRecord] = []
    source.open()
    try:
        while True:
            batch = source.read_batch(TABLE_READ_ROWS)
            if batch is None:
                break
            bad.extend(batch.bad)
            if batch.table.num_columns:
                tables.append(batch.table)
        # A file of a header and no row is an empty table with the header's columns.
        schema = getattr(source, "schema", None)
    finally:
        source.close()
    if not tables:
        return (schema.empty_table() if isinstance(schema, pa.Schema) else None), bad
    return pa.concat_tables(tables, promote_options="permissive"), bad


class TableSides:
    """Keeps a plan's table sides loaded in a DuckDB connection."""

    def __init__(
        self,
        job: JobSpec,
        plan: QueryPlan,
        con: duckdb.DuckDBPyConnection,
        *,
        check_interval: float = 0.0,
        memory_limit: int | None = None,
    ) -> None:
        self.job, self.con = job, con
        self.sides = list(plan.tables)
        self.check_interval = check_interval
        self.memory_limit = memory_limit
        self._signatures: dict[str, Signature] = {}
        self._kafka_checked: dict[str, float] = {}
        self._checked = 0.0

    def __bool__(self) -> bool:
        return bool(self.sides)

    def _table(self, side: TableSide) -> JobSpec | None:
        return next(
            (t for t in self.job.tables if t.statement_name.lower() == side.name.lower()), None
        )

    def _connector(self, side: TableSide) -> ConnectorConfig:
        table = self._table(side)
        if table is not None:
            return ConnectorConfig(side.name, "in_app_table")
        found = next((c for c in self.job.sources if c.name.lower() == side.name.lower()), None)
        if found is None:
            raise SourceError(f"table {side.name}: no such source", source=side.name)
        return found

    def _watched(self, side: TableSide) -> list[ConnectorConfig]:
        table = self._table(side)
        return _connectors(table) if table is not None else [self._connector(side)]

    def load(self) -> list[TableLoad]:
        """Load every table side (the job starts); SourceError if one cannot be read."""
        self._checked = time.monotonic()
        return [self._load(side) for side in self.sides]

    def refresh(self) -> list[TableLoad]:
        """Reload the table sides whose files changed since they were loaded.

        At most once per `check_interval`; SourceError if a changed table cannot be
        read (the table keeps its rows).
        """
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return []
        self._checked = now
        changed = [
            side
            for side in self.sides
            if self._due(side, now)
            and _signature(self._watched(side)) != self._signatures.get(side.name)
        ]
        return [self._load(side) for side in changed]

    def _due(self, side: TableSide, now: float) -> bool:
        """Whether to check `side` now: a side that reads Kafka once per second at most."""
        if not any(c.type == "kafka_source" for c in self._watched(side)):
            return True
        if now - self._kafka_checked.get(side.name, 0.0) < KAFKA_CHECK_SECONDS:
            return False
        self._kafka_checked[side.name] = now
        return True

    def _load(self, side: TableSide) -> TableLoad:
        signature = _signature(self._watched(side))
        table = self._table(side)
        if table is not None:
            rows, bad = self._compute(table)
        else:
            rows, bad = _read(self._connector(side))
        if rows is None:
            # A file with nothing decodable: no columns to join to. Keep an earlier load.
            raise SourceError(
                f"table {side.name}: no rows to take its columns from", source=side.name
            )
        engine_names = [n for n in rows.column_names if n.startswith("__")]
        if engine_names:
            raise SourceError(
                f"table {side.name}: column {engine_names[0]} starts with __, which names the "
                "engine's own columns (rename it in the file)",
                source=side.name,
            )
        self.con.register(_ARROW, rows)
        try:
            self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{side.relation}" AS FROM {_ARROW}')
        finally:
            self.con.unregister(_ARROW)
        self._signatures[side.name] = signature
        return TableLoad(side.name, rows.num_rows, bad)

    def _compute(self, table: JobSpec) -> tuple[pa.Table | None, list[BadRecord]]:
        """An in-app table's rows: its SELECT run through the engine to its source's end."""
        from velostream.engine import build_executor, sandboxed_connection
        from velostream.sql.planner import plan_job

        plan = plan_job(table)
        con = sandboxed_connection(memory_limit=self.memory_limit)
        try:
            nested = TableSides(table, plan, con, memory_limit=self.memory_limit)
            bad: list[BadRecord] = []
            for load in nested.load():
                bad += load.bad
            executor = build_executor(plan, table, con)
            source = _bounded(table.sources[0])  # an in-app table's stream: a file
            outputs: list[pa.Table] = []
            source.open()
            try:
                while True:
                    batch = source.read_batch(TABLE_READ_ROWS)
                    if batch is None:
                        break
                    bad += batch.bad
                    if not batch.table.num_rows:
                        continue
                    output = executor.process(batch)
                    bad += output.bad + output.late
                    outputs.append(output.table)
            finally:
                source.close()
            final = executor.finish()
            if final is not None:
                outputs.append(final)
            shaped = [o for o in outputs if o.num_columns]
            if not shaped:
                return None, bad
            return pa.concat_tables(shaped, promote_options="permissive"), bad
        finally:
            con.close()
