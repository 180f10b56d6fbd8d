"""Planning `UNION ALL`: one stateless branch per source, or a one-line refusal."""

from __future__ import annotations

import pyarrow as pa
import pytest

from velostream.errors import PlanError
from velostream.sql.model import ConnectorConfig, JobSpec, StatementKind
from velostream.sql.plan_union import check_union_types, union_branches
from velostream.sql.planner import PlanKind, plan_job


def job(sql: str, *sources: str) -> JobSpec:
    return JobSpec(
        name="j",
        statement_name="j",
        kind=StatementKind.STREAM,
        select_sql=sql,
        emit=None,
        sources=tuple(ConnectorConfig(s, "file_source") for s in sources or ("a", "b", "c")),
        sinks=(),
    )


def refused(sql: str) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan_job(job(sql))
    assert "\n" not in str(info.value)
    return info.value


def test_each_branch_is_planned_alone_with_its_own_where_and_projection() -> None:
    plan = plan_job(
        job(
            "SELECT id, price FROM a WHERE price > 1 UNION ALL SELECT id, amount AS price FROM b "
            "UNION ALL (SELECT id, 0.0 AS price FROM c)"
        )
    )
    assert plan.kind == PlanKind.UNION
    assert [b.source for b in plan.branches] == ["a", "b", "c"]
    assert [b.kind for b in plan.branches] == [PlanKind.STATELESS] * 3
    assert plan.branches[0].where_sql == "price > 1"
    assert plan.branches[1].where_sql is None
    assert plan.branches[1].select_sql == ['id AS "id"', 'amount AS "price"']
    assert plan.output_columns == ["id", "price"]


def test_branches_keep_their_offsets_so_errors_point_into_the_users_text() -> None:
    sql = "SELECT id FROM a\nUNION ALL\nSELECT id FROM b WHERE nosuch("
    branches = union_branches(sql)
    assert [len(b) for b in branches] == [len(sql)] * 2
    assert branches[1].strip().startswith("SELECT id FROM b")
    error = refused(sql)
    assert error.offset is not None and error.offset >= sql.index("SELECT id FROM b")


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELECT id FROM a UNION SELECT id FROM b", "UNION (without ALL) is not supported"),
        ("SELECT id FROM a EXCEPT SELECT id FROM b", "EXCEPT is not supported on streams"),
        ("SELECT id FROM a INTERSECT SELECT id FROM b", "INTERSECT is not supported"),
        (
            "SELECT id, COUNT(*) AS n FROM a GROUP BY id UNION ALL SELECT id, 1 AS n FROM b",
            "GROUP BY in a second statement that reads it",
        ),
        (
            "SELECT id, COUNT(*) AS n FROM (SELECT id FROM a UNION ALL SELECT id FROM b) "
            "GROUP BY id",
            "GROUP BY in a second one that reads it",
        ),
        ("SELECT id FROM a UNION ALL SELECT id FROM b LIMIT 3", "LIMIT in UNION ALL branch 2"),
        ("SELECT id FROM a UNION ALL SELECT id FROM a", "branches 1 and 2 both read a"),
        ("SELECT id FROM a UNION ALL SELECT ident FROM b", "branch 2 (FROM b) gives ident"),
        ("SELECT id, x FROM a UNION ALL SELECT id FROM b", "gives id, x; branch 2"),
        ("SELECT id FROM a UNION ALL SELECT id FROM d", "FROM d: not a declared source"),
    ],
)
def test_what_a_union_cannot_honour_is_refused_with_the_nearest_form(sql: str, needle: str) -> None:
    assert needle in str(refused(sql))


def test_a_plain_select_is_not_a_union() -> None:
    assert plan_job(job("SELECT id FROM a WHERE 'UNION ALL' <> id", "a")).kind == PlanKind.STATELESS


def test_branch_types_are_checked_against_the_sources_schemas() -> None:
    plan = plan_job(job("SELECT id, price FROM a UNION ALL SELECT id, amount AS price FROM b"))
    a = pa.schema([("id", pa.int64()), ("price", pa.float64())])
    check_union_types(
        plan, {"a": a, "b": pa.schema([("id", pa.int64()), ("amount", pa.float64())])}
    )
    check_union_types(plan, {"a": a})  # b's types unknown (e.g. Kafka): not judged
    with pytest.raises(PlanError, match="column price is DOUBLE FROM a but VARCHAR FROM b: CAST"):
        check_union_types(
            plan, {"a": a, "b": pa.schema([("id", pa.int64()), ("amount", pa.string())])}
        )


def test_star_branches_are_compared_by_the_columns_they_expand_to() -> None:
    plan = plan_job(job("SELECT * FROM a UNION ALL SELECT * FROM b"))
    a = pa.schema([("id", pa.int64()), ("price", pa.float64())])
    check_union_types(plan, {"a": a, "b": a})
    with pytest.raises(PlanError, match="FROM a gives id, price; FROM b gives id, cost"):
        check_union_types(
            plan, {"a": a, "b": pa.schema([("id", pa.int64()), ("cost", pa.float64())])}
        )
