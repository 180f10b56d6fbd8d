"""Validation with binding (`velo-sql validate`) of header functions and new aggregates.

A Kafka topic of strings has known columns without a broker; the planned SQL (header
reads over `_headers`, LISTAGG, the variance family) must bind to them, and a mistake
inside is reported in the user's names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from velostream.datasource.validation import check_application
from velostream.errors import SqlValidationError

KAFKA = (
    "'src.type' = 'kafka_source', 'src.bootstrap.servers' = 'localhost:1', "
    "'src.value.format' = 'string', "
    "'out.type' = 'kafka_sink', 'out.bootstrap.servers' = 'localhost:1', 'out.topic' = 'o'"
)


def _check(select: str, kind: str = "STREAM") -> list[str]:
    text = f"CREATE {kind} out AS\n{select}\nWITH ({KAFKA});\n"
    try:
        check_application(text, base_dir=Path.cwd(), source_name="app.sql")
    except SqlValidationError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    "select",
    [
        "SELECT value, HEADER('t') AS t, HAS_HEADER('t') AS h, HEADER_KEYS() AS k, "
        "SET_HEADER('seen', _offset) AS s FROM src WHERE HAS_HEADER('t')",
        "SELECT HEADER('tenant') AS tenant, LISTAGG(_partition, ';') AS parts, "
        "STRING_AGG(value) AS vs, VARIANCE(_offset) AS v, VAR_POP(_offset) AS vp, "
        "SET_HEADER('n', COUNT(*)) AS n FROM src GROUP BY HEADER('tenant')",
        "SELECT value, STDDEV(_offset) OVER (ROWS WINDOW BUFFER 3 ROWS PARTITION BY "
        "HEADER('t')) AS sd, VAR_POP(_partition) OVER (ROWS WINDOW BUFFER 2 ROWS) AS vp FROM src",
    ],
)
def test_binds(select: str) -> None:
    assert _check(select) == []


def test_a_wrong_column_inside_a_header_item_is_named() -> None:
    (problem,) = _check("SELECT SET_HEADER('k', vlue) AS k FROM src")
    assert "unknown column vlue (did you mean value?)" in problem


def test_a_variance_of_text_over_a_row_window_is_refused() -> None:
    (problem,) = _check("SELECT VAR_POP(value) OVER (ROWS WINDOW BUFFER 2 ROWS) AS v FROM src")
    assert "var_pop" in problem.lower() and "VARCHAR" in problem
