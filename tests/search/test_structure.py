"""The search package stays readable: no function over 80 lines, every module constant explained."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import latbench.search

SEARCH = Path(latbench.search.__file__).parent
MAX_LINES = 80


def long_functions(source: str, name: str = "<source>", limit: int = MAX_LINES) -> list[str]:
    """``file:function (lines)`` of every function (methods and nested ones too) longer than
    ``limit`` lines, counted from its ``def`` (decorators excluded) to its last line, docstring
    included."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{name}:{node.name} ({n} lines)")
    return out


def undocumented_constants(source: str, name: str = "<source>") -> list[str]:
    """Module-level UPPER_CASE assignments without a ``#:`` comment on the line above."""
    lines = source.splitlines()
    out = []
    for node in ast.parse(source, name).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id.lstrip("_").isupper() and t.id != "__all__":
                above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                if not above.startswith("#"):
                    out.append(f"{name}:{t.id}")
    return out


def test_no_function_in_search_is_longer_than_80_lines():
    too_long = [f for p in sorted(SEARCH.glob("*.py"))
                for f in long_functions(p.read_text(), p.name)]
    assert not too_long, f"split these into named parts: {too_long}"


def test_the_length_check_sees_methods_and_nested_functions():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    src = f"class A:\n    def long(self):\n{body}\n\n    def short(self):\n        return 1\n"
    assert long_functions(src) == [f"<source>:long ({MAX_LINES + 1} lines)"]
    nested = "def outer():\n    def inner():\n" + body + "\n    return inner\n"
    assert [f.split(":")[1].split(" ")[0] for f in long_functions(nested)] == ["outer", "inner"]


@pytest.mark.parametrize("module", ["controller.py", "policy.py", "assembly.py", "search.py",
                                    "calibrate.py"])
def test_the_loops_constants_are_named_with_a_sentence(module):
    assert undocumented_constants((SEARCH / module).read_text(), module) == []


def test_the_constant_check_flags_a_bare_constant():
    assert undocumented_constants("#: why\nA = 1\nB = 2\n") == ["<source>:B"]
