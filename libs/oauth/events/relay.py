"""Publishing: the outbox relay (docs/events.md "Delivery").

``OutboxRelay`` publishes the rows that ``outbox.enqueue`` wrote in the writers' transactions, and
a ``bus.heartbeat`` every ``bus_heartbeat_interval_seconds`` behind them (lease.py). It claims
rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (several instances cooperate, none publishes a row
another is publishing), publishes them with publisher confirms, marks them published in the same
transaction, and retries with exponential backoff while the broker is away (a row is published at
least once; consumers are idempotent by id). It wakes on Postgres ``NOTIFY event_outbox`` (sent by
a trigger at commit, so a rolled-back change wakes nobody and publishes nothing), on its own
service's requests, and every ``events_relay_poll_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

import aio_pika
import asyncpg
import orjson
from prometheus_client import Counter

from libs.platform.amqp import AmqpLink
from libs.platform.config import Settings
from libs.platform.retention import delete_batch
from libs.platform.tasks import cancel_and_wait

from ..lease import BARRIER_SQL, CLOCK_ALLOWANCE_SECONDS, HEARTBEAT
from ..metrics import RELAY_LAG
from ..retention import purge_rules
from .types import Event, rfc3339

log = logging.getLogger("oauth.events")

NOTIFY_CHANNEL = "event_outbox"  # libs/oauth/migrations/0002_events_revocation.sql

EVENTS_PUBLISHED = Counter("events_published_total", "Events published by the outbox relay", ["type"])
MAINTENANCE_BATCHES = 10  # per table per maintenance round

EVENTS_PUBLISH_FAILURES = Counter("events_publish_failures_total", "Outbox publications that failed (retried)")


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
        await cancel_and_wait(self._tasks)  # not a bare cancel(): libs/platform/tasks.py
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
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, batch)
            if not rows:
                return False
            # Marking rows published need not wait for the WAL flush: a mark lost in a crash only
            # republishes the event, which consumers skip by id.
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            done, error = await self._publish_claimed(conn, exchange, [Event.from_row(r) for r in rows])
        self._count_published(rows, done)
        if error is not None:
            raise error
        return len(rows) == batch

    async def _publish_claimed(
        self, conn: asyncpg.Connection, exchange: aio_pika.abc.AbstractExchange, events: list[Event]
    ) -> tuple[list[Event], BaseException | None]:
        """Publish the claimed events concurrently and mark each outcome in the claiming
        transaction; the events published and the first failure, if any."""
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
            return done, first
        return done, None

    def _count_published(self, rows: Sequence[asyncpg.Record], done: list[Event]) -> None:
        """Metrics for the published events (count, lag since they occurred) and the recent-ids
        memory (at most 10,000)."""
        occurred = {str(r["id"]): r["occurred_at"] for r in rows}
        now = datetime.now(UTC)
        for e in done:
            EVENTS_PUBLISHED.labels(e.type).inc()
            RELAY_LAG.observe(max(0.0, (now - occurred[e.id]).total_seconds()))
            self._recent[e.id] = None
        while len(self._recent) > 10_000:
            self._recent.popitem(last=False)

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
        """Prune what nobody needs any more, about every 10 minutes (any one instance may do it):
        libs/oauth/retention.py's rules, in batches of PURGE_BATCH_SIZE rows, each its own short
        transaction, at most MAINTENANCE_BATCHES of them per table: the loop publishes nothing
        meanwhile, and `oauthctl purge` takes any backlog."""
        now = time.monotonic()
        if now - self._last_maintenance < 600:
            return
        self._last_maintenance = now
        try:
            async with self.pool.acquire() as conn:
                for rule in purge_rules(self.settings.events_outbox_retention_seconds):
                    for _ in range(MAINTENANCE_BATCHES):
                        deleted, _ = await delete_batch(conn, rule, self.settings.purge_batch_size)
                        if deleted < self.settings.purge_batch_size:
                            break
        except Exception as exc:  # PostgreSQL away or slow: next time (the relay loop must live on)
            log.warning("outbox maintenance failed", extra={"error": type(exc).__name__})
