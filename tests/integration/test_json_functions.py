"""`JSON_VALUE` and `JSON_QUERY` keep their SQL meaning, through a real `velo-sql run`.

On main, JSON_VALUE returned DuckDB's JSON text (`"buy"` with its quotes), so a port of
the original system's example kept 0 of 60 rows where 31 were expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.server_process import velo_sql

pytestmark = pytest.mark.integration


def test_json_value_is_the_scalar_and_json_query_the_fragment(tmp_path: Path) -> None:
    events = [
        {
            "id": i,
            "payload": json.dumps(
                {"action": "buy" if i % 2 else "sell", "qty": str(i), "meta": {"n": i}}
            ),
        }
        for i in range(60)
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app = tmp_path / "app.sql"
    app.write_text(
        """CREATE STREAM buys AS
SELECT id, CAST(JSON_VALUE(payload, '$.qty') AS INTEGER) AS qty,
       JSON_QUERY(payload, '$.meta') AS meta, JSON_VALUE(payload, '$.meta') AS not_scalar
FROM src WHERE JSON_VALUE(payload, '$.action') IN ('buy')
EMIT CHANGES
WITH ('src.type' = 'file_source', 'src.path' = 'events.jsonl', 'src.format' = 'jsonl',
      'buys.type' = 'file_sink', 'buys.path' = 'buys.jsonl', 'buys.format' = 'jsonl');
"""
    )
    done = velo_sql("run", str(app), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "buys.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 60, 2))
    assert [r["qty"] for r in rows] == list(range(1, 60, 2))
    assert all(json.loads(r["meta"]) == {"n": r["id"]} for r in rows)
    assert all(r["not_scalar"] is None for r in rows)  # an object is not a scalar
