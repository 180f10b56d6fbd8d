"""Modules stay small enough for a newcomer to hold (STYLE.md item 9).

Checked for the packages already split, with no exceptions: `sql` and `datasource`.
The `server` and `engine` packages (and the rest) are added here once they are split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import velostream

MAX_LINES = 600
ROOT = Path(velostream.__file__).parent
CHECKED = ["sql", "datasource"]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", CHECKED)
def test_every_module_is_at_most_600_lines(package: str) -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules(package)
    }
    assert sizes
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
