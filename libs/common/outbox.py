"""Writing events into the transactional outbox (the relay that publishes them lives beside it)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson


async def enqueue(conn: asyncpg.Connection, type_: str, data: dict[str, Any]) -> uuid.UUID:
    """Record event ``type_`` in the caller's transaction: it is published only if that commits."""
    event_id = uuid.uuid4()
    # Cast through text so this works whether or not the connection has a jsonb codec.
    await conn.execute(
        "INSERT INTO event_outbox (id, type, data) VALUES ($1, $2, $3::text::jsonb)",
        event_id,
        type_,
        orjson.dumps(data).decode(),
    )
    return event_id
