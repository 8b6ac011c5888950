"""Events with the real broker: the message format, the outbox (a rolled-back change publishes
nothing; an event written while RabbitMQ is unreachable is delivered once it is back, through a TCP
proxy cut between the relay and RabbitMQ), several relays publishing each event once, and
consumers applying a redelivered event once (the per-instance consumer and the example durable
consumer)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import orjson
import pytest

from examples.event_consumer import consume
from libs.oauth.events import outbox
from libs.oauth.events.bus import EVENTS
from libs.oauth.events.consumer import EventConsumer, process_once
from libs.oauth.events.relay import OutboxRelay
from libs.oauth.events.types import Event, topic_matches
from libs.platform.amqp import AmqpLink
from libs.platform.config import Settings
from tests.support.events import TcpProxy, Watcher, scratch_database
from tests.support.stack import Stack, until


async def write_event(db: asyncpg.Pool, type_: str, data: dict) -> str:
    async with db.acquire() as conn, conn.transaction():
        return str(await outbox.enqueue_message(conn, type_, data))


async def publish_raw(settings: Settings, body: bytes, routing_key: str, message_id: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await exchange.publish(aio_pika.Message(body, message_id=message_id), routing_key=routing_key)
    finally:
        await connection.close()


def test_topic_matching() -> None:
    assert topic_matches("quota.changed", "quota.changed")
    assert topic_matches("client.*", "client.secret_rotated") and not topic_matches("client.*", "client")
    assert (
        topic_matches("#", "user.disabled") and topic_matches("user.#", "user") and topic_matches("user.#", "user.a.b")
    )
    assert not topic_matches("user.*", "quota.changed") and not topic_matches("*.changed", "a.b.changed")


# --- publication -----------------------------------------------------------------------------------
async def test_message_format(stack: Stack, db, settings) -> None:
    async with Watcher(settings, ["test.format"]) as watcher:
        event_id = await write_event(db, "test.format", {"n": 1, "who": "测试"})
        event = await watcher.wait_for(event_id)
    assert set(event) == {"id", "type", "occurred_at", "data"}
    assert event["type"] == "test.format" and event["data"] == {"n": 1, "who": "测试"}
    assert event["occurred_at"].endswith("Z") and event["occurred_at"][:2] == "20"
    message = watcher.messages[watcher.ids().index(event_id)]
    assert message.routing_key == "test.format" and message.message_id == event_id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT and message.content_type == "application/json"
    sql = "SELECT attempts FROM event_outbox WHERE id = $1::uuid AND published_at IS NOT NULL"
    for _ in range(100):  # marked published in the relay's transaction, right after the confirm
        if (attempts := await db.fetchval(sql, event_id)) is not None:
            break
        await asyncio.sleep(0.01)
    assert attempts == 1


async def test_rolled_back_change_publishes_nothing(stack: Stack, db, settings) -> None:
    async with Watcher(settings, ["test.rollback"]) as watcher:
        with pytest.raises(RuntimeError):
            async with db.acquire() as conn, conn.transaction():
                ghost = str(await outbox.enqueue_message(conn, "test.rollback", {"n": "ghost"}))
                raise RuntimeError("the change fails after its event was written")
        later = await write_event(db, "test.rollback", {"n": "later"})
        await watcher.wait_for(later)
        await asyncio.sleep(0.3)  # any stray publication would be here by now
    assert ghost not in watcher.ids() and watcher.ids() == [later]
    assert await db.fetchval("SELECT count(*) FROM event_outbox WHERE id = $1::uuid", ghost) == 0


async def test_each_event_is_published_once_by_several_relays(stack: Stack, db, settings) -> None:
    """Three services' relays share the outbox (FOR UPDATE SKIP LOCKED): 200 events, 200 messages."""
    async with Watcher(settings, ["test.many"]) as watcher:
        ids: list[str] = []
        for batch in range(20):
            async with db.acquire() as conn, conn.transaction():
                for i in range(10):
                    ids.append(str(await outbox.enqueue_message(conn, "test.many", {"batch": batch, "i": i})))
        await until(lambda: len(watcher.events) >= len(ids))
        await asyncio.sleep(0.3)
    assert sorted(watcher.ids()) == sorted(ids)  # each exactly once


