"""The events (docs/events.md has every type's schema): one frozen dataclass per type
(``EventData`` subclasses: ``TokenRevoked``, ``QuotaChanged`` ...), and the message ``Event``,
``{id, type, occurred_at, data}`` as persistent JSON on the durable topic exchange
``settings.events_exchange``, routing key = type, ``message_id`` = id. Publishers write an event
object with ``outbox.enqueue``; the relay (relay.py) publishes it, each instance's consumer
(consumer.py) receives the message, and the bus (bus.py) decodes it once and hands the typed
object to the service's subscribers."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from types import UnionType
from typing import Any, ClassVar, Self, get_args, get_origin, get_type_hints

import aio_pika
import asyncpg
import orjson


# --- the events (docs/events.md "Types"): one frozen dataclass per type, used by publishers
# (``outbox.enqueue(conn, TokenRevoked(...))``) and subscribers (handlers receive the object).
@dataclass(frozen=True)
class EventData:
    """The ``data`` of one event type; ``type`` (the routing key) comes from the class.

    ``to_data`` is the wire form (docs/events.md): fields in order, tuples as lists, and a field
    listed in ``OMIT_WHEN_NONE`` left out when None. ``from_data`` checks each field's JSON type
    (extra keys are ignored: newer publishers may add fields) and raises ``ValueError``."""

    type: ClassVar[str]
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OMIT_WHEN_NONE:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Self:
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING:
                    raise ValueError(f"{cls.type}: {f.name} is missing")
                continue
            values[f.name] = _checked(cls.type, f.name, hints[f.name], data[f.name])
        return cls(**values)


def _fits(option: Any, value: Any) -> bool:
    """Does ``value`` have the JSON type of one type-hint ``option``?"""
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is str:
        return isinstance(value, str)
    if get_origin(option) is dict:
        return isinstance(value, dict)
    return get_origin(option) is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value)


def _checked(event_type: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` if it has the JSON type ``hint`` says (int, str, bool, X | None, tuple[str, ...])."""
    options = get_args(hint) if isinstance(hint, UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if _fits(option, value):
            return tuple(value) if isinstance(value, list) else value
    raise ValueError(f"{event_type}: {name} has the wrong type")


@dataclass(frozen=True)
class AuthorizationRevoked(EventData):
    """A user revoked an app (``user_revoked``), the app was deleted (``client_deleted``,
    ``user_id`` None: every user), or a password reset revoked every app of the user
    (``password_reset``, ``client_id`` None: every app)."""

    type: ClassVar[str] = "authorization.revoked"
    user_id: int | None
    client_id: str | None
    family_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class TokenRevoked(EventData):
    """A whole family (``family_id``) or one access token (``jti``, with ``expires_at``)."""

    type: ClassVar[str] = "token.revoked"
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"expires_at"})
    family_id: str | None
    jti: str | None
    token_type: str  # refresh_token | access_token
    reason: str  # revoked_by_client | refresh_reuse | code_replay
    client_id: str
    user_id: int | None
    expires_at: int | None = None  # unix seconds, with jti only


@dataclass(frozen=True)
class ClientUpdated(EventData):
    type: ClassVar[str] = "client.updated"
    app_id: int
    client_id: str
    change: str  # created | updated | internal | verified | unverified


@dataclass(frozen=True)
class ClientDeleted(EventData):
    type: ClassVar[str] = "client.deleted"
    app_id: int
    client_id: str
    family_ids: tuple[str, ...]


@dataclass(frozen=True)
class ClientSecretRotated(EventData):
    type: ClassVar[str] = "client.secret_rotated"
    app_id: int
    client_id: str


@dataclass(frozen=True)
class UserUpdated(EventData):
    type: ClassVar[str] = "user.updated"
    user_id: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class UserDisabled(EventData):
    type: ClassVar[str] = "user.disabled"
    user_id: int
    family_ids: tuple[str, ...]
    was_active: bool


@dataclass(frozen=True)
class QuotaChanged(EventData):
    type: ClassVar[str] = "quota.changed"
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"idempotency_key", "client_id", "grant", "spend_limit", "spend_period", "spent_in_period"}
    )
    user_id: int
    delta: int
    quota: int
    used_quota: int
    reason: str  # topup | consume | credit | spend | spend_limit | the caller's label
    idempotency_key: str | None = None  # the internal API and charges
    # An app's charge or a spending-limit change (docs/spending.md): the app and the grant.
    client_id: str | None = None
    grant: dict[str, Any] | None = None  # {"user_id", "client_id"[, "family_id"]}
    spend_limit: int | None = None  # minor units; None once stopped
    spend_period: str | None = None  # once | daily | monthly
    spent_in_period: int | None = None  # a charge only

    def to_data(self) -> dict[str, Any]:
        """An app's event carries ``spend_limit`` and ``spend_period`` even when null (a limit
        stopped); other balance changes leave the app's fields out (docs/events.md)."""
        out = super().to_data()
        if self.client_id is not None:
            out.setdefault("spend_limit", None)
            out.setdefault("spend_period", None)
        return out


EVENT_CLASSES: dict[str, type[EventData]] = {
    cls.type: cls
    for cls in (
        AuthorizationRevoked,
        TokenRevoked,
        ClientUpdated,
        ClientDeleted,
        ClientSecretRotated,
        UserUpdated,
        UserDisabled,
        QuotaChanged,
    )
}
EVENT_TYPES = tuple(EVENT_CLASSES)  # the event types of docs/events.md

# The client.* events: every service's client cache needs them all (bus.EventBus.subscribe).
ClientEvent = ClientUpdated | ClientDeleted | ClientSecretRotated
CLIENT_EVENTS: tuple[type[EventData], ...] = (ClientUpdated, ClientDeleted, ClientSecretRotated)

Handler = Callable[["Event"], Awaitable[None]]  # the consumer's: a raw message (consumer.py)
TypedHandler = Callable[[Any], Awaitable[None]]  # a subscriber's: one EventData subclass
# A service's subscriptions: event class -> its handlers, in order (each service's app.py).
Subscriptions = Mapping[type[EventData], Sequence[TypedHandler]]


def decode(event: Event) -> EventData:
    """The typed data of ``event``; ``ValueError`` for an unknown type or an invalid payload."""
    cls = EVENT_CLASSES.get(event.type)
    if cls is None:
        raise ValueError(f"unknown event type {event.type}")
    return cls.from_data(event.data)


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
