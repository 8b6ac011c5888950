"""The bus lease: event-fed caches are trusted only while events are *proven* to flow, and a change
answers only once every instance that trusts its caches has applied the change's events
(docs/events.md "Liveness and delivery" has the argument in full).

- Heartbeats. Every outbox relay publishes a ``bus.heartbeat`` about every
  ``bus_heartbeat_interval_seconds`` on the exchange the events use, stamped with the wall-clock
  time ``stamp`` taken *before* a barrier: the heartbeat is published only once no outbox row that
  was committed before ``stamp`` is still unpublished (``BARRIER_SQL``). An event is marked
  published after the broker's confirm, i.e. once it sits in every bound queue, and a queue is
  FIFO; so an instance that has applied a heartbeat stamped ``s`` has applied every event
  committed before ``s``.
- The lease. An instance trusts its caches while the newest heartbeat it applied is younger than
  ``bus_lease_seconds`` (a stalled broker, a blackholed connection, a slow consumer or a dead
  relay all make it lapse), and only after registering that horizon (``stamp + lease``) in Redis.
  When the lease comes back after a lapse every cache is dropped, so only answers read from the
  shared state after that moment are kept.
- Acks. Each instance records in Redis the ids of the events it applied. A request that wrote
  events (``EventBus.settle``) waits until every registered instance whose horizon is still ahead
  and which binds the event's type has acked it; at the latest until ``bus_lease_seconds`` after
  the commit, when any instance still trusting its caches holds a heartbeat stamped after the
  commit and therefore has the event. Either way, when the request answers no instance trusts a
  cached answer that the change made wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram

from libs.platform.config import Settings
from libs.platform.redis import key

from .events.types import topic_matches

log = logging.getLogger("oauth.lease")

HEARTBEAT = "bus.heartbeat"

# Committed, unpublished rows older than the heartbeat's stamp (the partial index of
# 0001_outbox.sql answers it). The allowance covers a PostgreSQL clock slightly ahead of ours.
BARRIER_SQL = """
SELECT EXISTS (SELECT 1 FROM event_outbox WHERE published_at IS NULL AND occurred_at < to_timestamp($1))
"""
CLOCK_ALLOWANCE_SECONDS = 0.05
ACK_TTL_SECONDS = 60
POLL_SECONDS = 0.003

LEASE_FALLBACKS = Counter(
    "cache_lease_fallbacks_total",
    "Cache lookups answered from the shared state because the bus lease was not fresh",
    ["cache"],
)
DELIVERY_WAIT = Histogram(
    "events_delivery_wait_seconds",
    "How long a request that wrote events waited for every trusting instance's ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
DELIVERY_TIMEOUTS = Counter(
    "events_delivery_lease_waits_total",
    "Requests that waited out the lease because an instance's ack (or Redis) did not answer",
)


def leases_key(settings: Settings) -> str:
    return key(settings, "bus", settings.events_exchange, "leases")


def ack_key(settings: Settings, event_id: str) -> str:
    return key(settings, "bus", settings.events_exchange, "ack", event_id)


@dataclass(frozen=True)
class Horizon:
    """One instance's registered lease: it may trust its caches until ``until`` (wall clock)."""

    until: float
    bindings: tuple[str, ...]

    def encode(self) -> bytes:
        return f"{self.until:.6f}|{','.join(self.bindings)}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> Horizon:
        until, _, bindings = raw.decode().partition("|")
        return cls(float(until), tuple(b for b in bindings.split(",") if b))


async def register(redis: aioredis.Redis, settings: Settings, name: str, horizon: Horizon) -> None:
    """Publish this instance's horizon; raises if Redis does not take it (then do not trust)."""
    await asyncio.wait_for(
        redis.hset(leases_key(settings), name, horizon.encode()), timeout=settings.redis_socket_timeout_seconds
    )


async def unregister(redis: aioredis.Redis, settings: Settings, name: str) -> None:
    try:
        await asyncio.wait_for(redis.hdel(leases_key(settings), name), timeout=settings.redis_socket_timeout_seconds)
    except Exception as exc:  # the entry expires by itself (its horizon passes)
        log.debug("could not unregister a lease", extra={"error": type(exc).__name__})


async def ack(redis: aioredis.Redis, settings: Settings, name: str, event_ids: Iterable[str]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.sadd(ack_key(settings, event_id), name)
            pipe.expire(ack_key(settings, event_id), ACK_TTL_SECONDS)
        await asyncio.wait_for(pipe.execute(), timeout=settings.redis_socket_timeout_seconds)


async def _pending(
    redis: aioredis.Redis, settings: Settings, events: Sequence[tuple[str, str]], exclude: str
) -> list[str]:
    """Instances that may trust their caches and have not acked every event they bind."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(leases_key(settings))
        for event_id, _ in events:
            pipe.smembers(ack_key(settings, event_id))
        results = await asyncio.wait_for(pipe.execute(), timeout=settings.redis_socket_timeout_seconds)
    leases: dict[bytes, bytes] = results[0]
    acks: list[set[bytes]] = results[1:]
    now = time.time()
    waiting: list[str] = []
    for raw_name, raw in leases.items():
        name = raw_name.decode()
        horizon = Horizon.decode(raw)
        if name == exclude or horizon.until <= now:
            continue
        for (_, event_type), acked in zip(events, acks, strict=True):
            bound = any(topic_matches(p, event_type) for p in horizon.bindings)
            if bound and raw_name not in acked:
                waiting.append(name)
                break
    return waiting


async def await_delivery(
    redis: aioredis.Redis | None,
    settings: Settings,
    events: Sequence[tuple[str, str]],
    committed_at: float,
    *,
    exclude: str = "",
) -> None:
    """Return once no instance can still trust a cache that ``events`` (``(id, type)`` pairs,
    committed before ``committed_at``, wall clock) invalidate: every instance that may trust its
    caches acked them, or ``bus_lease_seconds`` passed since the commit."""
    if not events:
        return
    started = time.monotonic()
    deadline = committed_at + settings.bus_lease_seconds + CLOCK_ALLOWANCE_SECONDS
    try:
        while time.time() < deadline:
            if redis is None:
                raise ConnectionError("no Redis to read acks from")
            if not await _pending(redis, settings, events, exclude):
                return
            await asyncio.sleep(POLL_SECONDS)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # Redis away: only time proves it now
        log.warning("cannot confirm delivery; waiting out the lease", extra={"error": type(exc).__name__})
        await asyncio.sleep(max(0.0, deadline - time.time()))
    finally:
        DELIVERY_WAIT.observe(time.monotonic() - started)
    DELIVERY_TIMEOUTS.inc()
