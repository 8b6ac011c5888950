"""Redis: one asyncio client per process, keys namespaced by REDIS_PREFIX."""

from __future__ import annotations

import redis.asyncio as aioredis

from .config import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, decode_responses=False, health_check_interval=30)


def key(settings: Settings, *parts: str) -> str:
    return settings.redis_prefix + ":".join(parts)
