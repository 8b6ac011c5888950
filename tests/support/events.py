"""Test helpers for events: changes made behind the services' back that still reach their caches,
a TCP proxy that cuts, blackholes or slows a dependency for one process, a scratch database, and a queue to watch."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson

from libs.oauth.events import outbox
from libs.oauth.events.bus import EventWaiter
from libs.oauth.events.types import EventData
from libs.platform.config import Settings
from libs.platform.migrate import apply_all
from oauthctl.components import MIGRATIONS


async def changed(
    db: asyncpg.Pool,
    settings: Settings,
    event: EventData,
    change: Callable[[asyncpg.Connection], Awaitable[Any]],
) -> None:
    """Run ``change`` (a call into the owning service's store) and write ``event`` in one
    transaction, the way the services change things, and return once the event came round through
    RabbitMQ (so every instance's cache has it)."""
    async with EventWaiter(settings, [event.type]), db.acquire() as conn, conn.transaction():
        await change(conn)
        await outbox.enqueue(conn, event)


DEFAULT_PORTS = {"amqp": 5672, "postgresql": 5432, "postgres": 5432, "redis": 6379}


class TcpProxy:
    """A loopback TCP proxy in front of RabbitMQ, PostgreSQL or Redis that fails the way networks
    and overloaded servers do:

    - ``close()`` cuts: every connection is dropped at once and new ones are refused (``open()``
      listens again on the same port);
    - ``blackhole()``: connections are accepted and stay open, but no byte passes either way (a
      partition, or a broker in a memory alarm); ``heal()`` lets the held bytes through, as TCP
      would after a short partition;
    - ``slow(delay)``: every chunk is delivered ``delay`` seconds late, in order (a slow network or
      a slow consumer), until ``heal()``.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS.get(parts.scheme, 5672))

    def url(self, url: str) -> str:
        """``url`` pointed at the proxy (credentials, path and query kept)."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    # --- modes ------------------------------------------------------------------------------------
    def blackhole(self) -> None:
        self._flowing.clear()

    def slow(self, delay: float) -> None:
        self.delay = delay

    def heal(self) -> None:
        self.delay = 0.0
        self._flowing.set()

    # --- lifetime ---------------------------------------------------------------------------------
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

    async def __aenter__(self) -> TcpProxy:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.heal()
        await self.close()

    # --- the pipes --------------------------------------------------------------------------------
    async def _read(self, reader: asyncio.StreamReader, chunks: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((asyncio.get_running_loop().time() + self.delay, data))
        except ConnectionError:
            pass
        finally:
            chunks.put_nowait((0.0, b""))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        reading = asyncio.create_task(self._read(reader, chunks))
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                await self._flowing.wait()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            reading.cancel()
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
        await apply_all(url, MIGRATIONS, log=lambda m: None)
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
