"""Statements, SELECT text, PRIMARY KEYs, sources, EMIT and positions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from velostream.datasource.registry import connector_catalog
from velostream.sql import (
    Application,
    ConnectorConfig,
    EmitMode,
    FailureStrategy,
    JobMode,
    JobSpec,
    Position,
    StatementKind,
    parse_application,
)

Parse = Callable[..., Application]
Problems = Callable[..., list[str]]
StatementFactory = Callable[..., str]

EXAMPLE = """\
-- @app: trade_monitor
-- @version: 1.2.0
-- @job_mode: simple
-- @batch_size: 5000

-- @name: big_trades
CREATE STREAM big_trades AS
SELECT id, symbol, price * quantity AS notional,
       CASE WHEN price > 400 THEN 'HIGH' ELSE 'NORMAL' END AS band
FROM trades
WHERE price > 100
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'big_trades.type' = 'file_sink',
    'big_trades.path' = './output/big_trades.csv',
    'big_trades.format' = 'csv',
    'failure_strategy' = 'SendToDLQ'
);

CREATE TABLE symbol_stats AS
SELECT symbol PRIMARY KEY, COUNT(*) AS trades, SUM(quantity) AS volume, AVG(price) AS avg_price
FROM trades
GROUP BY symbol
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'symbol_stats.type' = 'file_sink',
    'symbol_stats.path' = './output/symbol_stats.csv',
    'symbol_stats.format' = 'csv'
);
"""

# Relative paths are taken from the application's folder (here, the working directory).
TRADES = ConnectorConfig(
    "trades", "file_source", {"path": str(Path.cwd() / "data/trades.csv"), "format": "csv"}
)


def _statement_text(number: int) -> str:
    chunk = EXAMPLE.split(";\n")[number - 1]
    return chunk[chunk.index("CREATE") :]


def test_the_complete_example_parses_exactly(parse: Parse) -> None:
    app = parse(EXAMPLE, source_name="trade_monitor.sql")

    big_trades = JobSpec(
        name="big_trades",
        statement_name="big_trades",
        kind=StatementKind.STREAM,
        select_sql=(
            "SELECT id, symbol, price * quantity AS notional,\n"
            "       CASE WHEN price > 400 THEN 'HIGH' ELSE 'NORMAL' END AS band\n"
            "FROM trades\n"
            "WHERE price > 100"
        ),
        emit=EmitMode.CHANGES,
        sources=(TRADES,),
        sinks=(
            ConnectorConfig(
                "big_trades",
                "file_sink",
                {"path": str(Path.cwd() / "output/big_trades.csv"), "format": "csv"},
            ),
        ),
        primary_keys=(),
        job_mode=JobMode.SIMPLE,
        batch_size=5000,
        failure_strategy=FailureStrategy.SEND_TO_DLQ,
        properties={"failure_strategy": "SendToDLQ"},
        annotations={"name": "big_trades"},
        version="1.2.0",
        position=Position(7, 1),
        select_position=Position(8, 1),
        text=_statement_text(1),
    )
    symbol_stats = JobSpec(
        name="symbol_stats",
        statement_name="symbol_stats",
        kind=StatementKind.TABLE,
        select_sql=(
            "SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume, AVG(price) AS avg_price\n"
            "FROM trades\n"
            "GROUP BY symbol"
        ),
        emit=EmitMode.CHANGES,
        sources=(TRADES,),
        sinks=(
            ConnectorConfig(
                "symbol_stats",
                "file_sink",
                {"path": str(Path.cwd() / "output/symbol_stats.csv"), "format": "csv"},
            ),
        ),
        primary_keys=("symbol",),
        job_mode=JobMode.SIMPLE,
        batch_size=5000,
        failure_strategy=FailureStrategy.LOG_AND_CONTINUE,
        version="1.2.0",
        position=Position(23, 1),
        select_position=Position(24, 1),
        text=_statement_text(2),
    )
    assert app == Application(
        name="trade_monitor",
        version="1.2.0",
        jobs=(big_trades, symbol_stats),
        annotations={
            "app": "trade_monitor",
            "version": "1.2.0",
            "job_mode": "simple",
            "batch_size": "5000",
        },
    )


def test_statement_text_is_the_original_from_create_to_semicolon(parse: Parse) -> None:
    app = parse(EXAMPLE)
    assert app.jobs[0].text.startswith("CREATE STREAM big_trades AS\nSELECT id")
    assert app.jobs[0].text.endswith("'failure_strategy' = 'SendToDLQ'\n)")


def test_semicolons_in_strings_and_comments_do_not_split(
    parse: Parse, statement: StatementFactory
) -> None:
    text = (
        "-- a comment; with a semicolon\n"
        + statement("a", select="SELECT 'x;y' AS s, \"odd;name\" FROM src /* ; */ WHERE 1 = 1")
        + statement("b")
    )
    app = parse(text)
    assert [job.name for job in app.jobs] == ["a", "b"]
    comment_blanked = " " * len(" /* ; */ ")
    assert (
        app.jobs[0].select_sql
        == f"SELECT 'x;y' AS s, \"odd;name\" FROM src{comment_blanked}WHERE 1 = 1"
    )


def test_doubled_quotes_inside_strings(parse: Parse, statement: StatementFactory) -> None:
    app = parse(statement(select="SELECT 'it''s; fine' AS s FROM src"))
    assert app.jobs[0].select_sql == "SELECT 'it''s; fine' AS s FROM src"


def test_last_statement_needs_no_semicolon_and_empty_statements_are_skipped(
    parse: Parse, statement: StatementFactory
) -> None:
    text = ";;\n" + statement("a") + ";\n" + statement("b").rstrip(";\n")
    assert [job.name for job in parse(text).jobs] == ["a", "b"]


def test_comments_inside_the_select_are_dropped(parse: Parse, statement: StatementFactory) -> None:
    select = "SELECT a, -- the key\n       b /* second */ FROM src -- input\nWHERE a > 1"
    app = parse(statement(select=select))
    assert app.jobs[0].select_sql == "SELECT a,\n       b              FROM src\nWHERE a > 1"


def test_dialect_extensions_stay_verbatim(parse: Parse, statement: StatementFactory) -> None:
    select = (
        "SELECT symbol, LAG(price) OVER (ROWS WINDOW BUFFER 100 ROWS PARTITION BY symbol "
        "ORDER BY ts) AS prev, COUNT(*) AS n FROM src GROUP BY symbol WINDOW TUMBLING(ts, 1m) "
        "HAVING COUNT(*) > 1 LIMIT 10"
    )
    app = parse(statement(select=select, tail="EMIT FINAL"))
    assert app.jobs[0].select_sql == select
    assert app.jobs[0].emit is EmitMode.FINAL


def test_emit_is_optional_and_may_follow_with(parse: Parse) -> None:
    text = (
        "CREATE STREAM a AS SELECT * FROM src WITH ('src.type'='memory_source', "
        "'a.type'='memory_sink');\n"
        "CREATE STREAM b AS SELECT * FROM src WITH ('src.type'='memory_source', "
        "'b.type'='memory_sink') EMIT FINAL;\n"
    )
    app = parse(text)
    assert [job.emit for job in app.jobs] == [None, EmitMode.FINAL]
    assert app.jobs[1].select_sql == "SELECT * FROM src"


def test_keywords_are_case_insensitive(parse: Parse) -> None:
    text = (
        "create table t as select k primary key, count(*) as n from src group by k "
        "emit changes with ('src.type'='memory_source', 't.type'='memory_sink')"
    )
    job = parse(text).jobs[0]
    assert job.kind is StatementKind.TABLE
    assert job.emit is EmitMode.CHANGES
    assert job.primary_keys == ("k",)
    assert job.select_sql == "select k, count(*) as n from src group by k"


@pytest.mark.parametrize(
    ("items", "keys", "cleaned"),
    [
        ("symbol PRIMARY KEY, COUNT(*) AS n", ("symbol",), "symbol, COUNT(*) AS n"),
        ("t.symbol PRIMARY KEY, COUNT(*) AS n", ("symbol",), "t.symbol, COUNT(*) AS n"),
        ("symbol AS sym PRIMARY KEY, COUNT(*) AS n", ("sym",), "symbol AS sym, COUNT(*) AS n"),
        (
            "UPPER(symbol) AS sym PRIMARY KEY, region PRIMARY  KEY, COUNT(*) AS n",
            ("sym", "region"),
            "UPPER(symbol) AS sym, region, COUNT(*) AS n",
        ),
        ('"Odd Name" PRIMARY KEY, COUNT(*) AS n', ("Odd Name",), '"Odd Name", COUNT(*) AS n'),
        ("DISTINCT symbol PRIMARY KEY", ("symbol",), "DISTINCT symbol"),
    ],
)
def test_primary_key_markers_are_removed_and_recorded(
    parse: Parse,
    statement: StatementFactory,
    items: str,
    keys: tuple[str, ...],
    cleaned: str,
) -> None:
    select = f"SELECT {items} FROM src GROUP BY 1"
    job = parse(statement("t", kind="TABLE", select=select)).jobs[0]
    assert job.primary_keys == keys
    assert job.select_sql == f"SELECT {cleaned} FROM src GROUP BY 1"


def test_sources_come_from_from_and_join_at_any_depth(parse: Parse) -> None:
    text = """\
        CREATE STREAM enriched AS
        SELECT t.id, EXTRACT(YEAR FROM t.ts) AS y, SUBSTRING(t.s FROM 2) AS s,
               t.a IS DISTINCT FROM t.b AS changed
        FROM trades t
        LEFT JOIN "Accounts" a ON t.account = a.id
        JOIN prices AS p ON p.symbol = t.symbol
        WHERE t.symbol IN (SELECT symbol FROM watchlist)
          AND EXISTS (SELECT 1 FROM trades x WHERE x.id = t.id)
        WITH (
            'trades.type' = 'memory_source',
            'accounts.type' = 'memory_source',
            'prices.type' = 'memory_source',
            'watchlist.type' = 'memory_source',
            'enriched.type' = 'memory_sink'
        );
    """
    job = parse(text).jobs[0]
    assert [source.name for source in job.sources] == ["trades", "Accounts", "prices", "watchlist"]
    assert [source.type for source in job.sources] == ["memory_source"] * 4


def test_comma_joined_sources(parse: Parse) -> None:
    text = (
        "CREATE STREAM o AS SELECT * FROM a x, b WHERE x.id = b.id WITH ("
        "'a.type'='memory_source', 'b.type'='memory_source', 'o.type'='memory_sink')"
    )
    assert [s.name for s in parse(text).jobs[0].sources] == ["a", "b"]


def test_positions_are_one_based_and_follow_the_original_text(parse: Parse) -> None:
    text = (
        "\n\n   /* lead */ CREATE STREAM out AS\n"
        "  -- note\n"
        "    SELECT ${COLS} FROM src WITH ('src.type'='memory_source', 'out.type'='memory_sink');"
        "  CREATE STREAM out2 AS SELECT * FROM src WITH ('src.type'='memory_source', "
        "'out2.type'='memory_sink')"
    )
    # not `parse`: its dedent would move the columns
    app = parse_application(text, connectors=connector_catalog(), env={"COLS": "a, b, c, d, e, f"})
    assert app.jobs[0].position == Position(3, 15)
    assert app.jobs[0].select_position == Position(5, 5)
    assert app.jobs[0].select_sql == "SELECT a, b, c, d, e, f FROM src"
    # after a substitution, offsets still map back to the original text
    assert app.jobs[1].position == Position(5, 91)
    assert app.jobs[1].select_position == Position(5, 113)


def test_crlf_line_endings(parse: Parse) -> None:
    text = (
        "-- @app: crlf\r\nCREATE STREAM out AS\r\nSELECT a\r\nFROM src\r\n"
        "WITH ('src.type'='memory_source', 'out.type'='memory_sink');\r\n"
    )
    app = parse(text)
    assert app.name == "crlf"
    assert app.jobs[0].select_sql == "SELECT a\nFROM src"
    assert app.jobs[0].select_position == Position(3, 1)


def test_application_name_defaults_to_the_file_stem(
    parse: Parse, statement: StatementFactory
) -> None:
    assert parse(statement(), source_name="apps/fraud_watch.sql").name == "fraud_watch"
    assert parse(statement()).name == "app"


def test_the_same_source_in_several_jobs_is_configured_per_job(parse: Parse) -> None:
    text = (
        "CREATE STREAM a AS SELECT * FROM src WITH ('src.type'='memory_source', "
        "'a.type'='memory_sink');\n"
        "CREATE STREAM b AS SELECT * FROM src WITH ('src.type'='file_source', "
        "'src.path'='in.jsonl', 'b.type'='stdout_sink')"
    )
    a, b = parse(text).jobs
    assert a.sources[0] == ConnectorConfig("src", "memory_source", {})
    assert b.sources[0] == ConnectorConfig(
        "src", "file_source", {"path": str(Path.cwd() / "in.jsonl"), "format": "jsonl"}
    )
    assert b.sinks[0] == ConnectorConfig("b", "stdout_sink", {"format": "jsonl"})


def test_data_paths_are_not_checked_at_parse_time(
    parse: Parse, statement: StatementFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parse(statement(props="'src.path' = 'missing.csv'"))


def test_an_earlier_statements_file_output_is_read_through_a_pipe(parse: Parse) -> None:
    app = parse(
        """
        CREATE STREAM big AS SELECT id FROM trades EMIT CHANGES
        WITH ('trades.type' = 'file_source', 'trades.path' = 'in.csv',
              'big.type' = 'file_sink', 'big.path' = 'big.jsonl', 'big.format' = 'jsonl');
        CREATE STREAM bigger AS SELECT id FROM big WHERE id > 10 EMIT CHANGES
        WITH ('bigger.type' = 'stdout_sink');
        """
    )
    source = app.jobs[1].sources[0]
    assert source == ConnectorConfig(
        "big",
        "file_source",
        {
            "path": str(Path.cwd() / "big.jsonl"),  # the writer's path, resolved as it is
            "format": "jsonl",
            "watch": "false",
            "pipeline.from": "big",
        },
    )


def test_an_earlier_statements_topic_is_read_with_its_own_group(parse: Parse) -> None:
    app = parse(
        """
        -- @app: shop
        CREATE STREAM big AS SELECT id FROM trades EMIT CHANGES
        WITH ('trades.type' = 'kafka_source', 'trades.bootstrap.servers' = 'k:9092',
              'big.type' = 'kafka_sink', 'big.bootstrap.servers' = 'k:9092',
              'big.topic' = 'big-trades', 'big.acks' = 'all');
        CREATE STREAM bigger AS SELECT id FROM big WHERE id > 10 EMIT CHANGES
        WITH ('bigger.type' = 'stdout_sink');
        """
    )
    source = app.jobs[1].sources[0]
    assert source.type == "kafka_source"
    assert source.properties == {
        "bootstrap.servers": "k:9092",
        "topic": "big-trades",
        "value.format": "json",
        "group.id": "velo-shop-bigger",
        "auto.offset.reset": "earliest",
        "pipeline.from": "big",
    }  # the writer's producer settings (acks) are not the reader's


def test_an_earlier_statement_whose_sink_cannot_be_read_back_is_refused(
    problems: Problems,
) -> None:
    found = problems(
        """
        CREATE STREAM big AS SELECT id FROM trades EMIT CHANGES
        WITH ('trades.type' = 'file_source', 'trades.path' = 'in.csv',
              'big.type' = 'stdout_sink');
        CREATE STREAM bigger AS SELECT id FROM big WHERE id > 10 EMIT CHANGES
        WITH ('bigger.type' = 'stdout_sink');
        """
    )
    assert len(found) == 1
    assert "at 5:40: big is statement big's output, written to a stdout_sink" in found[0]
    assert "give that statement a file_sink or a kafka_sink" in found[0]
