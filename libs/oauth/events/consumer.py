"""Consuming: this instance's cache-invalidation queue (docs/events.md "Liveness and delivery").

``EventConsumer``: an exclusive, auto-deleted queue per instance, bound to the routing keys its
handlers subscribed to (and ``bus.heartbeat``); messages applied one at a time in queue order,
manual ack after the handlers ran, an ack in Redis for the writers (lease.py); duplicates (same id)
are acknowledged and skipped. ``live`` is true only while the queue is consumed *and* the bus lease
is fresh: caches trust themselves only then, and ``generation`` changes at every transition, so an
answer loaded before one is never stored after it.

Durable queues for downstream consumers (billing, audit) are theirs to declare: see
``examples/event_consumer.py`` and ``process_once`` below.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

import aio_pika
import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from libs.platform.amqp import AmqpLink
from libs.platform.config import Settings

from ..lease import HEARTBEAT, Horizon, ack, register, unregister
from .types import Event, Handler, topic_matches

log = logging.getLogger("oauth.events")

EVENTS_RECEIVED = Counter("events_received_total", "Events received by this instance's consumer", ["type"])
BUS_LEASE_AGE = Gauge(
    "bus_lease_age_seconds", "Age of the newest bus heartbeat this instance applied (+Inf: none)", ["consumer"]
)
EVENTS_DUPLICATES = Counter(
    "events_duplicates_total",
    "Events skipped because this instance had applied them already (redeliveries, its own events)",
)


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
