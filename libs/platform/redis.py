"""Redis: one asyncio client per process, keys namespaced by REDIS_PREFIX."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from .config import Settings

# What each new connection announces with CLIENT SETINFO (lib-name "redis-py", lib-ver), resolved
# once per process: without it redis-py builds a DriverInfo per connection, and each looks its own
# version up with importlib.metadata, about 0.35 ms of CPU per connection opened (docs/performance.md
# "redis-py's version, looked up once").
_DRIVER_INFO = DriverInfo()


def create_redis(settings: Settings) -> aioredis.Redis:
    # Bounded time (docs/operations.md "Failure modes"): socket and connect timeouts, and no silent
    # retries (redis-py retries 3 times by default, which triples the wait on a blackholed server).
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=False,
        health_check_interval=30,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        driver_info=_DRIVER_INFO,
    )


def key(settings: Settings, *parts: str) -> str:
    return settings.redis_prefix + ":".join(parts)
