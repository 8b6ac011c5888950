"""Events over RabbitMQ (SPEC.md "Events"; docs/events.md has every type's schema).

Four parts:

- ``Event``: the message, ``{id, type, occurred_at, data}`` as persistent JSON on the durable topic
  exchange ``settings.events_exchange``, routing key = type, ``message_id`` = id.
- ``OutboxRelay``: publishes the rows that ``outbox.enqueue`` wrote in the writers' transactions,
  and a ``bus.heartbeat`` every ``bus_heartbeat_interval_seconds`` behind them (lease.py).
  It claims rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (several instances cooperate, none
  publishes a row another is publishing), publishes them with publisher confirms, marks them
  published in the same transaction, and retries with exponential backoff while the broker is away
  (a row is published at least once; consumers are idempotent by id). It wakes on Postgres
  ``NOTIFY event_outbox`` (sent by a trigger at commit, so a rolled-back change wakes nobody and
  publishes nothing), on its own service's requests, and every ``events_relay_poll_seconds``.
- ``EventConsumer``: this instance's exclusive, auto-deleted queue for cache invalidation, bound to
  the routing keys its handlers subscribed to (and ``bus.heartbeat``); messages applied one at a
  time in queue order, manual ack after the handlers ran, an ack in Redis for the writers
  (lease.py); duplicates (same id) are acknowledged and skipped. ``live`` is true only while the
  queue is consumed *and* the bus lease is fresh: caches trust themselves only then, and
  ``generation`` changes at every transition, so an answer loaded before one is never stored
  after it.
- ``EventBus`` (``app[EVENTS]``, from ``setup_events``): the three above for one service instance,
  plus a middleware that, when a request wrote events, has them published and acked by every
  instance that trusts its caches before the response goes out (at most ``bus_lease_seconds``
  after the commit). So when a revoke or a quota change returns, no instance answers from a cache
  it makes wrong (docs/events.md "Liveness and delivery").

Durable queues for downstream consumers (billing, audit) are theirs to declare: see
``examples/event_consumer.py`` and ``process_once`` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter, Gauge

from . import outbox
from .amqp import AmqpLink
from .caches import CLIENTS, attach_client_cache, detach_client_cache
from .config import Settings
from .lease import BARRIER_SQL, CLOCK_ALLOWANCE_SECONDS, HEARTBEAT, Horizon, ack, await_delivery, register, unregister
from .metrics import RELAY_LAG
from .redis import create_redis
from .web import AMQP, PG, READY_CHECKS, REDIS, SERVICE, SETTINGS

log = logging.getLogger("oauth.events")

NOTIFY_CHANNEL = "event_outbox"  # libs/common/migrations/0002_event_relay.sql

# The event types of SPEC.md; docs/events.md describes their data.
EVENT_TYPES = (
    "authorization.revoked",
    "token.revoked",
    "client.updated",
    "client.deleted",
    "client.secret_rotated",
    "user.updated",
    "user.disabled",
    "quota.changed",
)

EVENTS_PUBLISHED = Counter("events_published_total", "Events published by the outbox relay", ["type"])
EVENTS_PUBLISH_FAILURES = Counter("events_publish_failures_total", "Outbox publications that failed (retried)")
EVENTS_RECEIVED = Counter("events_received_total", "Events received by this instance's consumer", ["type"])
BUS_LEASE_AGE = Gauge(
    "bus_lease_age_seconds", "Age of the newest bus heartbeat this instance applied (+Inf: none)", ["consumer"]
)
EVENTS_DUPLICATES = Counter(
    "events_duplicates_total",
    "Events skipped because this instance had applied them already (redeliveries, its own events)",
)

Handler = Callable[["Event"], Awaitable[None]]


# --- the message ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    id: str
    type: str
    occurred_at: str  # RFC 3339, UTC
    data: dict[str, Any]

    def body(self) -> bytes:
        return orjson.dumps({"id": self.id, "type": self.type, "occurred_at": self.occurred_at, "data": self.data})

    def message(self) -> aio_pika.Message:
        return aio_pika.Message(
            self.body(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=self.id,
            type=self.type,
            timestamp=datetime.fromisoformat(self.occurred_at.replace("Z", "+00:00")),
        )

    @classmethod
    def from_body(cls, body: bytes) -> Event:
        """Parse a message body; ``ValueError`` if it is not an event."""
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError("not JSON") from exc
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        event_id, type_, occurred_at, data = raw.get("id"), raw.get("type"), raw.get("occurred_at"), raw.get("data")
        if not (isinstance(event_id, str) and isinstance(type_, str) and isinstance(occurred_at, str)):
            raise ValueError("id, type and occurred_at must be strings")
        if not isinstance(data, dict):
            raise ValueError("data must be an object")
        uuid.UUID(event_id)  # ValueError if malformed
        return cls(event_id, type_, occurred_at, data)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Event:
        data = row["data"]
        if isinstance(data, str):  # read as ::text (works with or without a jsonb codec)
            data = orjson.loads(data)
        return cls(str(row["id"]), row["type"], rfc3339(row["occurred_at"]), dict(data))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=1024)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    p, k = pattern.split("."), routing_key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and match(i + 1, j + 1)

    return match(0, 0)


# --- publishing: the outbox relay ----------------------------------------------------------------
CLAIM_SQL = """
SELECT id, type, data::text AS data, occurred_at FROM event_outbox
WHERE published_at IS NULL
ORDER BY occurred_at, id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""


