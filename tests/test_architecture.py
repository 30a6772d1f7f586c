"""The one-way layering of ``latbench``: no package imports a package above it.

The order is written once, in the ``layers`` block of ``docs/ARCHITECTURE.md``; this test
reads it from there. Every import counts: top-level, inside functions, relative, and
``TYPE_CHECKING`` blocks alike.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "latbench"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def read_layers(doc: Path = ARCHITECTURE) -> list[set[str]]:
    """The ``layers`` fenced block: one line per layer, bottom first; names on a line are
    siblings (neither may import the other)."""
    m = re.search(r"```layers\n(.*?)```", doc.read_text(), flags=re.S)
    assert m, f"{doc} has no ```layers block"
    return [set(line.split()) for line in m.group(1).splitlines() if line.strip()]


def _unit(module: str) -> str:
    """``latbench.devices.adb.runners`` → ``devices``; ``latbench`` → ``latbench``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_units(package: Path) -> set[str]:
    """The subpackages and top-level modules of ``package``."""
    units = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return units | {p.stem for p in package.glob("*.py") if p.stem != "__init__"}


def import_edges(package: Path) -> list[tuple[str, str, str]]:
    """``(from_unit, to_unit, "file:line")`` for every import of another latbench unit."""
    units = package_units(package)
    edges = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        module = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_init else parts[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
                if targets == ["latbench"]:  # ``from latbench import exceptions``
                    targets = [f"latbench.{a.name}" if a.name in units else "latbench"
                               for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != "latbench":
                    continue
                src, dst = _unit(module), _unit(target)
                if src != dst:
                    edges.append((src, dst, f"{path.relative_to(package.parent)}:{node.lineno}"))
    return edges


def violations(edges: list[tuple[str, str, str]], layers: list[set[str]]) -> list[str]:
    """Every edge that goes up or sideways, and every unit the layers do not name."""
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    out = []
    for src, dst, where in edges:
        for unit in (src, dst):
            if unit not in level:
                out.append(f"{where}: {unit!r} is not in the layers of docs/ARCHITECTURE.md")
        if src in level and dst in level and level[dst] >= level[src]:
            how = "a sibling" if level[dst] == level[src] else "a layer above"
            out.append(f"{where}: {src} imports {dst}, {how}")
    return out


def test_no_package_imports_a_package_above_it_or_beside_it():
    problems = violations(import_edges(PACKAGE), read_layers())
    assert not problems, "\n".join(problems)


def test_every_package_is_placed_in_the_layers():
    units = package_units(PACKAGE)
    placed = set().union(*read_layers())
    assert units <= placed, f"not in docs/ARCHITECTURE.md's layers: {sorted(units - placed)}"


@pytest.mark.parametrize("code", [
    "from latbench.bench.sweep import run_sweep\n",               # top level
    "def f():\n    from latbench.search import Searcher\n",       # inside a function
    "def f():\n    import latbench.bench.run as r\n",             # plain import, in a function
    "from ..bench import run\n",                                   # relative
    "def f():\n    from latbench.predictor import GBMPredictor\n",  # a sibling
])
def test_an_upward_import_in_a_synthetic_module_is_caught(tmp_path, code):
    tree = tmp_path / "latbench"
    shutil.copytree(PACKAGE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "devices" / "_upward.py").write_text(code)
    problems = violations(import_edges(tree), read_layers())
    assert len(problems) == 1 and "devices/_upward.py:" in problems[0], problems


def test_relative_imports_resolve_to_their_package(tmp_path):
    tree = tmp_path / "latbench"
    (tree / "measure").mkdir(parents=True)
    (tree / "measure" / "__init__.py").write_text("from .spec import X\nfrom .. import exceptions\n")
    (tree / "exceptions.py").write_text("")
    assert import_edges(tree) == [("measure", "exceptions", "latbench/measure/__init__.py:2")]
