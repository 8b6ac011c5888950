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


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min(settings.db_pool_min, settings.db_pool_max),
        max_size=settings.db_pool_max,
        init=_init_connection,
        command_timeout=30,
    )
    assert pool is not None
    return pool
