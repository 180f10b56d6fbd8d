"""A bind error only the run meets (validation could not sample the source's columns)
is reported once, in the user's names: never `__rn`, never a raw "Binder Error"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ManagerFactory
from velostream.datasource.file.sink import FileSink
from velostream.datasource.file.source import FileSource
from velostream.datasource.registry import connector_catalog
from velostream.errors import QueryExecutionError
from velostream.server.processors.processor import JobProcessor
from velostream.sql import parse_application


@pytest.mark.parametrize(
    ("select", "said"),
    [
        ("SELECT id, prce FROM src", "unknown column prce (did you mean price?): the input has"),
        (
            "SELECT symbl AS s, COUNT(*) AS n FROM src GROUP BY symbl",
            "unknown column symbl (did you mean symbol?)",
        ),
    ],
)
def test_a_run_time_bind_error_is_in_our_words_and_recorded_once(
    tmp_path: Path, make_manager: ManagerFactory, select: str, said: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,symbol,price\n" + "".join(f"{i},S{i},{i}.5\n" for i in range(50)))
    # parse_application plans but does not bind (check_application does): what a
    # source validation cannot sample (Kafka JSON) leaves the run to meet.
    app = parse_application(
        f"""CREATE STREAM out AS {select} EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{source}',
      'out.type' = 'file_sink', 'out.path' = '{tmp_path / "out.csv"}');
""",
        connectors=connector_catalog(),
        base_dir=tmp_path,
        source_name="app.sql",
    )
    job = app.jobs[0]
    manager = make_manager()
    sink = FileSink("out", job.sinks[0].properties)
    src = FileSource("src", job.sources[0].properties)
    with pytest.raises(QueryExecutionError) as raised:
        JobProcessor(job, src, [sink], manager).run()
    assert said in str(raised.value)
    groups = [g.as_dict() for g in manager.require_metrics().catalog.groups(job=job.name)]
    [group] = [g for g in groups if g["stage"] == "process"]
    assert group["count"] == 1 and said in str(group["message"])
    for text in (str(raised.value), str(group["message"])):
        assert "__" not in text and "Binder Error" not in text
