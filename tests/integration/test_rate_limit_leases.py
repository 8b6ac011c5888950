"""Leased rate-limit tokens (services/gateway/limits.py "Leases", issue 17): two Limiter objects
on the same real Redis stand for two gateway instances. Large limits are reserved in batches and
spent locally; the global limit still holds, small limits stay one exact round trip per request,
a counted auth failure refuses at once, and a dead Redis falls back to local counting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from libs.platform.config import Settings
from libs.platform.redis import create_redis
from services.gateway.limits import LEASE_SECONDS, WINDOW_MS, Bucket, Limiter, lease_cap
from tests.support.stack import free_port


class CountingLimiter(Limiter):
    """A Limiter that counts its Redis script calls (round trips)."""

    calls = 0

    async def _reserve(self, redis: aioredis.Redis, buckets: list[Bucket], most: int) -> tuple[int, float]:
        self.calls += 1
        return await super()._reserve(redis, buckets, most)


@pytest.fixture
async def two(settings: Settings) -> AsyncIterator[tuple[aioredis.Redis, CountingLimiter, CountingLimiter]]:
    own = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}leases-{uuid.uuid4().hex[:8]}:"})
    redis = create_redis(own)
    yield redis, CountingLimiter(own), CountingLimiter(own)
    await redis.aclose()


async def burst(redis: aioredis.Redis, limiters: tuple[Limiter, ...], buckets: list[Bucket], n: int) -> list[float]:
    """``n`` requests, 50 at a time, alternately through each limiter."""
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> float:
        async with gate:
            return await limiters[i % len(limiters)].acquire(redis, buckets)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_leases_never_exceed_the_global_limit(two) -> None:
    redis, a, b = two
    per_minute = 2_000
    bucket = Bucket(f"client:id:{uuid.uuid4().hex}", per_minute)
    assert lease_cap([bucket]) == 10
    started = time.monotonic()
    waits = await burst(redis, (a, b), [bucket], 3_000)
    elapsed = time.monotonic() - started
    allowed = waits.count(0.0)
    leaked = elapsed * 1000 / bucket.interval  # what the bucket let through meanwhile, by design
    assert per_minute - 2 * 10 <= allowed <= per_minute + leaked + 1, (allowed, elapsed)
    assert a.calls + b.calls < 3_000 / 4, (a.calls, b.calls)  # most requests spent a lease locally
    refused = [w for w in waits if w > 0]
    assert refused and all(0 < w <= bucket.interval / 1000 + 0.001 for w in refused)


async def test_small_limits_stay_exact(two) -> None:
    redis, a, b = two
    bucket = Bucket(f"login:ip:{uuid.uuid4().hex}", 399)  # under 400 a minute: no lease
    assert lease_cap([bucket]) == 1
    waits = await burst(redis, (a, b), [bucket], 460)
    assert waits.count(0.0) == 399
    assert a.calls + b.calls == 460  # one round trip per request, as before leases


async def test_a_counted_auth_failure_refuses_the_pair_at_once(two) -> None:
    redis, a, b = two
    client = Bucket(f"client:id:{uuid.uuid4().hex}", 60_000)
    failures = Bucket(f"authfail:{client.key}:192.0.2.1", 3, count=False)
    pair = [client, failures]
    keys = tuple(x.key for x in pair)
    for _ in range(20):  # both instances now hold a lease for the pair
        assert await a.acquire(redis, pair) == 0.0
        assert await b.acquire(redis, pair) == 0.0
    assert a.leases[keys].left > 0 and b.leases[keys].left > 0
    for _ in range(3):  # three 401s answered through instance a (limits.count_failure)
        a.forget(keys)
        await a.acquire(redis, [replace(failures, count=True)])
    calls = a.calls
    wait = await a.acquire(redis, pair)
    assert 19 < wait <= 20  # refused at once, Retry-After exact: the first failure leaks in 20 s
    assert a.calls == calls + 1  # asked Redis, not the dropped lease
    assert await a.acquire(redis, pair) > 0 and a.calls == calls + 1  # the refusal is remembered
    # Instance b's lease predates the failures: its next 401 drops it (as on a), or it lapses.
    b.forget(keys)
    assert await b.acquire(redis, pair) > 0
    # Another address of the same client is untouched.
    other = [client, replace(failures, key=f"authfail:{client.key}:192.0.2.2")]
    assert await a.acquire(redis, other) == 0.0


async def test_leases_lapse_and_shrink_to_what_is_used(two) -> None:
    redis, a, _ = two
    bucket = Bucket(f"client:id:{uuid.uuid4().hex}", 60_000)
    for _ in range(200):  # a burst grows the batch up to its cap
        assert await a.acquire(redis, [bucket]) == 0.0
    lease = a.leases[(bucket.key,)]
    assert lease.size == lease_cap([bucket]) == 64
    calls = a.calls
    assert calls < 20
    await asyncio.sleep(LEASE_SECONDS + 0.05)
    assert await a.acquire(redis, [bucket]) == 0.0  # the rest lapsed: this asked Redis again
    assert a.calls == calls + 1 and lease.granted == lease.size < 64
    # What lapsed was counted in Redis and is not given back (never over the limit).
    tat = float(await redis.get(a.settings.redis_prefix + "rl:" + bucket.key))
    assert tat > 0


async def test_redis_down_falls_back_to_local_counting(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "gateway_rate_limit_redis_timeout_seconds": 0.2}
    )
    redis = create_redis(dead)
    limiter = Limiter(dead)
    try:
        for per_minute in (400, 60):  # leased and not: the same local limit
            bucket = Bucket(f"client:id:{uuid.uuid4().hex}", per_minute)
            started = time.monotonic()
            waits = [await limiter.acquire(redis, [bucket]) for _ in range(per_minute + 5)]
            assert waits.count(0.0) == per_minute, per_minute
            assert 0 < waits[-1] <= WINDOW_MS / per_minute / 1000
            assert time.monotonic() - started < 2
    finally:
        await redis.aclose()
