"""The RabbitMQ link of a service process: one connection, supervised in the background.

The service starts and serves while the broker is down (readiness reports it). The link connects,
runs its ``on_connect`` hooks (the outbox relay opens its publishing channel, the event consumer
declares its exclusive queue), and when the connection is lost it calls the ``on_disconnect`` hooks
*at once* (the consumer stops trusting its caches) and reconnects with exponential backoff.

A plain (not "robust") aio-pika connection is used on purpose: aio-pika's robust connection
neither reports a lost connection through ``is_closed`` nor replays failed publications, and it
reconnects on its own schedule; here every piece of state is rebuilt by the hooks, so a reconnect
is a clean start with a known moment at which caches become trustworthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq

from .tasks import cancel_and_wait

log = logging.getLogger("oauth.amqp")

ConnectHook = Callable[[aio_pika.abc.AbstractConnection], Awaitable[None]]
DisconnectHook = Callable[[], None]

# What a broker outage looks like to the client (refused, reset, timed out, or an AMQP-level error).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    ConnectionError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    RuntimeError,  # aio-pika: "Connection was not opened" on a channel of a dropped connection
)


class AmqpLink:
    """A RabbitMQ connection that is (re)established in the background."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "oauth",
        retry_initial_seconds: float = 0.2,
        retry_max_seconds: float = 5.0,
        connect_timeout_seconds: float = 5.0,
        heartbeat_seconds: int = 5,
    ) -> None:
        self.url = url
        self.name = name
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.connect_timeout = connect_timeout_seconds
        self.heartbeat = heartbeat_seconds
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.connected = asyncio.Event()
        self._connect_hooks: list[ConnectHook] = []
        self._disconnect_hooks: list[DisconnectHook] = []
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closing = False

    # --- hooks ------------------------------------------------------------------------------------
    def on_connect(self, hook: ConnectHook) -> None:
        """Run ``hook(connection)`` after every (re)connection; if it fails, the link reconnects."""
        self._connect_hooks.append(hook)

    def on_disconnect(self, hook: DisconnectHook) -> None:
        """Call ``hook()`` as soon as the connection is lost (synchronously, from the event loop)."""
        self._disconnect_hooks.append(hook)

    # --- lifetime ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"amqp-link:{self.name}")

    @property
    def is_up(self) -> bool:
        return self.connected.is_set() and self.connection is not None

    async def check(self) -> None:
        if not self.is_up:
            raise ConnectionError("rabbitmq not connected")

    def drop(self) -> None:
        """Treat the connection as lost (a hook saw a broken channel): reconnect from scratch."""
        self._lost.set()

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        await cancel_and_wait([self._task])  # not a bare cancel(): tasks.py
        await self._teardown()

    # --- the supervisor ---------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.retry_initial
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:  # the broker is away, or a hook failed: start again later
                await self._teardown()
                if isinstance(exc, BROKER_ERRORS):
                    log.warning(
                        "rabbitmq unreachable, retrying",
                        extra={"link": self.name, "error": type(exc).__name__, "retry_in": delay},
                    )
                else:
                    log.exception("rabbitmq link setup failed", extra={"link": self.name, "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            await self._lost.wait()
            await self._teardown()
            if not self._closing:
                log.warning("rabbitmq connection lost, reconnecting", extra={"link": self.name})
                await asyncio.sleep(self.retry_initial)

    async def _connect(self) -> None:
        self._lost.clear()
        # AMQP heartbeats (AMQP 0-9-1 4.2.7): a broker that stops answering while the socket stays
        # open is noticed within about two heartbeat periods, not when the OS gives up on the socket.
        connection = await aio_pika.connect(
            self.url,
            timeout=self.connect_timeout,
            client_properties={"connection_name": self.name},
            heartbeat=self.heartbeat,
        )
        self.connection = connection
        connection.close_callbacks.add(self._on_close)
        for hook in self._connect_hooks:
            await hook(connection)
        if self._lost.is_set():  # lost while the hooks ran
            raise ConnectionError("rabbitmq connection lost during setup")
        self.connected.set()
        log.info("rabbitmq connected", extra={"link": self.name})

    def _on_close(self, _sender: object, _exc: BaseException | None = None) -> None:
        self._mark_lost()
        self._lost.set()

    def _mark_lost(self) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        for hook in self._disconnect_hooks:
            try:
                hook()
            except Exception:
                log.exception("amqp disconnect hook failed")
        if was_up:
            log.debug("rabbitmq link down", extra={"link": self.name})

    async def _teardown(self) -> None:
        connection, self.connection = self.connection, None
        self._mark_lost()
        if connection is not None:
            connection.close_callbacks.discard(self._on_close)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
