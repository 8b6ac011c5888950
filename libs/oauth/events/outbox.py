"""Writing events into the transactional outbox (relay.py publishes them).

Inside a request of a service with ``bus.setup_events``, the ids enqueued are also collected
(a context variable), so the request can have them published before it answers.
"""

from __future__ import annotations

import contextvars
import uuid

import asyncpg
import orjson

from .types import EventData

_collected: contextvars.ContextVar[list[uuid.UUID] | None] = contextvars.ContextVar("outbox_collected", default=None)


def collect(into: list[uuid.UUID]) -> contextvars.Token[list[uuid.UUID] | None]:
    """Append the id of every event enqueued from now on in this context to ``into``."""
    return _collected.set(into)


def stop_collecting(token: contextvars.Token[list[uuid.UUID] | None]) -> None:
    _collected.reset(token)


async def enqueue(conn: asyncpg.Connection, event: EventData) -> uuid.UUID:
    """Record ``event`` (its type from its class, types.py) in the caller's transaction: it is
    published only if that commits."""
    return await enqueue_message(conn, event.type, event.to_data())


async def enqueue_message(conn: asyncpg.Connection, type_: str, data: object) -> uuid.UUID:
    """The untyped form, for the bus's own tests and tools only: services publish with ``enqueue``."""
    event_id = uuid.uuid4()
    # Cast through text so this works whether or not the connection has a jsonb codec.
    await conn.execute(
        "INSERT INTO event_outbox (id, type, data) VALUES ($1, $2, $3::text::jsonb)",
        event_id,
        type_,
        orjson.dumps(data).decode(),
    )
    collected = _collected.get()
    if collected is not None:
        collected.append(event_id)
    return event_id
