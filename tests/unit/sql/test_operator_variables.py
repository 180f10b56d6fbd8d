"""What a server's jobs may substitute: VELO_VAR_* and --var, never the rest of its environment."""

from __future__ import annotations

import pytest

from velostream.sql.variables import operator_variables


def test_only_prefixed_environment_variables_and_assignments_count() -> None:
    environ = {"SECRET_KEY": "x", "HOME": "/root", "VELO_VAR_TOPIC": "t", "VELO_VAR_A": "env"}
    assert operator_variables(environ) == {"TOPIC": "t", "A": "env"}
    assert operator_variables(environ, ["A=flag", "EMPTY=", "EQ=a=b"]) == {
        "TOPIC": "t",
        "A": "flag",
        "EMPTY": "",
        "EQ": "a=b",
    }


@pytest.mark.parametrize("bad", ["no-equals", "=value", "1X=2", "A B=3", "A-B=4"])
def test_a_malformed_assignment_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        operator_variables({}, [bad])


def test_a_prefixed_variable_with_an_invalid_name_is_ignored() -> None:
    assert operator_variables({"VELO_VAR_": "x", "VELO_VAR_A-B": "y"}) == {}
