"""Keeping the CORS origin set in Redis (libs/oauth/cors.py holds its format): the origins of every
app's redirect URIs.

Rebuilt in full (it is small, and a full rebuild cannot drift):
- after every change to an app through the developer API or the developer console (``refresh``);
- when the service starts, and every REBUILD_SECONDS, so that apps changed elsewhere (``oauthctl
  demo``, SQL by hand) or a Redis that lost the key are picked up without a restart.

Rebuilds are serialized with a Postgres advisory lock, and each reads the apps only after taking it:
the last one to write Redis therefore always read the newest committed apps. The set is replaced
in one MULTI/EXEC, so the gateway never sees it half-written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from libs.oauth.cors import origin_of, replace_origins
from libs.platform.config import Settings
from libs.platform.tasks import cancel_and_wait
from libs.platform.web import PG, REDIS, SETTINGS

from . import store

log = logging.getLogger("oauth.account.cors")

REBUILD_LOCK = 0x0C0B_5001
REBUILD_SECONDS = 60.0

TASK = web.AppKey("cors_origins_task", asyncio.Task)


async def rebuild(pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> set[str]:
    """Recompute the set from ``oauth_apps`` and replace it in Redis; returns the origins."""
    async with pool.acquire() as conn, conn.transaction():
        await store.advisory_xact_lock(conn, REBUILD_LOCK)
        origins = {o for uri in await store.all_redirect_uris(conn) if (o := origin_of(uri)) is not None}
        await replace_origins(redis, settings, origins)
    return origins


async def refresh(app: web.Application) -> None:
    """Rebuild after an app changed. Best effort: the change is committed already, and a failure
    here is repaired by the next periodic rebuild, so it is logged, not raised."""
    try:
        await rebuild(app[PG], app[REDIS], app[SETTINGS])
    except (RedisError, asyncpg.PostgresError, OSError) as exc:
        log.warning("cors origins rebuild failed", extra={"error": type(exc).__name__})


async def _every(app: web.Application, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await refresh(app)


def setup(app: web.Application) -> None:
    """Rebuild at start (before serving) and then every REBUILD_SECONDS in the background."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await refresh(app)
        task = asyncio.create_task(_every(app, REBUILD_SECONDS))
        app[TASK] = task
        yield
        await cancel_and_wait([task])

    app.cleanup_ctx.append(ctx)
