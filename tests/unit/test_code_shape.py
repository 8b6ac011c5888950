"""Code shape (issue 12, docs/architecture.md): no function in services/ or libs/ longer than 50
lines or above cyclomatic complexity 15 (radon's measure, McCabe 1976). A function that grows past
either is split into small named steps; this test names every offender."""

from __future__ import annotations

import ast
from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
TREES = ("services", "libs")
MAX_LINES = 50
MAX_COMPLEXITY = 15


def sources() -> list[Path]:
    return sorted(p for tree in TREES for p in (ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)


def long_functions(path: Path) -> list[str]:
    """Functions (and methods, nested ones too) whose `def` line to last line spans over MAX_LINES;
    decorators are not counted, the docstring is."""
    rel = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{rel}:{node.lineno} {node.name}: {lines} lines")
    return found


def complex_functions(path: Path) -> list[str]:
    """Functions and methods above MAX_COMPLEXITY; radon lists methods beside their classes and
    keeps nested functions as closures of their parent, so those are walked too."""
    rel = path.relative_to(ROOT).as_posix()
    found = []
    todo = [block for block in cc_visit(path.read_text()) if not hasattr(block, "methods")]  # not classes
    while todo:
        function = todo.pop()
        todo.extend(function.closures)
        if function.complexity > MAX_COMPLEXITY:
            found.append(f"{rel}:{function.lineno} {function.fullname}: complexity {function.complexity}")
    return found


def test_the_trees_are_there() -> None:
    assert len(sources()) > 50


def test_no_function_is_longer_than_50_lines() -> None:
    offenders = [o for path in sources() for o in long_functions(path)]
    assert not offenders, f"split into named steps (max {MAX_LINES} lines):\n" + "\n".join(offenders)


def test_no_function_is_more_complex_than_15() -> None:
    offenders = [o for path in sources() for o in complex_functions(path)]
    assert not offenders, f"split into named steps (max complexity {MAX_COMPLEXITY}):\n" + "\n".join(offenders)


def test_the_checks_see_an_offender() -> None:
    """The measures themselves: a 60-line function and one with 16 branches are both caught."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(16))
    source = f"def long():\n{body}\n\n\ndef branchy(x):\n{branches}\n    return -1\n"
    tree = ast.parse(source)
    spans = {n.name: n.end_lineno - n.lineno + 1 for n in tree.body if isinstance(n, ast.FunctionDef)}  # type: ignore[operator]
    assert spans["long"] > MAX_LINES
    assert {b.name: b.complexity for b in cc_visit(source)}["branchy"] > MAX_COMPLEXITY
