"""PostgreSQL: one asyncpg pool per process."""

from __future__ import annotations

import asyncpg

from .config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python objects.
    import orjson

    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is, without asyncpg's default reset query
    (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): that is one more round
    trip to PostgreSQL after every pooled query, a third of the token endpoint's database work
    (docs/performance.md). Pooled connections never change session state: no SET (only SET LOCAL),
    no session advisory locks (only pg_advisory_xact_lock), no LISTEN, no cursors outside a
    transaction (LISTEN and migrations use their own connections). asyncpg still rolls back a
    transaction left open and drops listeners before it calls this."""


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min(settings.db_pool_min, settings.db_pool_max),
        max_size=settings.db_pool_max,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
    )
    assert pool is not None
    return pool
