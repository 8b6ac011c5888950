"""The layering rules of docs/architecture.md, read from the code's imports: libs/platform imports
nothing from libs/oauth or services, libs imports no service, and no service imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
        if bad:
            out.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    return out


def test_platform_knows_no_oauth_and_no_service() -> None:
    assert offenders("libs/platform", ("libs.oauth", "services")) == []


def test_libs_import_no_service() -> None:
    assert offenders("libs", ("services",)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    others = tuple(f"services.{s}" for s in SERVICES if s != service)
    assert offenders(f"services/{service}", others) == []


def test_relative_imports_are_resolved() -> None:
    """The checker itself: a relative import two levels up resolves to the right package."""
    modules = imported_modules(ROOT / "libs" / "oauth" / "events" / "relay.py")
    assert "libs.oauth.metrics.RELAY_LAG" in modules
    assert "libs.platform.config.Settings" in modules
