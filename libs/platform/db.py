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


class BoundedPool(asyncpg.Pool):
    """A pool whose ``acquire`` (also inside ``fetch``/``execute``...) gives up after
    ``acquire_timeout`` seconds: with PostgreSQL blackholed every connection is stuck in a query,
    and a request must get its 503 rather than queue behind them."""

    acquire_timeout: float = 1.0

    def acquire(self, *, timeout: float | None = None):  # type: ignore[no-untyped-def]
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    pool = BoundedPool(
        settings.database_url,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        max_queries=50000,
        loop=None,
        max_inactive_connection_lifetime=300.0,
        min_size=min(settings.db_pool_min, settings.db_pool_max),
        max_size=settings.db_pool_max,
        init=_init_connection,
        reset=_keep_session,
        # Bounded time (docs/operations.md "Failure modes"): a silent server is given up on client-side
        # (connect and command timeouts) and server-side (statement_timeout ends the query there too).
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=settings.db_command_timeout_seconds,
        server_settings={"statement_timeout": str(int(settings.db_command_timeout_seconds * 1000))},
    )
    pool.acquire_timeout = settings.db_acquire_timeout_seconds
    await pool
    return pool
