"""Modules stay small enough for a newcomer to hold (STYLE.md item 9).

Every module of the package, with no exceptions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import velostream

MAX_LINES = 600
ROOT = Path(velostream.__file__).parent
CHECKED = [*sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()), "."]


def _modules(package: str) -> list[Path]:
    if package == ".":  # the package's own top-level modules (errors.py, fsutil.py)
        return sorted(ROOT.glob("*.py"))
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", CHECKED)
def test_every_module_is_at_most_600_lines(package: str) -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules(package)
    }
    assert sizes
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
