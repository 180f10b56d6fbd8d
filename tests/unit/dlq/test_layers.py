"""The dead-letter package keeps its layer: it imports nothing above it (server, api,
cli), nothing below it imports it, and file-only users never load confluent-kafka."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import velostream

PACKAGE = Path(velostream.__file__).parent
ABOVE_DLQ = ("velostream.server", "velostream.api", "velostream.cli")
BELOW_DLQ = ["errors.py", "fsutil.py", "sql", "datasource", "engine", "observability"]


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _files(*names: str) -> list[Path]:
    paths = [PACKAGE / name for name in names]
    return [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]


@pytest.mark.parametrize("path", _files("dlq"), ids=lambda p: p.name)
def test_no_dlq_module_imports_upward(path: Path) -> None:
    upward = {m for m in _imports(path) if m.startswith(ABOVE_DLQ)}
    assert not upward, f"{path.name} imports {sorted(upward)}"


def test_nothing_below_dlq_imports_it() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in _imports(path) if m.startswith("velostream.dlq")
        )
        for path in _files(*BELOW_DLQ)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_package_does_not_load_confluent_kafka() -> None:
    code = (
        "import sys, velostream.dlq\n"
        "from velostream.dlq import FileDeadLetterQueue, MemoryDeadLetterQueue\n"
        "print('confluent_kafka' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
