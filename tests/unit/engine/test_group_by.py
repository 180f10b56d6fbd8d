"""`groups.group_by`: Arrow's grouping on Acero's own nodes gives what `Table.group_by`
gives, names and all, without loading `pyarrow.dataset`."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from velostream.engine.groups import group_by

_REQUESTS = [
    ([], "count_all"),
    ("v", "count"),
    ("v", "sum"),
    ("v", "min"),
    ("v", "max"),
    ("v", "count"),  # a name given twice, as FinalAggregates may ask
    ("nan", "any"),
]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", None, "Zürich"]),
            st.integers(-3, 3),
            st.none() | st.floats(allow_nan=True, width=64),
        ),
        max_size=40,
    ),
    picks=st.lists(st.sampled_from(range(len(_REQUESTS))), min_size=1, max_size=5),
    two_keys=st.booleans(),
)
def test_the_same_table_as_table_group_by(
    rows: list[tuple[str | None, int, float | None]], picks: list[int], two_keys: bool
) -> None:
    table = pa.table(
        {
            "k": pa.array([r[0] for r in rows], pa.string()),
            "j": pa.array([r[1] for r in rows], pa.int64()),
            "v": pa.array([r[2] for r in rows], pa.float64()),
            "nan": pa.array([r[2] is not None and r[2] != r[2] for r in rows], pa.bool_()),
        }
    )
    keys = ["k", "j"] if two_keys else ["k"]
    requests = [_REQUESTS[i] for i in picks]
    ours = group_by(table, keys, requests)
    theirs = table.group_by(keys, use_threads=False).aggregate(requests)
    assert ours.schema == theirs.schema
    spelt = [[repr(v) for v in c.to_pylist()] for c in ours.columns]  # NaN is NaN
    assert spelt == [[repr(v) for v in c.to_pylist()] for c in theirs.columns]


def test_grouping_loads_no_dataset_module() -> None:
    probe = (
        "import sys, pyarrow as pa\n"
        "from velostream.engine.groups import group_by\n"
        "t = pa.table({'k': ['a', 'b', 'a'], 'v': [1.0, 2.0, 3.0]})\n"
        "assert group_by(t, ['k'], [('v', 'sum')]).num_rows == 2\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert not {"pyarrow.dataset", "pyarrow.acero", "pyarrow.parquet"} & loaded
