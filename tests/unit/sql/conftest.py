"""Factories for parser tests: parse text, collect problems, build small statements."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from velostream.datasource.registry import connector_catalog
from velostream.errors import SqlValidationError
from velostream.sql import Application, parse_application

Parse = Callable[..., Application]
Problems = Callable[..., list[str]]
StatementFactory = Callable[..., str]


def _parse(text: str, **kwargs: Any) -> Application:
    kwargs.setdefault("env", {})
    kwargs.setdefault("connectors", connector_catalog())
    return parse_application(textwrap.dedent(text), **kwargs)


@pytest.fixture
def parse() -> Parse:
    """Parse dedented text with an empty environment and the registered connectors."""
    return _parse


@pytest.fixture
def problems() -> Problems:
    """The problems of text that must fail validation."""

    def collect(text: str, **kwargs: Any) -> list[str]:
        with pytest.raises(SqlValidationError) as caught:
            _parse(text, **kwargs)
        assert str(caught.value).count("\n") == len(caught.value.problems)
        return caught.value.problems

    return collect


@pytest.fixture
def statement() -> StatementFactory:
    """A valid one-line statement reading memory source `src` into memory sink `name`."""

    def build(
        name: str = "out",
        *,
        select: str = "SELECT * FROM src",
        tail: str = "",
        props: str = "",
        kind: str = "STREAM",
    ) -> str:
        extra = f", {props}" if props else ""
        return (
            f"CREATE {kind} {name} AS {select} {tail} WITH ("
            f"'src.type' = 'memory_source', '{name}.type' = 'memory_sink'{extra});\n"
        )

    return build
