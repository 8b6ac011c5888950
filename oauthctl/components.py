"""The platform's migration components, in order, for ``libs.platform.migrate`` (which knows no
service's folder): ``oauthctl migrate``, the tests and the bench apply this list.

Installed (deploy/Dockerfile), ROOT is site-packages, where the migration folders are package data.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Order matters: later components may reference earlier components' tables.
# "common" is the historical name of the libs/oauth outbox migrations (from the former shared
# "common" library). The name is the key of schema_migrations rows: keeping it means databases
# migrated before the move see these files as applied, and nothing re-applies.
MIGRATIONS: tuple[tuple[str, Path], ...] = (
    ("common", ROOT / "libs" / "oauth" / "migrations"),
    ("account", ROOT / "services" / "account" / "migrations"),
    ("authz", ROOT / "services" / "authz" / "migrations"),
    ("token", ROOT / "services" / "token" / "migrations"),
)
