"""Test helpers for events: changes made behind the services' back that still reach their caches,
a TCP proxy to cut RabbitMQ off from one process, a scratch database, and a queue to watch."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson

from libs.common import outbox
from libs.common.config import Settings
from libs.common.events import EventWaiter
from libs.common.migrate import apply_all


async def changed(
    db: asyncpg.Pool, settings: Settings, event_type: str, data: dict[str, Any], sql: str, *args: Any
) -> None:
    """Run ``sql`` and write ``event_type`` in one transaction, the way the services change things,
    and return once the event came round through RabbitMQ (so every instance's cache has it)."""
    async with EventWaiter(settings, [event_type]), db.acquire() as conn, conn.transaction():
        await conn.execute(sql, *args)
        await outbox.enqueue(conn, event_type, data)


class TcpProxy:
    """A loopback TCP proxy that can be closed (dropping every connection at once, like a broker or
    network outage) and reopened on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, amqp_url: str) -> TcpProxy:
        parts = urlsplit(amqp_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672)

    def url(self, amqp_url: str) -> str:
        parts = urlsplit(amqp_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()
        if server is not None:
            await server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, up_writer}
        tasks = {
            asyncio.create_task(self._pipe(client_reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, client_writer)),
        }
        self._tasks |= tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks -= tasks
        self._writers -= {client_writer, up_writer}


@contextlib.asynccontextmanager
async def scratch_database(settings: Settings) -> AsyncIterator[str]:
    """A new, migrated database beside the session's (for a relay no other service shares)."""
    parts = urlsplit(settings.database_url)
    name = f"{parts.path.lstrip('/')}_x{secrets.token_hex(3)}"
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        await apply_all(url, log=lambda m: None)
        yield url
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


class Watcher:
    """A queue of the test's own on the session's exchange, bound to ``routing_keys``: what was
    published, in order (``events``), with a way to wait for a given id."""

    def __init__(self, settings: Settings, routing_keys: list[str], *, durable_name: str | None = None) -> None:
        self.settings = settings
        self.routing_keys = routing_keys
        self.durable_name = durable_name
        self.events: list[dict[str, Any]] = []
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> Watcher:
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        if self.durable_name:
            queue = await channel.declare_queue(self.durable_name, durable=True, auto_delete=True)
        else:
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in self.routing_keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self.events.append(orjson.loads(message.body))
        self._arrived.set()

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    async def wait_for(self, event_id: str, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for e in self.events:
                    if e["id"] == event_id:
                        return e
                self._arrived.clear()
                await self._arrived.wait()

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()
