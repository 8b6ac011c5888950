"""SQL migrations, owned per component, applied in order with a migrations table.

Each component keeps plain SQL files named ``NNNN_what.sql`` in its own folder; the caller passes
the ordered ``(component name, folder)`` list (``oauthctl/components.py`` holds the platform's), so
this module knows no service's path. ``apply_all`` takes a Postgres advisory lock (so parallel
starts of several instances migrate once), applies every file not yet recorded in
``schema_migrations``, each in its own transaction together with its record, and refuses to run if
an applied file was edited since.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# (component name, folder of NNNN_*.sql files), in order: later components may reference earlier
# components' tables. The name is the key of schema_migrations rows, so it must never change.
Components = Sequence[tuple[str, Path]]
LOCK_ID = 0x0A07_4D16  # pg_advisory_lock key for migrations


@dataclass(frozen=True)
class Migration:
    component: str
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(components: Components) -> list[Migration]:
    found: list[Migration] = []
    for component, folder in components:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            version, _, name = path.stem.partition("_")
            if not version.isdigit():
                raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
            found.append(Migration(component, version, name, path.read_text(encoding="utf-8")))
    return found


async def apply_all(dsn: str, components: Components, log: Callable[[str], None] = print) -> int:
    """Apply the pending migrations of ``components`` (in order); return how many ran."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       component  text NOT NULL,
                       version    text NOT NULL,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (component, version))"""
            )
            rows = await conn.fetch("SELECT component, version, checksum FROM schema_migrations")
            applied = {(r["component"], r["version"]): r["checksum"] for r in rows}
            count = 0
            for m in discover(components):
                done = applied.get((m.component, m.version))
                if done is not None:
                    if done != m.checksum:
                        raise MigrationError(
                            f"migration {m.component}/{m.version}_{m.name} was edited after it was applied; "
                            "add a new migration instead of changing an applied one"
                        )
                    continue
                log(f"migrate: applying {m.component}/{m.version}_{m.name}")
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1,$2,$3,$4)",
                        m.component,
                        m.version,
                        m.name,
                        m.checksum,
                    )
                count += 1
            log(f"migrate: {count} applied, database is up to date")
            return count
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    finally:
        await conn.close()


async def ensure_database(dsn: str) -> None:
    """Create the database named in ``dsn`` if it does not exist (local development convenience)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(dsn)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    from .config import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m libs.platform.migrate",
        description="Apply pending SQL migrations of the given components to DATABASE_URL (creating the database "
        "if needed). The platform's own list is applied by `oauthctl migrate`.",
    )
    parser.add_argument(
        "component", nargs="+", metavar="NAME=FOLDER", help="a component and its migrations folder, in order"
    )
    args = parser.parse_args(argv)
    components = [(name, Path(folder)) for name, _, folder in (c.partition("=") for c in args.component)]
    settings = load_settings()

    async def run() -> None:
        await ensure_database(settings.database_url)
        await apply_all(settings.database_url, components)

    try:
        asyncio.run(run())
    except (OSError, asyncpg.PostgresError, MigrationError) as exc:
        print(f"migrate: failed: {exc}\nCheck that PostgreSQL is up and DATABASE_URL is right.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