async def test_a_request_answers_after_its_events_are_published(stack: Stack, http, db, settings) -> None:
    """The settle step: when a change's HTTP call returns, its event is already at the broker."""
    from tests.support.factories import make_developer

    _, dev = await make_developer(db, settings)
    headers = {"Authorization": f"Bearer {dev}"}
    async with Watcher(settings, ["client.*"]) as watcher:
        body = {"name": "Settle", "redirect_uri": "https://s.example/cb"}
        async with http.post(f"{stack.base}/api/oauth_apps", json=body, headers=headers) as r:
            created = (await r.json())["data"]
        event_id = await db.fetchval(
            "SELECT id::text FROM event_outbox WHERE type = 'client.updated' AND data->>'client_id' = $1",
            created["client_id"],
        )
        assert await db.fetchval("SELECT published_at FROM event_outbox WHERE id = $1::uuid", event_id) is not None
        await watcher.wait_for(event_id, within=1)


# --- a broker outage between the relay and RabbitMQ ------------------------------------------------
@pytest.fixture
async def isolated(settings: Settings) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """A database of its own, so that only the relay under test publishes its events."""
    async with scratch_database(settings) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        assert pool is not None
        try:
            yield settings.model_copy(update={"database_url": url, "events_retry_max_seconds": 0.5}), pool
        finally:
            await pool.close()


async def test_event_written_during_an_outage_is_delivered_when_rabbitmq_is_back(settings, isolated) -> None:
    local, pool = isolated
    proxy = TcpProxy.for_url(settings.amqp_url)
    await proxy.open()
    link = AmqpLink(proxy.url(settings.amqp_url), name="relay-under-test", retry_max_seconds=0.5)
    relay = OutboxRelay(pool, link, local, name="relay-under-test")
    await relay.start()
    await link.start()
    try:
        async with Watcher(settings, ["test.outage"]) as watcher:  # straight to RabbitMQ
            before = await write_event(pool, "test.outage", {"n": "before"})
            await watcher.wait_for(before)

            await proxy.close()  # RabbitMQ unreachable from the relay (the broker itself keeps running)
            for _ in range(100):
                if not link.is_up:
                    break
                await asyncio.sleep(0.01)
            during = await write_event(pool, "test.outage", {"n": "during"})
            await asyncio.sleep(1.5)  # the relay keeps trying, with backoff
            assert during not in watcher.ids()
            row = await pool.fetchrow("SELECT published_at FROM event_outbox WHERE id = $1::uuid", during)
            assert row["published_at"] is None

            reopened = time.perf_counter()
            await proxy.open()
            event = await watcher.wait_for(during, within=10)
            print(f"\ndelivered {time.perf_counter() - reopened:.2f} s after RabbitMQ became reachable again")
            assert event["data"] == {"n": "during"}
            await asyncio.sleep(0.3)
            assert watcher.ids().count(during) == 1
        assert await pool.fetchval("SELECT published_at FROM event_outbox WHERE id = $1::uuid", during) is not None
    finally:
        await relay.stop()
        await link.close()
        await proxy.close()


async def test_publish_failure_mid_batch_is_retried(settings, isolated) -> None:
    """Rows whose publication failed stay unpublished (attempts counted) and go out on a retry."""
    local, pool = isolated
    link = AmqpLink(settings.amqp_url, name="relay-batch")
    relay = OutboxRelay(pool, link, local, name="relay-batch")
    async with Watcher(settings, ["test.batch"]) as watcher:
        ids = [await write_event(pool, "test.batch", {"i": i}) for i in range(3)]
        with pytest.raises(ConnectionError):
            relay._exchange = _Failing()  # type: ignore[assignment]  # a broker that refuses
            relay.link.connected.set()
            relay.link.connection = object()  # type: ignore[assignment]
            await relay.drain()
        attempts = await pool.fetch("SELECT attempts, published_at FROM event_outbox ORDER BY occurred_at")
        assert [(r["attempts"], r["published_at"]) for r in attempts] == [(1, None)] * 3
        relay.link.connected.clear()
        relay.link.connection = None
        await relay.start()
        await link.start()
        try:
            for event_id in ids:
                await watcher.wait_for(event_id)
        finally:
            await relay.stop()
            await link.close()