class OutboxRelay:
    """Publishes ``event_outbox`` rows with publisher confirms; see the module docstring."""

    def __init__(self, pool: asyncpg.Pool, link: AmqpLink, settings: Settings, *, name: str = "relay") -> None:
        self.pool = pool
        self.link = link
        self.settings = settings
        self.name = name
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._cycle_waiters: list[asyncio.Future[None]] = []
        self._recent: OrderedDict[str, None] = OrderedDict()  # ids this relay published lately
        self._tasks: list[asyncio.Task[None]] = []
        self._last_maintenance = 0.0
        link.on_connect(self._on_connect)
        link.on_disconnect(self._on_disconnect)

    # --- link hooks -------------------------------------------------------------------------------
    async def _on_connect(self, connection: aio_pika.abc.AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        self._channel = channel
        self._exchange = await channel.declare_exchange(
            self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._wake.set()  # publish the backlog

    def _on_disconnect(self) -> None:
        self._exchange = None

    # --- lifetime ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"outbox-relay:{self.name}"),
            asyncio.create_task(self._listen(), name=f"outbox-listen:{self.name}"),
            asyncio.create_task(self._beat(), name=f"bus-heartbeat:{self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for fut in self._cycle_waiters:
            if not fut.done():
                fut.cancel()
        if self.connected:  # a last flush of what this process committed, while the link is still up
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.drain(), timeout=2)

    def wake(self) -> None:
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._exchange is not None and self.link.is_up

    # --- the loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.settings.events_retry_initial_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.events_relay_poll_seconds)
            self._wake.clear()
            waiters, self._cycle_waiters = self._cycle_waiters, []
            failed = False
            more = False
            try:
                more = await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                EVENTS_PUBLISH_FAILURES.inc()
                if self._channel is not None and self._channel.is_closed:
                    self.link.drop()  # a channel-level error: start over on a fresh connection
                log.warning(
                    "event publication failed, retrying",
                    extra={"relay": self.name, "error": type(exc).__name__, "retry_in": delay},
                )
            finally:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
            if failed:
                # Back off, but come back at once when the link reconnects (its hook wakes us).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                delay = min(delay * 2, self.settings.events_retry_max_seconds)
                continue
            delay = self.settings.events_retry_initial_seconds
            if more:
                self._wake.set()
            await self._maintenance()

    async def drain(self) -> bool:
        """Publish one batch of unpublished rows; True if there may be more. Raises when a
        publication failed (the rows before it stay published, the rest are retried)."""
        exchange = self._exchange
        if exchange is None or not self.link.is_up:
            return False  # the link's connect hook wakes us
        batch = self.settings.events_relay_batch_size
        error: BaseException | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, batch)
            if not rows:
                return False
            # Marking rows published need not wait for the WAL flush: a mark lost in a crash only
            # republishes the event, which consumers skip by id.
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            events = [Event.from_row(r) for r in rows]
            results = await asyncio.gather(
                *(self._publish(exchange, e) for e in events),
                return_exceptions=True,
            )
            done = [e for e, r in zip(events, results, strict=True) if not isinstance(r, BaseException)]
            failed = [e for e, r in zip(events, results, strict=True) if isinstance(r, BaseException)]
            if done:
                await conn.execute(
                    "UPDATE event_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::uuid[])",
                    [e.id for e in done],
                )
            if failed:
                await conn.execute(
                    "UPDATE event_outbox SET attempts = attempts + 1 WHERE id = ANY($1::uuid[])",
                    [e.id for e in failed],
                )
                first = next(r for r in results if isinstance(r, BaseException))
                error = first
        occurred = {str(r["id"]): r["occurred_at"] for r in rows}
        now = datetime.now(UTC)
        for e in done:
            EVENTS_PUBLISHED.labels(e.type).inc()
            RELAY_LAG.observe(max(0.0, (now - occurred[e.id]).total_seconds()))
            self._recent[e.id] = None
        while len(self._recent) > 10_000:
            self._recent.popitem(last=False)
        if error is not None:
            raise error
        return len(rows) == batch

    async def _publish(self, exchange: aio_pika.abc.AbstractExchange, event: Event) -> None:
        await exchange.publish(
            event.message(),
            routing_key=event.type,
            mandatory=False,
            timeout=self.settings.events_publish_timeout_seconds,
        )

    # --- heartbeats (lease.py) --------------------------------------------------------------------
    async def _beat(self) -> None:
        interval = self.settings.bus_heartbeat_interval_seconds
        while True:
            started = time.monotonic()
            exchange = self._exchange
            if exchange is not None and self.link.is_up:
                try:
                    await asyncio.wait_for(self.heartbeat(exchange), timeout=max(interval, 0.5))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the lease lapses on the consumers: that is the point
                    log.debug("heartbeat not published", extra={"relay": self.name, "error": type(exc).__name__})
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def heartbeat(self, exchange: aio_pika.abc.AbstractExchange) -> bool:
        """Publish one heartbeat, after the barrier: no event committed before its stamp is still
        unpublished (lease.py). False if the backlog did not drain within one interval."""
        stamp = time.time()
        interval = self.settings.bus_heartbeat_interval_seconds
        while await self.pool.fetchval(BARRIER_SQL, stamp + CLOCK_ALLOWANCE_SECONDS):
            if time.time() - stamp > interval:
                return False
            self._wake.set()
            await asyncio.sleep(0.005)
        body = orjson.dumps(
            {
                "id": str(uuid.uuid4()),
                "type": HEARTBEAT,
                "occurred_at": rfc3339(datetime.now(UTC)),
                "data": {"stamp": stamp, "relay": self.name},
            }
        )
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            type=HEARTBEAT,
            expiration=self.settings.bus_lease_seconds,  # an older one proves nothing any more
        )
        await exchange.publish(message, routing_key=HEARTBEAT, timeout=self.settings.events_publish_timeout_seconds)
        return True

    # --- waiting for publication ------------------------------------------------------------------
    async def flush(self, ids: Sequence[str], wait_seconds: float) -> bool:
        """Wake the relay and wait (at most ``wait_seconds``) until the committed events ``ids`` are
        published, by this relay or another instance's. False when the broker is away (no wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        pending = await self._unpublished(ids)
        while pending:
            if not self.connected:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._cycle_waiters.append(fut)
            self._wake.set()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout=remaining)
            except TimeoutError:
                return False
            pending = await self._unpublished(pending)
            if pending:  # being published by another instance's relay
                await asyncio.sleep(0.002)
        return True

    async def _unpublished(self, ids: Sequence[str]) -> list[str]:
        pending = [i for i in ids if i not in self._recent]
        if not pending:
            return []
        rows = await self.pool.fetch(
            "SELECT id::text FROM event_outbox WHERE id = ANY($1::uuid[]) AND published_at IS NULL", pending
        )
        return [r["id"] for r in rows]

    # --- LISTEN for commits of other processes -----------------------------------------------------
    async def _listen(self) -> None:
        delay = self.settings.events_retry_initial_seconds
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.settings.database_url, timeout=self.settings.db_connect_timeout_seconds
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_args: self._wake.set())
                delay = self.settings.events_retry_initial_seconds
                self._wake.set()  # anything committed while we were not listening
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox LISTEN failed; polling meanwhile", extra={"error": type(exc).__name__})
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.events_retry_max_seconds)

    # --- housekeeping -----------------------------------------------------------------------------
    async def _maintenance(self) -> None:
        """Prune what nobody needs any more, about every 10 minutes (any one instance may do it)."""
        now = time.monotonic()
        if now - self._last_maintenance < 600:
            return
        self._last_maintenance = now
        retention = float(self.settings.events_outbox_retention_seconds)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # Bulk deletes may take longer than a request's statement_timeout: their own bound.
                await conn.execute("SET LOCAL statement_timeout = '60s'")
                await conn.execute(
                    "DELETE FROM event_outbox WHERE published_at < now() - make_interval(secs => $1)",
                    retention,
                    timeout=60,
                )
                await conn.execute(
                    "DELETE FROM revoked_access_tokens WHERE expires_at < now() - interval '1 hour'", timeout=60
                )
                await conn.execute(
                    "DELETE FROM processed_events WHERE processed_at < now() - make_interval(secs => $1)",
                    retention,
                    timeout=60,
                )
        except Exception as exc:  # PostgreSQL away or slow: next time (the relay loop must live on)
            log.warning("outbox maintenance failed", extra={"error": type(exc).__name__})


# --- consuming: this instance's cache-invalidation queue -----------------------------------------
class EventConsumer:
    """An exclusive queue per instance; see the module docstring."""

    def __init__(self, link: AmqpLink, settings: Settings, *, name: str, redis: aioredis.Redis | None = None) -> None:
        self.link = link
        self.settings = settings
        self.name = name
        self.redis = redis  # where the lease is registered and acks are written (lease.py)
        self.consuming = False  # the queue is declared and consumed
        self.beat_stamp = 0.0  # stamp of the newest heartbeat applied since the queue was declared
        self.generation = 0
        self._order = asyncio.Lock()  # messages are applied one at a time, in queue order
        self._background: set[asyncio.Task[None]] = set()
        self._redis_failed_at = -1e9
        BUS_LEASE_AGE.labels(name).set_function(lambda: self.lease_age)
        self._handlers: list[tuple[str, Handler]] = []
        self._reset_hooks: list[Callable[[], None]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._echo: dict[str, asyncio.Future[None]] = {}
        self._received: OrderedDict[str, None] = OrderedDict()  # ids that came through the queue
        self.queue_name = ""
        self._started = False
        link.on_connect(self._on_connect)
        link.on_disconnect(self._on_disconnect)

    # --- registration (before start) --------------------------------------------------------------
    def subscribe(self, pattern: str, handler: Handler) -> None:
        """Call ``handler(event)`` for every event whose type matches the topic ``pattern``."""
        self._handlers.append((pattern, handler))

    def on_reset(self, hook: Callable[[], None]) -> None:
        """``hook()`` whenever the consumer goes live or stops being live (caches drop everything)."""
        self._reset_hooks.append(hook)

    @property
    def bindings(self) -> list[str]:
        return sorted({p for p, _ in self._handlers})

    # --- the lease (lease.py) ---------------------------------------------------------------------
    @property
    def lease_age(self) -> float:
        """Seconds since the newest applied heartbeat was stamped (inf: none yet)."""
        return time.time() - self.beat_stamp if self.beat_stamp else float("inf")

    @property
    def live(self) -> bool:
        """Caches may be trusted: the queue is consumed and the lease is fresh."""
        return self.consuming and self.lease_age < self.settings.bus_lease_seconds

    async def _on_heartbeat(self, event: Event) -> None:
        stamp = event.data.get("stamp")
        if not isinstance(stamp, int | float) or stamp <= self.beat_stamp or not self.consuming:
            return
        if self.redis is not None:
            if self._redis_failing():
                return  # no registration, no trust; and no queue stalled behind Redis timeouts
            horizon = Horizon(float(stamp) + self.settings.bus_lease_seconds, tuple(self.bindings))
            try:  # registered before trusted: a change's settle then waits for our ack
                await register(self.redis, self.settings, self.name, horizon)
            except Exception as exc:
                self._redis_failed_at = time.monotonic()
                log.warning("cannot register the bus lease; caches stay untrusted", extra={"error": type(exc).__name__})
                return
        if not self.live:  # the lease comes back: nothing cached before is trusted (lease.py)
            self._reset()
        self.beat_stamp = float(stamp)

    async def _ack(self, event_id: str) -> None:
        if self.redis is None or self._redis_failing():
            return  # the writer then waits out the lease instead
        try:
            await ack(self.redis, self.settings, self.name, [event_id])
        except Exception as exc:
            self._redis_failed_at = time.monotonic()
            log.warning("cannot ack an event", extra={"error": type(exc).__name__})

    def _redis_failing(self) -> bool:
        """Redis failed within the last second: skip it rather than hold the queue on its timeout."""
        return time.monotonic() - self._redis_failed_at < 1.0

    def binds(self, event_type: str) -> bool:
        return any(topic_matches(p, event_type) for p in self.bindings)

    # --- link hooks -------------------------------------------------------------------------------
    async def _on_connect(self, connection: aio_pika.abc.AbstractConnection) -> None:
        if not self._handlers:
            return
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        exchange = await channel.declare_exchange(
            self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        name = f"{self.settings.events_exchange}.cache.{self.name}.{uuid.uuid4().hex[:12]}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True, durable=False)
        for pattern in [*self.bindings, HEARTBEAT]:
            await queue.bind(exchange, routing_key=pattern)
        await queue.consume(self._on_message)
        channel.close_callbacks.add(self._on_channel_closed)
        self.queue_name = name
        self._transition(True)

    def _on_channel_closed(self, _sender: object, _exc: BaseException | None = None) -> None:
        if self.consuming:
            self._transition(False)
            self.link.drop()  # a channel error: rebuild everything on a fresh connection

    def _on_disconnect(self) -> None:
        self._transition(False)

    def _transition(self, consuming: bool) -> None:
        if consuming == self.consuming and not consuming:
            return
        self.consuming = consuming
        self.beat_stamp = 0.0  # a new queue: trusted only after a heartbeat came through it
        self._reset()
        if not consuming:
            if self.redis is not None:
                task = asyncio.get_running_loop().create_task(unregister(self.redis, self.settings, self.name))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            for fut in self._echo.values():
                if not fut.done():
                    fut.set_result(None)
        log.info("event consumer " + ("up" if consuming else "down"), extra={"consumer": self.name})

    def _reset(self) -> None:
        self.generation += 1
        for hook in self._reset_hooks:
            try:
                hook()
            except Exception:
                log.exception("cache reset hook failed")

    # --- delivery ---------------------------------------------------------------------------------
    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            event = Event.from_body(message.body)
        except ValueError as exc:
            log.error("dropping a message that is not an event", extra={"error": str(exc)})
            await message.reject(requeue=False)
            return
        async with self._order:  # a heartbeat counts only once everything before it is applied
            if event.type == HEARTBEAT:
                try:
                    await self._on_heartbeat(event)
                finally:
                    await message.ack()
                return
            EVENTS_RECEIVED.labels(event.type).inc()
            self._received[event.id] = None
            while len(self._received) > 10_000:
                self._received.popitem(last=False)
            try:
                await self.dispatch(event)
                await self._ack(event.id)
            finally:
                await message.ack()
                fut = self._echo.pop(event.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def dispatch(self, event: Event) -> bool:
        """Run the handlers once per event id; False if it was already applied here."""
        if event.id in self._seen:
            EVENTS_DUPLICATES.inc()
            return False
        self._seen[event.id] = None
        while len(self._seen) > 50_000:
            self._seen.popitem(last=False)
        for pattern, handler in self._handlers:
            if topic_matches(pattern, event.type):
                try:
                    await handler(event)
                except Exception:
                    # A cache that missed an invalidation must not be trusted: drop them all.
                    log.exception("event handler failed; dropping caches", extra={"type": event.type})
                    self._reset()
        return True

    def expect(self, event_id: str) -> asyncio.Future[None]:
        """A future resolved when this consumer receives ``event_id`` (or stops being live)."""
        fut = self._echo.get(event_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._echo[event_id] = fut
            if not self.consuming or event_id in self._received:  # down, or it came round already
                fut.set_result(None)
        return fut

    def forget_expectation(self, event_id: str) -> None:
        fut = self._echo.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.cancel()


# --- one service instance's bus ------------------------------------------------------------------
class EventBus:
    """The relay (optional), the consumer and the request middleware of one service instance."""

    def __init__(self, app: web.Application, *, relay: bool) -> None:
        self.app = app
        self.with_relay = relay
        self.relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self._pending_handlers: list[tuple[str, Handler]] = []
        self._pending_resets: list[Callable[[], None]] = []
        self._after_commit: list[Handler] = []

    # --- registration (at build time) -------------------------------------------------------------
    def subscribe(self, pattern: str, handler: Handler) -> None:
        self._pending_handlers.append((pattern, handler))

    def on_reset(self, hook: Callable[[], None]) -> None:
        self._pending_resets.append(hook)

    def after_commit(self, handler: Handler) -> None:
        """``handler(event)`` for each event a request of this instance committed, before it answers
        (e.g. write revocations to Redis at once; consumers repeat it, idempotently)."""
        self._after_commit.append(handler)

    # --- liveness, for caches ---------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.consumer is not None and self.consumer.live

    @property
    def generation(self) -> int:
        return self.consumer.generation if self.consumer is not None else -1

    # --- lifetime ---------------------------------------------------------------------------------
    async def start(self) -> None:
        app = self.app
        link = app[AMQP]
        settings = app[SETTINGS]
        name = f"{app[SERVICE]}-{uuid.uuid4().hex[:6]}"
        self.consumer = EventConsumer(link, settings, name=name, redis=app.get(REDIS))
        for pattern, handler in self._pending_handlers:
            self.consumer.subscribe(pattern, handler)
        for hook in self._pending_resets:
            self.consumer.on_reset(hook)
        if self.with_relay:
            self.relay = OutboxRelay(app[PG], link, settings, name=name)
            await self.relay.start()
        if link.is_up:  # connected before our hooks were registered: set them up on a fresh connection
            link.drop()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        consumer = self.consumer
        if consumer is not None:
            with contextlib.suppress(KeyError):
                BUS_LEASE_AGE.remove(consumer.name)
            if consumer.redis is not None:
                await unregister(consumer.redis, consumer.settings, consumer.name)

    # --- a request's events -----------------------------------------------------------------------
    async def settle(self, ids: Sequence[uuid.UUID]) -> None:
        """Make the committed events among ``ids`` visible before the request answers: after-commit
        handlers, this instance's own handlers at once, publication (at most
        ``events_settle_timeout_seconds``), then every other trusting instance's ack, or the lease
        run out (lease.py: afterwards no instance trusts a cache these events invalidate)."""
        if not ids:
            return
        committed_at = time.time()  # the request's transactions committed before this
        pool = self.app[PG]
        rows = await pool.fetch(
            "SELECT id, type, data::text AS data, occurred_at FROM event_outbox WHERE id = ANY($1::uuid[])",
            [str(i) for i in ids],
        )
        if not rows:
            return  # rolled back: nothing happened, nothing to tell
        events = [Event.from_row(r) for r in rows]
        for event in events:
            for handler in self._after_commit:
                try:
                    await handler(event)
                except Exception:
                    log.exception("after-commit handler failed", extra={"type": event.type})
        consumer = self.consumer
        if consumer is not None:
            for event in events:
                await consumer.dispatch(event)  # this instance is up to date at once
        if self.relay is not None:
            await self.relay.flush([e.id for e in events], self.app[SETTINGS].events_settle_timeout_seconds)
        await await_delivery(
            self.app.get(REDIS),
            self.app[SETTINGS],
            [(e.id, e.type) for e in events],
            committed_at,
            exclude=consumer.name if consumer is not None else "",
        )


EVENTS = web.AppKey("events", EventBus)


@web.middleware
async def settle_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Collect the events a request enqueues; make them visible before the response leaves."""
    ids: list[uuid.UUID] = []
    token = outbox.collect(ids)
    try:
        return await handler(request)
    finally:
        outbox.stop_collecting(token)
        if ids:
            try:
                await request.app[EVENTS].settle(ids)
            except Exception as exc:  # the change is committed: its answer must not turn into an error
                log.warning("could not settle the request's events", extra={"error": type(exc).__name__})


