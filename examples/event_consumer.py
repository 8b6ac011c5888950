"""A durable consumer of the platform's events: copy this into an internal service (billing, audit,
notifications). docs/events.md describes every event.

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ DATABASE_URL=postgresql://postgres@127.0.0.1/billing \\
    python -m examples.event_consumer --queue billing.quota --bind quota.changed --bind user.disabled

What it does, and why:
- a **durable queue of its own** (``--queue``), bound to the routing keys it wants (``--bind``,
  topic patterns: ``quota.changed``, ``user.*``, ``#``): events published while the consumer is
  stopped wait in the queue (unlike the platform's per-instance cache queues, which are exclusive);
- **manual ack**, after the effect has committed: a crash before the ack redelivers the event;
- **idempotent by event id**: the id is recorded in ``processed_events`` *in the same database
  transaction as the effect*, so a redelivered (or republished: delivery is at least once) event is
  applied once. Keep that table in the consumer's own database;
- a handler that fails is retried (nack with requeue, after a pause); a message that is not an
  event is dropped (reject without requeue; bind a dead-letter exchange to keep them);
- ``connect_robust`` reconnects after a broker outage and re-declares the queue and its bindings.

Events are not ordered across instances of the platform: use the state an event carries (e.g.
``quota.changed`` has the new ``quota`` and ``used_quota``) rather than counting on order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import asyncpg

log = logging.getLogger("event_consumer")

Handler = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[None]]

PROCESSED_DDL = """
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)
"""
RETRY_PAUSE_SECONDS = 1.0


def parse_event(body: bytes) -> dict[str, Any]:
    """``{id, type, occurred_at, data}``, or ValueError."""
    event = json.loads(body)
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise ValueError("not an event")
    for field in ("id", "type", "occurred_at"):
        if not isinstance(event.get(field), str):
            raise ValueError(f"event without {field}")
    uuid.UUID(event["id"])
    return event


async def example_handler(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """Replace with your effect; use ``conn`` (the transaction that records the event id)."""
    data = event["data"]
    if event["type"] == "quota.changed":
        log.info("user %s: quota %s, used %s (%s)", data["user_id"], data["quota"], data["used_quota"], data["reason"])
    else:
        log.info("%s %s", event["type"], data)


async def consume(
    *,
    amqp_url: str,
    database_url: str,
    exchange: str,
    queue: str,
    routing_keys: Sequence[str],
    handler: Handler = example_handler,
    consumer_name: str | None = None,
    prefetch: int = 20,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Consume until ``stop`` is set (or forever); ``ready`` is set once the queue is bound."""
    name = consumer_name or queue
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=max(2, prefetch // 4))
    assert pool is not None
    await pool.execute(PROCESSED_DDL)
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(queue, durable=True)
        for key in routing_keys:
            await q.bind(ex, routing_key=key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            try:
                event = parse_event(message.body)
            except ValueError:
                log.error("dropping a message that is not an event")
                await message.reject(requeue=False)
                return
            try:
                async with pool.acquire() as conn, conn.transaction():
                    first = await conn.fetchval(
                        """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)
                           ON CONFLICT DO NOTHING RETURNING true""",
                        name,
                        event["id"],
                    )
                    if first:
                        await handler(conn, event)
                    else:
                        log.info("event %s already applied, skipping", event["id"])
            except Exception:
                log.exception("handling event %s failed; it will be retried", event["id"])
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                await message.nack(requeue=True)
                return
            await message.ack()

        tag = await q.consume(on_message)
        if ready is not None:
            ready.set()
        log.info("consuming %s from %s bound to %s", queue, exchange, ", ".join(routing_keys))
        await (stop or asyncio.Event()).wait()
        await q.cancel(tag)
    finally:
        await connection.close()
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Consume the OAuth platform's events into a durable queue.")
    parser.add_argument("--queue", required=True, help="your durable queue, e.g. billing.quota")
    parser.add_argument("--bind", action="append", required=True, help="routing key pattern (repeat)")
    parser.add_argument("--exchange", default=os.environ.get("EVENTS_EXCHANGE", "oauth.events"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await consume(
            amqp_url=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            database_url=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/oauth"),
            exchange=args.exchange,
            queue=args.queue,
            routing_keys=args.bind,
            stop=stop,
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