class _Failing:
    async def publish(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("broker refused")


# --- consumers: a redelivered event is applied once ------------------------------------------------
async def test_instance_consumer_applies_a_redelivered_event_once(settings) -> None:
    link = AmqpLink(settings.amqp_url, name="consumer-under-test")
    consumer = EventConsumer(link, settings, name="consumer-under-test")
    applied: list[str] = []

    async def handler(event: Event) -> None:
        applied.append(event.id)

    consumer.subscribe("test.redelivery", handler)
    await link.start()
    try:
        for _ in range(200):
            if consumer.live:
                break
            await asyncio.sleep(0.02)
        assert consumer.live
        event = Event(str(uuid.uuid4()), "test.redelivery", "2026-01-01T00:00:00.000000Z", {"n": 1})
        for _ in range(3):  # redelivered or republished: same id
            await publish_raw(settings, event.body(), event.type, event.id)
        other = Event(str(uuid.uuid4()), "test.redelivery", "2026-01-01T00:00:01.000000Z", {"n": 2})
        await publish_raw(settings, other.body(), other.type, other.id)
        await publish_raw(settings, b"not an event", "test.redelivery", "x")  # dropped, not fatal
        for _ in range(200):
            if other.id in applied:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert applied == [event.id, other.id]
        assert consumer.live
    finally:
        await link.close()
    assert not consumer.live


async def test_process_once_in_the_effects_transaction(db) -> None:
    event_id = str(uuid.uuid4())
    async with db.acquire() as conn:
        async with conn.transaction():
            assert await process_once(conn, "billing-test", event_id) is True
        async with conn.transaction():
            assert await process_once(conn, "billing-test", event_id) is False
        assert await process_once(conn, "audit-test", event_id) is True  # per consumer
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                other = str(uuid.uuid4())
                assert await process_once(conn, "billing-test", other) is True
                raise RuntimeError("the effect failed: the record rolls back with it")
        async with conn.transaction():
            assert await process_once(conn, "billing-test", other) is True


async def test_example_durable_consumer(stack: Stack, db, settings) -> None:
    """examples/event_consumer.py: a durable queue (events wait while it is stopped), manual ack,
    a failed handler retried, a redelivered event applied once."""
    queue = f"{settings.events_exchange}.example-{uuid.uuid4().hex[:6]}"
    applied: list[tuple[str, int]] = []
    failures = {"left": 1}

    async def handler(conn: asyncpg.Connection, event: dict) -> None:
        if event["data"].get("fail_once") and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a transient failure")
        applied.append((event["id"], event["data"]["n"]))

    async def run(stop: asyncio.Event, ready: asyncio.Event) -> None:
        await consume(
            amqp_url=settings.amqp_url,
            database_url=settings.database_url,
            exchange=settings.events_exchange,
            queue=queue,
            routing_keys=["test.example.#"],
            handler=handler,
            stop=stop,
            ready=ready,
        )

    import examples.event_consumer as example

    example.RETRY_PAUSE_SECONDS = 0.05
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        first = await write_event(db, "test.example.a", {"n": 1})
        await until(lambda: len(applied) == 1)
        stop.set()
        await task
        # Stopped: events wait in the durable queue, including a duplicate and a failing one.
        second = await write_event(db, "test.example.b", {"n": 2, "fail_once": True})
        await publish_raw(
            settings,
            orjson.dumps({"id": first, "type": "test.example.a", "occurred_at": "x", "data": {"n": 1}}),
            "test.example.a",
            first,
        )
        await asyncio.sleep(0.3)  # published by the services' relays meanwhile
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop, asyncio.Event()))
        await until(lambda: len(applied) == 2)
        await asyncio.sleep(0.3)
        assert applied == [(first, 1), (second, 2)] and failures["left"] == 0
    finally:
        stop.set()
        await task
        connection = await aio_pika.connect(settings.amqp_url)
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await connection.close()


# --- the service instances -------------------------------------------------------------------------
async def test_every_instance_has_its_own_exclusive_queue(stack: Stack) -> None:
    names = {
        service: stack.runners[service].app[EVENTS].consumer.queue_name for service in ("account", "authz", "token")
    }
    assert len(set(names.values())) == 3 and all(
        n.startswith(stack.settings.events_exchange + ".cache.") for n in names.values()
    )
    assert "quota.changed" in stack.runners["account"].app[EVENTS].consumer.bindings
    # Each binds exactly the types of its service's event table (app.py).
    assert stack.runners["authz"].app[EVENTS].consumer.bindings == [
        "client.deleted",
        "client.secret_rotated",
        "client.updated",
    ]
