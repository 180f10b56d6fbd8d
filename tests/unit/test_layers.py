"""Imports only point down the layers of DESIGN.md.

errors.py, fsutil.py -> sql/ -> datasource/ -> engine/, observability/ -> dlq/ -> server/
-> api/ -> cli/. Every import counts, including those inside functions and under
TYPE_CHECKING: a lazy import upward is still a dependency upward. engine/ and
observability/ share a layer and import neither each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import velostream

ROOT = Path(velostream.__file__).parent

# Lowest first; one rank per layer (fsutil may raise errors' exceptions).
LAYERS: dict[str, float] = {
    "__init__": 0,
    "errors": 0,
    "fsutil": 0.5,
    "lazy": 0,
    "sql": 1,
    "datasource": 2,
    "engine": 3,
    "observability": 3,
    "dlq": 4,
    "server": 5,
    "api": 6,
    "cli": 7,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "velostream":
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in LAYERS and parts[1].startswith("_")):
        return "__init__"  # the package itself (`from velostream import __version__`)
    return parts[1]


def _imports(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `tree`, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "velostream":  # `from velostream import sql` imports a layer
                found += [(node.lineno, f"velostream.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in the package at `root` that points up, or across to a peer."""
    violations = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        parts = list(relative.parts)
        module = ".".join(parts)
        package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
        if path.name == "__init__.py":
            module = package
        mine = _layer(module if len(parts) > 1 else "velostream.__init__")
        if mine not in LAYERS:
            violations.append(f"{relative}: module outside every layer ({mine})")
            continue
        for line, imported in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            theirs = _layer(imported)
            if theirs is None or theirs == mine:
                continue
            if theirs not in LAYERS or LAYERS[theirs] >= LAYERS[mine]:
                violations.append(f"{relative}.py:{line}: {mine} imports {imported}")
    return violations


def test_no_import_points_up_or_across() -> None:
    assert layer_violations(ROOT) == []


def test_every_package_is_in_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert packages | modules <= set(LAYERS)


@pytest.mark.parametrize(
    ("where", "code", "expected"),
    [
        ("datasource/kafka/dlq.py", "from velostream.server.x import y\n", "datasource imports"),
        ("sql/check.py", "def f():\n    import velostream.datasource.registry\n", "sql imports"),
        ("engine/core.py", "from velostream.observability import metrics\n", "engine imports"),
        ("dlq/file.py", "from ..server import jobs\n", "dlq imports velostream.server"),
        ("errors.py", "from velostream import sql\n", "errors imports velostream.sql"),
    ],
)
def test_the_check_catches_an_import_upward(
    tmp_path: Path, where: str, code: str, expected: str
) -> None:
    root = tmp_path / "velostream"
    target = root / where
    for folder in [root, *(p for p in target.parents if root in p.parents)]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    target.write_text(code, encoding="utf-8")
    (violation,) = layer_violations(root)
    assert expected in violation


def test_the_check_allows_imports_down(tmp_path: Path) -> None:
    root = tmp_path / "velostream"
    (root / "server").mkdir(parents=True)
    (root / "__init__.py").touch()
    (root / "server" / "__init__.py").write_text(
        "from velostream.errors import Stage\nfrom velostream.dlq import x\nfrom . import jobs\n",
        encoding="utf-8",
    )
    assert layer_violations(root) == []
