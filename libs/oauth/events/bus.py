"""One service instance's event bus, and the CLI's waiter (docs/events.md).

``EventBus`` (``app[EVENTS]``, from ``setup_events``): the outbox relay (relay.py) and the consumer
(consumer.py) of one service instance, plus a middleware that, when a request wrote events, has
them published and acked by every instance that trusts its caches before the response goes out
(at most ``bus_lease_seconds`` after the commit). So when a revoke or a quota change returns, no
instance answers from a cache it makes wrong (docs/events.md "Liveness and delivery").
``EventWaiter`` does the same for processes without a bus (``oauthctl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aio_pika
from aiohttp import web

from libs.platform.config import Settings
from libs.platform.redis import create_redis
from libs.platform.web import AMQP, PG, READY_CHECKS, REDIS, SERVICE, SETTINGS

from ..caches import CLIENTS, attach_client_cache, detach_client_cache, drop_client
from ..lease import await_delivery, unregister
from . import outbox
from .consumer import BUS_LEASE_AGE, EventConsumer
from .relay import OutboxRelay
from .types import CLIENT_EVENTS, Event, EventData, Handler, Subscriptions, TypedHandler, decode

log = logging.getLogger("oauth.events")


class EventBus:
    """The relay (optional), the consumer and the request middleware of one service instance."""

    def __init__(self, app: web.Application, *, relay: bool) -> None:
        self.app = app
        self.with_relay = relay
        self.relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self._pending_handlers: list[tuple[str, Handler]] = []
        self._pending_resets: list[Callable[[], None]] = []
        self._after_commit: Subscriptions = {}
        self._subscribed = False

    # --- registration (at build time, once: the service's table in its app.py) --------------------
    def subscribe(self, handlers: Subscriptions, *, after_commit: Subscriptions | None = None) -> None:
        """The service's whole event table: ``handlers[cls]`` run, in order, for every event of
        type ``cls`` this instance receives (its own included, at once); ``after_commit[cls]`` for
        each event a request of this instance committed, before it answers (e.g. write revocations
        to Redis at once; the consumers repeat it, idempotently). Each message is decoded once;
        an unknown or invalid one is logged and dropped. The client cache needs every client.*
        event (``caches.drop_client``)."""
        if self._subscribed:
            raise RuntimeError("an event bus takes one subscription table (the service's app.py)")
        missing = [cls.type for cls in CLIENT_EVENTS if drop_client not in handlers.get(cls, ())]
        if missing:
            raise ValueError(f"the client cache needs caches.drop_client on {', '.join(missing)}")
        self._subscribed = True
        for cls, typed in handlers.items():
            self._pending_handlers.append((cls.type, _dispatcher(cls, tuple(typed))))
        self._after_commit = dict(after_commit or {})

    def on_reset(self, hook: Callable[[], None]) -> None:
        self._pending_resets.append(hook)

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
            await self._run_after_commit(event)
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

    async def _run_after_commit(self, event: Event) -> None:
        handlers = [h for cls, hs in self._after_commit.items() if cls.type == event.type for h in hs]
        if not handlers:
            return
        data = _decoded(event)
        for handler in handlers if data is not None else ():
            try:
                await handler(data)
            except Exception:
                log.exception("after-commit handler failed", extra={"type": event.type})


def _decoded(event: Event) -> EventData | None:
    try:
        return decode(event)
    except ValueError as exc:
        log.error("dropping an invalid event", extra={"type": event.type, "event_id": event.id, "error": str(exc)})
        return None


def _dispatcher(cls: type[EventData], handlers: tuple[TypedHandler, ...]) -> Handler:
    """The consumer's handler for ``cls``: decode once, then every typed handler in order (a failure
    is re-raised after the others ran, so the consumer drops its caches)."""

    async def dispatch(event: Event) -> None:
        data = _decoded(event)
        if data is None or not isinstance(data, cls):
            return
        failure: Exception | None = None
        for handler in handlers:
            try:
                await handler(data)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    return dispatch


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


def setup_events(app: web.Application, *, relay: bool = True) -> EventBus:
    """Give a service instance its event bus (``app[EVENTS]``): the outbox relay (when the service
    writes events), the cache-invalidation consumer, the settle middleware, and the client cache of
    ``libs.contracts.account.get_client``. Call after ``create_app``; the service's app.py then hands
    the bus its event table (``EventBus.subscribe``, client.* events to ``caches.drop_client``)."""
    bus = EventBus(app, relay=relay)
    app[EVENTS] = bus
    app.middlewares.append(settle_middleware)
    bus.on_reset(CLIENTS.clear)

    async def bus_ready() -> str | None:
        return None if bus.live else "degraded"  # the caches are bypassed, not wrong

    app[READY_CHECKS]["bus"] = bus_ready

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        attach_client_cache(bus, app[SETTINGS].cache_ttl_seconds)
        await bus.start()
        yield
        await bus.stop()
        detach_client_cache(bus)

    app.cleanup_ctx.append(ctx)
    return bus


# --- for processes without a bus (the CLI) ------------------------------------------------------
class EventWaiter:
    """Make a change from outside the services (``oauthctl``) visible everywhere before returning:

        async with EventWaiter(settings, ["user.disabled"]), conn.transaction():
            ...  # outbox.enqueue(conn, UserDisabled(...))

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
