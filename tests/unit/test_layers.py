"""The layering rules of docs/architecture.md, read from the code (imports, string constants and the
migrations' CREATE TABLE): libs/platform imports nothing from libs/oauth or services, libs imports no
service, libs/contracts sits between libs/oauth and the services, no service imports another, SQL
in a service lives only in its store, and only libs/contracts touches a service's table from libs/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file())

# A string that is SQL: a query, an insert, an update (optionally with a table alias) or a delete.
SQL = re.compile(
    r"\bSELECT\b[\s\S]+?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+(?:\s+\w+)?\s+SET\b|\bDELETE\s+FROM\b",
    re.IGNORECASE,
)
CREATE_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)


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


# --- libs/contracts between libs/oauth and the services -------------------------------------------
def test_contracts_import_no_service() -> None:
    assert offenders("libs/contracts", ("services",)) == []


@pytest.mark.parametrize("folder", ["libs/oauth", "libs/platform"])
def test_lower_libs_import_nothing_from_contracts(folder: str) -> None:
    assert offenders(folder, ("libs.contracts",)) == []


# --- where SQL may live ---------------------------------------------------------------------------
def sql_strings(path: Path) -> list[str]:
    """The string constants of a module that are SQL (docstrings included: SQL there is suspect too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and SQL.search(n.value)
    ]


def is_store(path: Path) -> bool:
    """``services/<name>/store.py`` or a module of ``services/<name>/store/``."""
    parts = path.relative_to(ROOT / "services").parts
    return parts[1:] == ("store.py",) or (len(parts) > 2 and parts[1] == "store")


def service_tables() -> set[str]:
    """Every table a service's migrations create (the services own them, docs/contracts.md)."""
    found: set[str] = set()
    for sql in (ROOT / "services").glob("*/migrations/*.sql"):
        found.update(name.lower() for name in CREATE_TABLE.findall(sql.read_text(encoding="utf-8")))
    return found


def test_sql_in_a_service_lives_in_its_store() -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {sql_strings(path)[0].strip()[:60]!r}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        if not is_store(path) and sql_strings(path)
    ]
    assert bad == []


def test_only_contracts_touch_a_service_table_from_libs() -> None:
    tables = service_tables()
    assert {"users", "oauth_apps", "authorization_codes", "signing_keys"} <= tables  # the parser itself
    word = re.compile(r"\b(" + "|".join(sorted(tables)) + r")\b", re.IGNORECASE)
    bad = []
    for path in sorted((ROOT / "libs").rglob("*.py")):
        if path.is_relative_to(ROOT / "libs" / "contracts"):
            continue
        touched = sorted({m.lower() for sql in sql_strings(path) for m in word.findall(sql)})
        if touched:
            bad.append(f"{path.relative_to(ROOT)}: {', '.join(touched)}")
    assert bad == []


@pytest.mark.parametrize(
    ("text", "is_sql"),
    [
        ("SELECT id FROM users WHERE id = $1", True),
        ("select count(*)\n  from grants", True),
        ("INSERT INTO signing_keys (kid) VALUES ($1)", True),
        ("UPDATE authorization_codes c SET used_at = now()", True),
        ("update users set status = 2", True),
        ("WITH d AS (DELETE FROM grants WHERE client_id = $1 RETURNING 1) SELECT count(*) FROM d", True),
        ("SELECT pg_advisory_xact_lock($1)", False),
        ("Select the scopes to grant", False),
        ("update the page", False),
        ("the user's grants, deleted from the list", False),
    ],
)
def test_the_sql_detector(text: str, is_sql: bool) -> None:
    assert bool(SQL.search(text)) is is_sql


def test_store_modules_are_recognised() -> None:
    services = ROOT / "services"
    assert is_store(services / "token" / "store.py")
    assert is_store(services / "authz" / "store" / "codes.py")
    assert not is_store(services / "token" / "grants" / "refresh_token.py")
    assert not is_store(services / "account" / "apps.py")
