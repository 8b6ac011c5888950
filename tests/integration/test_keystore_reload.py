"""KeyStore's periodic reload never waits for a pooled connection on the request path: callers used
to mint access tokens inside transactions, and still mint while holding a pooled connection (the
grants in services/token/grants), so with every connection of the pool held that way a synchronous
reload deadlocked the token service for good (found by `make bench`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from libs.contracts.token import SIGNING_KEYS, add_signing_key, ensure_signing_key
from libs.oauth.keys import KeyStore
from libs.platform.config import Settings


@pytest.fixture
async def one_connection_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    assert pool is not None
    yield pool
    await pool.close()


async def test_stale_keys_are_served_while_every_connection_is_busy(
    one_connection_pool: asyncpg.Pool, db: asyncpg.Pool, settings: Settings
) -> None:
    await ensure_signing_key(db, settings.jwt_algorithm)
    store = KeyStore(one_connection_pool, settings.jwt_algorithm, timedelta(hours=3), SIGNING_KEYS)
    first = await store.signing_key()  # the first load is synchronous: nothing to serve before it
    store._loaded_at = time.monotonic() - store.RELOAD_SECONDS - 1  # stale
    async with one_connection_pool.acquire() as conn, conn.transaction():  # the pool's only connection
        key = await asyncio.wait_for(store.signing_key(), timeout=2)  # was: waited forever
        assert key.kid == first.kid
    # Once a connection is free, the background reload completes and picks up new keys.
    kid = await add_signing_key(db, settings.jwt_algorithm, activate_after_seconds=3600)
    store._loaded_at = time.monotonic() - store.RELOAD_SECONDS - 1
    await store.signing_key()
    for _ in range(100):
        if store._reload_task is None:
            break
        await asyncio.sleep(0.02)
    assert kid in store._keys
