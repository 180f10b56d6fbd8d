"""A source file whose name is not UTF-8, on a real `velo-sql server` (issue 13, bug 12).

The name (`tr\\xffades.csv`, one stray byte) reaches the process surrogate-escaped, the
way listing a folder gives it. Its poison row is recorded, dead-lettered and shown: the
API answers 200 with the name escaped, the dead letter is written with the name's exact
bytes and listed, the logs and the scrape carry the escaped name, nothing fails.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server_process import Launcher, VeloServer, launcher, write_trades
from velostream.dlq import DeadLetter

__all__ = ["launcher"]

pytestmark = pytest.mark.integration

RAW_NAME = b"tr\xffades.csv"
SHOWN_NAME = "tr\\xffades.csv"  # the text every output shows for it
ROWS = 5
POISON_LINE = 1 + ROWS + 1  # header, the good rows, then the poison row


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The test's folder, holding the file whose name is not UTF-8."""
    source = write_trades(tmp_path / "plain.csv", ROWS)
    with open(source, "a", encoding="utf-8") as out:
        out.write("poison,AAPL,1,2024-01-01 00:00:00\n")
    os.rename(source, os.fsdecode(os.fsencode(tmp_path) + b"/" + RAW_NAME))
    return tmp_path


def _app(folder: Path, job: str, strategy: str) -> str:
    # The name cannot be written in the JSON request: a glob finds it.
    return f"""-- @app: {job}_app
-- @failure_strategy: {strategy}
CREATE STREAM {job} AS SELECT id FROM src EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = '{folder}/tr*ades.csv',
      '{job}.type' = 'file_sink', '{job}.path' = '{folder}/{job}.csv');
"""


def _get(server: VeloServer, path: str) -> Any:
    response = server.http.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    return response


def test_a_file_name_that_is_not_utf8_is_recorded_dead_lettered_and_shown(
    launcher: Launcher, folder: Path
) -> None:
    data = folder / "velo-data"
    server = launcher.server(data, args=["--log-format", "json"], allow=[folder])
    server.deploy(_app(folder, "odd", "SendToDLQ"))
    job = server.wait_state("odd", "completed")
    assert (job["records_out"], job["records_failed"], job["dead_letters"]) == (ROWS, 1, 1)
    where = f"{folder}/{SHOWN_NAME}:{POISON_LINE}"

    # GET /errors (and the buffer and the report) answer 200, with the name escaped.
    (group,) = _get(server, "/errors").json()["groups"]
    assert (group["job"], group["stage"], group["last_record_ref"]) == ("odd", "deserialize", where)
    (entry,) = _get(server, "/errors/recent?job=odd").json()["entries"]
    assert "'poison' is not a valid integer" in entry["message"]
    assert "'poison' is not a valid integer" in _get(server, "/errors/report").text

    # The dead letter is written and listed, the name readable and its bytes exact.
    (letter,) = _get(server, "/jobs/odd/dlq").json()["letters"]
    assert letter["position"] == where
    assert letter["payload"] == "poison,AAPL,1,2024-01-01 00:00:00"
    exact = os.fsencode(folder) + b"/" + RAW_NAME + f":{POISON_LINE}".encode()
    assert base64.b64decode(letter["position_base64"]) == exact
    (line,) = (data / "dlq" / "odd.jsonl").read_bytes().splitlines()
    stored = DeadLetter(orjson.loads(line))  # valid UTF-8 JSON
    assert stored.id == letter["id"] and os.fsencode(stored.text("position") or "") == exact

    # Every log line is JSON; the error's line carries the escaped name.
    lines = [orjson.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    assert not [x for x in server.log().splitlines() if "Logging error" in x]
    errors = [x for x in lines if x.get("job") == "odd" and x["level"] == "ERROR"]
    assert [x["record_ref"] for x in errors] == [where]

    # The scrape parses, and its samples name the job.
    families = text_string_to_metric_families(_get(server, "/metrics").text)
    samples = {(s.name, s.labels.get("job")): s.value for f in families for s in f.samples}
    assert samples[("velo_dlq_records_total", "odd")] == 1


def test_a_failure_reason_naming_the_file_is_shown_escaped(
    launcher: Launcher, folder: Path
) -> None:
    server = launcher.server(folder / "velo-data", allow=[folder])
    server.deploy(_app(folder, "strict", "FailBatch"))
    job = server.wait_state("strict", "failed")
    assert f"first at {folder}/{SHOWN_NAME}:{POISON_LINE}" in job["reason"]
    listed = _get(server, "/jobs").json()["jobs"]
    assert [j["reason"] for j in listed] == [job["reason"]]
    report = _get(server, "/errors/report").text
    assert f"{folder}/{SHOWN_NAME}:{POISON_LINE}" in report
    messages = [
        s.labels["message"]
        for f in text_string_to_metric_families(_get(server, "/metrics").text)
        if f.name == "velo_error_message"
        for s in f.samples
    ]
    assert any(SHOWN_NAME in m for m in messages), messages
    assert "Logging error" not in server.log()
