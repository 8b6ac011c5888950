"""The event message (docs/events.md has every type's schema): ``Event`` is ``{id, type,
occurred_at, data}`` as persistent JSON on the durable topic exchange ``settings.events_exchange``,
routing key = type, ``message_id`` = id. Publishers write events with ``outbox.enqueue``; the relay
(relay.py) publishes them, each instance's consumer (consumer.py) applies them, bus.py ties both
to a service instance."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson

# The event types of docs/events.md.
EVENT_TYPES = (
    "authorization.revoked",
    "token.revoked",
    "client.updated",
    "client.deleted",
    "client.secret_rotated",
    "user.updated",
    "user.disabled",
    "quota.changed",
)

Handler = Callable[["Event"], Awaitable[None]]


# --- the message ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    id: str
    type: str
    occurred_at: str  # RFC 3339, UTC
    data: dict[str, Any]

    def body(self) -> bytes:
        return orjson.dumps({"id": self.id, "type": self.type, "occurred_at": self.occurred_at, "data": self.data})

    def message(self) -> aio_pika.Message:
        return aio_pika.Message(
            self.body(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=self.id,
            type=self.type,
            timestamp=datetime.fromisoformat(self.occurred_at.replace("Z", "+00:00")),
        )

    @classmethod
    def from_body(cls, body: bytes) -> Event:
        """Parse a message body; ``ValueError`` if it is not an event."""
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError("not JSON") from exc
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        event_id, type_, occurred_at, data = raw.get("id"), raw.get("type"), raw.get("occurred_at"), raw.get("data")
        if not (isinstance(event_id, str) and isinstance(type_, str) and isinstance(occurred_at, str)):
            raise ValueError("id, type and occurred_at must be strings")
        if not isinstance(data, dict):
            raise ValueError("data must be an object")
        uuid.UUID(event_id)  # ValueError if malformed
        return cls(event_id, type_, occurred_at, data)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Event:
        data = row["data"]
        if isinstance(data, str):  # read as ::text (works with or without a jsonb codec)
            data = orjson.loads(data)
        return cls(str(row["id"]), row["type"], rfc3339(row["occurred_at"]), dict(data))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=1024)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    p, k = pattern.split("."), routing_key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and match(i + 1, j + 1)

    return match(0, 0)


def event_ids(values: Iterable[object]) -> list[str]:
    """Family ids and the like from event data, as strings (tolerates missing/None)."""
    return [str(v) for v in values if v]