def setup_events(app: web.Application, *, relay: bool = True, client_cache: bool = True) -> EventBus:
    """Give a service instance its event bus (``app[EVENTS]``): the outbox relay (when the service
    writes events), the cache-invalidation consumer, the settle middleware, and (``client_cache``)
    the client cache of ``clients.get_client`` kept by client.* events. Call after ``create_app``;
    subscribe handlers with ``app[EVENTS].subscribe`` before the app starts."""
    bus = EventBus(app, relay=relay)
    app[EVENTS] = bus
    app.middlewares.append(settle_middleware)
    if client_cache:

        async def drop_client(event: Event) -> None:
            CLIENTS.invalidate(str(event.data.get("client_id", "")))

        bus.subscribe("client.*", drop_client)
        bus.on_reset(CLIENTS.clear)

    async def bus_ready() -> str | None:
        return None if bus.live else "degraded"  # the caches are bypassed, not wrong

    app[READY_CHECKS]["bus"] = bus_ready

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if client_cache:
            attach_client_cache(bus, app[SETTINGS].cache_ttl_seconds)
        await bus.start()
        yield
        await bus.stop()
        if client_cache:
            detach_client_cache(bus)

    app.cleanup_ctx.append(ctx)
    return bus


# --- for processes without a bus (the CLI) ------------------------------------------------------
class EventWaiter:
    """Make a change from outside the services (``oauthctl``) visible everywhere before returning:

        async with EventWaiter(settings, ["user.disabled"]), conn.transaction():
            ...  # outbox.enqueue(conn, "user.disabled", ...)

    On entry it binds a temporary exclusive queue to ``routing_keys`` and collects the ids that
    ``outbox.enqueue`` writes; on a clean exit it waits (at most ``wait_seconds``) until those
    events came round through the broker, i.e. the services' relays published them and every
    bound queue, the instances' included, has them, and then (like ``EventBus.settle``) until
    every instance that trusts its caches acked them, at most ``bus_lease_seconds``."""

    def __init__(self, settings: Settings, routing_keys: Sequence[str], *, wait_seconds: float = 3.0) -> None:
        self.settings = settings
        self.routing_keys = list(routing_keys)
        self.wait_seconds = wait_seconds
        self.ids: list[uuid.UUID] = []
        self._seen: set[str] = set()
        self._types: dict[str, str] = {}
        self._arrived = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._token: Any = None

    async def __aenter__(self) -> EventWaiter:
        try:
            self._connection = await aio_pika.connect(self.settings.amqp_url, timeout=2)
            channel = await self._connection.channel()
            exchange = await channel.declare_exchange(
                self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            for key in self.routing_keys:
                await queue.bind(exchange, routing_key=key)
            await queue.consume(self._on_message, no_ack=True)
        except Exception as exc:
            log.warning("no broker to wait for events on", extra={"error": type(exc).__name__})
            await self._close()
        self._token = outbox.collect(self.ids)
        return self

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.message_id:
            self._seen.add(message.message_id)
            self._types[message.message_id] = message.routing_key or ""
            self._arrived.set()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        outbox.stop_collecting(self._token)
        committed_at = time.time()
        try:
            if exc_type is None and self._connection is not None and self.ids:
                wanted = {str(i) for i in self.ids}
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.wait_seconds
                while not wanted <= self._seen and loop.time() < deadline:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), timeout=max(deadline - loop.time(), 0.001))
            if exc_type is None and self.ids:
                await self._confirm_delivery(committed_at)
        finally:
            await self._close()

    async def _confirm_delivery(self, committed_at: float) -> None:
        """As ``EventBus.settle``: every instance that trusts its caches acked, or the lease ran out."""
        default_type = self.routing_keys[0] if self.routing_keys else ""
        events = [(str(i), self._types.get(str(i), default_type)) for i in self.ids]
        redis = create_redis(self.settings)
        try:
            await await_delivery(redis, self.settings, events, committed_at)
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)


# --- helpers for durable consumers ---------------------------------------------------------------
async def process_once(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` applied ``event_id``, in the caller's transaction: True the first
    time, False for a redelivery (then skip the effect). Apply the effect in the same transaction,
    so an effect and its record commit or roll back together."""
    inserted = await conn.fetchval(
        """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)
           ON CONFLICT DO NOTHING RETURNING true""",
        consumer,
        event_id,
    )
    return bool(inserted)


def event_ids(values: Iterable[object]) -> list[str]:
    """Family ids and the like from event data, as strings (tolerates missing/None)."""
    return [str(v) for v in values if v]
