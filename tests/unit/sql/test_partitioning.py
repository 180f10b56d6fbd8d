"""'state.partitioned': which jobs may keep their state per partition, and the
repartitioning job added before one whose topic is keyed otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql import Application
from velostream.sql.check import check_application
from velostream.sql.pipeline import PIPE_FROM, REPARTITION_OF

KAFKA = "'bootstrap.servers' = '127.0.0.1:9'"


def _app(select: str, *, source: str = "", job: str = "'state.partitioned' = 'true'") -> str:
    extra = f", {source}" if source else ""
    return f"""-- @app: shop
CREATE TABLE per_symbol AS {select}
WITH ('trades.type' = 'kafka_source', 'trades.topic' = 'trades',
      'trades.bootstrap.servers' = '127.0.0.1:9'{extra},
      'per_symbol.type' = 'kafka_sink', 'per_symbol.topic' = 'out',
      'per_symbol.bootstrap.servers' = '127.0.0.1:9', {job});
"""


COUNT = "SELECT symbol PRIMARY KEY, COUNT(*) AS n FROM trades GROUP BY symbol EMIT CHANGES"


def _check(text: str) -> Application:
    return check_application(
        text, connectors=connector_catalog(), base_dir=Path.cwd(), source_name="app.sql"
    )


def _problems(text: str) -> str:
    with pytest.raises(SqlValidationError) as caught:
        _check(text)
    return " ".join(str(caught.value).split())


def test_a_topic_keyed_by_the_group_by_needs_no_repartitioning() -> None:
    app = _check(_app(COUNT, source="'trades.key.columns' = 'symbol'"))
    [job] = app.jobs
    assert job.sources[0].properties["topic"] == "trades"


def test_a_topic_keyed_otherwise_is_repartitioned_by_the_group_by_columns() -> None:
    app = _check(_app(COUNT))
    writer, reader = app.jobs
    assert writer.name == "per_symbol_repartition"
    [sink] = writer.sinks
    assert sink.type == "kafka_sink"
    assert sink.properties["topic"] == "shop-per_symbol-repartition"
    assert sink.properties["key.columns"] == "symbol"
    assert sink.properties[REPARTITION_OF] == "trades"
    assert writer.sources[0].properties["group.id"] == "velo-shop-per_symbol-repartition"
    assert "state.partitioned" not in writer.properties
    [source] = reader.sources
    assert source.name == "trades"
    assert source.properties["topic"] == "shop-per_symbol-repartition"
    assert source.properties["key.columns"] == "symbol"
    assert source.properties["group.id"] == "velo-shop-per_symbol"
    assert source.properties[PIPE_FROM] == "per_symbol_repartition"
    assert reader.sinks == _check(_app(COUNT)).jobs[1].sinks


def test_a_named_group_names_the_repartition_topic() -> None:
    app = _check(_app(COUNT, source="'trades.group.id' = 'g1'"))
    writer, reader = app.jobs
    assert writer.sinks[0].properties["topic"] == "g1-repartition"
    assert writer.sources[0].properties["group.id"] == "g1-repartition"
    assert reader.sources[0].properties["group.id"] == "g1"


@pytest.mark.parametrize(
    ("select", "source", "said"),
    [
        (
            "SELECT symbol, COUNT(*) AS n, MAX(_offset) AS o FROM trades GROUP BY symbol",
            "",
            "_offset would be the repartition topic's",
        ),
        (
            "SELECT UPPER(symbol) AS s, COUNT(*) AS n FROM trades GROUP BY UPPER(symbol)",
            "",
            "has an expression",
        ),
        ("SELECT COUNT(*) AS n FROM trades", "", "built for GROUP BY queries with a key"),
        (COUNT, "'trades.partitions' = '0,1'", "not chosen 'partitions'"),
    ],
)
def test_what_cannot_be_partitioned_is_refused_naming_why(
    select: str, source: str, said: str
) -> None:
    assert said in _problems(_app(select, source=source))


def test_the_setting_is_a_boolean() -> None:
    problems = _problems(_app(COUNT, job="'state.partitioned' = 'maybe'"))
    assert "unknown state.partitioned 'maybe'" in problems


def test_a_job_not_asking_is_left_alone() -> None:
    [job] = _check(_app(COUNT, job="'state.partitioned' = 'false'")).jobs
    assert job.sources[0].properties["topic"] == "trades"


def test_explain_says_how_keys_reach_the_partitioned_state() -> None:
    from velostream.sql.explain import explain_application

    text = "\n".join(explain_application(_check(_app(COUNT))))
    assert "per_symbol_repartition:\n  reads trades (kafka_source, trades)" in text
    assert "repartitions trades by symbol for the job after it" in text
    assert "state: one store per partition of shop-per_symbol-repartition" in text
    assert "changelog shop-per_symbol-state-changelog" in text
    keyed = "\n".join(
        explain_application(_check(_app(COUNT, source="'trades.key.columns' = 'symbol'")))
    )
    assert "repartitions" not in keyed and "one store per partition of trades" in keyed
