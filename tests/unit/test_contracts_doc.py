"""docs/contracts.md lists exactly the contract functions of libs/contracts: every public function
of each owner's module is in that owner's table, and nothing is listed that the module does not
define (read from the source with ast: no import, no I/O beyond reading the files)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "libs" / "contracts"
OWNERS = sorted(p.stem for p in CONTRACTS.glob("*.py") if not p.stem.startswith("_"))

HEADING = re.compile(r"^### `libs/contracts/(\w+)\.py`")
ROW = re.compile(r"^\| `(\w+)` \|")


def documented(text: str) -> dict[str, list[str]]:
    """Owner -> the names in the first column of its table under ``### `libs/contracts/<owner>.py```."""
    found: dict[str, list[str]] = {}
    owner = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = HEADING.match(line)
            owner = heading.group(1) if heading else None
            if owner:
                found.setdefault(owner, [])
        elif owner and (row := ROW.match(line)):
            found[owner].append(row.group(1))
    return found


def public_names(source: str) -> tuple[set[str], set[str]]:
    """(public functions, public upper-case constants) defined at a module's top level."""
    functions: set[str] = set()
    constants: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            functions.add(node.name)
        elif isinstance(node, ast.Assign):
            constants.update(
                t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_")
            )
    return functions, constants


DOC = documented((ROOT / "docs" / "contracts.md").read_text(encoding="utf-8"))


def test_every_owner_has_a_table() -> None:
    assert OWNERS == ["account", "authz", "token"]
    assert sorted(DOC) == OWNERS


@pytest.mark.parametrize("owner", OWNERS)
def test_the_table_matches_the_module(owner: str) -> None:
    functions, constants = public_names((CONTRACTS / f"{owner}.py").read_text(encoding="utf-8"))
    listed = DOC.get(owner, [])
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert sorted(functions - set(listed)) == [], "public contract functions missing from docs/contracts.md"
    assert sorted(set(listed) - functions - constants) == [], "listed in docs/contracts.md but not defined"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("### `libs/contracts/a.py` (x)\n| function | w |\n| --- | --- |\n| `f` | does |\n", {"a": ["f"]}),
        ("### `libs/contracts/a.py`\n| `f` | x |\n## Other\n| `g` | y |\n", {"a": ["f"]}),
        ("### `libs/contracts/a.py`\n### `libs/contracts/b.py`\n| `g` | y |\n", {"a": [], "b": ["g"]}),
        ("| `f` | outside any contract table |\n", {}),
    ],
)
def test_the_doc_reader(markdown: str, expected: dict[str, list[str]]) -> None:
    assert documented(markdown) == expected


def test_the_source_reader() -> None:
    source = "X = 1\n_Y = 2\nDB = int\nasync def f(): ...\ndef _g(): ...\ndef h(): ...\n"
    assert public_names(source) == ({"f", "h"}, {"X", "DB"})
