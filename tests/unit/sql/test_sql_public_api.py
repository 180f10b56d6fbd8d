"""The package's public surface is exactly what we mean to export."""

from __future__ import annotations

import importlib
import inspect

import pytest

import velostream.sql


def test_every_exported_name_exists() -> None:
    """The names themselves are listed in tests/unit/test_public_api.py."""
    for name in velostream.sql.__all__:
        assert getattr(velostream.sql, name) is not None


def test_the_sql_layer_lists_no_connector_types_of_its_own() -> None:
    """Validation reads the datasource registry's types, handed to it as a catalog."""
    assert not hasattr(velostream.sql, "SOURCE_TYPES")
    assert not hasattr(velostream.sql.properties, "SOURCE_TYPES")


@pytest.mark.parametrize(
    "name",
    [
        "velostream.sql.parser",
        "velostream.sql.scan",
        "velostream.sql.statement",
        "velostream.sql.properties",
        "velostream.sql.config_file",
        "velostream.sql.connectors",
        "velostream.sql.variables",
        "velostream.sql.annotations",
        "velostream.sql.duration",
        "velostream.sql.plan",
        "velostream.sql.plan_aggregate",
        "velostream.sql.plan_row_window",
        "velostream.sql.plan_sql",
        "velostream.sql.planner",
    ],
)
def test_modules_export_their_public_classes_and_functions(name: str) -> None:
    module = importlib.import_module(name)
    defined_here = {
        attr
        for attr, obj in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    assert defined_here <= set(module.__all__)
    assert all(hasattr(module, exported) for exported in module.__all__)


def test_the_planner_re_exports_the_plan_model() -> None:
    """The engine imports the plan model from `planner`; it must be the same objects."""
    from velostream.sql import plan, planner

    for name in plan.__all__:
        assert getattr(planner, name) is getattr(plan, name), name
