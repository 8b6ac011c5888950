"""In-process caches that events invalidate (docs/events.md "The services' own caches": every cache, on every instance).

A ``LiveCache`` answers only while its instance's event consumer is *live* (its exclusive queue is
consumed and the bus lease is fresh, libs/oauth/lease.py): then every change that matters reaches
it as an event, and ``invalidate`` runs. While
the consumer is down, ``get`` misses and callers read the shared state (Postgres, Redis) on every
request; when it comes back, everything cached before is dropped, since events may have been
missed meanwhile. Entries also expire after ``ttl`` seconds (a bound for changes made behind the
services' back, e.g. with SQL), and the cache holds at most ``max_entries`` (least recently used
out).

Loading races are closed with a ticket: ``ticket()`` before reading the shared state, and ``put``
stores only if no invalidation and no liveness change happened since, so an answer read before
an event is never cached after it.

``CLIENTS`` is the process-wide cache behind ``libs.contracts.account.get_client``; every event bus
of the process attaches to it (``attach_client_cache``) and it answers only while all of them are
live.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Generic, Protocol, TypeVar

from .events.types import ClientEvent

K = TypeVar("K")
V = TypeVar("V")


class Liveness(Protocol):
    @property
    def live(self) -> bool: ...

    @property
    def generation(self) -> int: ...


class LiveCache(Generic[K, V]):
    def __init__(self, liveness: Liveness, ttl: float, max_entries: int = 10_000, name: str = "") -> None:
        if name:
            from libs.platform.metrics import register_cache

            register_cache(name, self)
        self.name = name or "unnamed"
        self.liveness = liveness
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, int, V]] = OrderedDict()
        self._version = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.liveness.live

    def get(self, key: K) -> V | None:
        if not self.enabled:
            if self.ttl > 0:
                from .lease import LEASE_FALLBACKS

                LEASE_FALLBACKS.labels(self.name).inc()
            return None
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, generation, value = entry
        if generation != self.liveness.generation or expires < time.monotonic():
            self._data.pop(key, None)
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def ticket(self) -> tuple[int, int]:
        return (self.liveness.generation, self._version)

    def put(self, key: K, value: V, ticket: tuple[int, int]) -> None:
        if not self.enabled or ticket != self.ticket():
            return
        self._data[key] = (time.monotonic() + self.ttl, ticket[0], value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._version += 1
        self._data.pop(key, None)

    def fence(self) -> None:
        """Refuse the ``put`` of every load in flight (their ticket is now stale), keeping the
        entries: for an event whose effect is checked elsewhere, but that a load may have missed."""
        self._version += 1

    def clear(self) -> None:
        self._version += 1
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class AllLive:
    """The liveness of several consumers: live only if there is one and every one is live."""

    def __init__(self) -> None:
        self.members: list[Liveness] = []
        self._bump = 0

    @property
    def live(self) -> bool:
        return bool(self.members) and all(m.live for m in self.members)

    @property
    def generation(self) -> int:
        return self._bump + sum(m.generation for m in self.members)

    def add(self, member: Liveness) -> None:
        self.members.append(member)
        self._bump += 1

    def remove(self, member: Liveness) -> None:
        if member in self.members:
            self.members.remove(member)
            self._bump += 1


_CLIENTS_LIVENESS = AllLive()
_CLIENTS_TTLS: dict[int, float] = {}
CLIENTS: LiveCache[str, Any] = LiveCache(_CLIENTS_LIVENESS, ttl=0.0, name="clients")  # on once an event bus attaches


def attach_client_cache(liveness: Liveness, ttl: float) -> None:
    _CLIENTS_LIVENESS.add(liveness)
    _CLIENTS_TTLS[id(liveness)] = ttl
    CLIENTS.ttl = min(_CLIENTS_TTLS.values())
    CLIENTS.clear()


def detach_client_cache(liveness: Liveness) -> None:
    _CLIENTS_LIVENESS.remove(liveness)
    _CLIENTS_TTLS.pop(id(liveness), None)
    CLIENTS.ttl = min(_CLIENTS_TTLS.values(), default=0.0)
    CLIENTS.clear()


async def drop_client(event: ClientEvent) -> None:
    """The client.* subscriber of every service: forget the app ``event`` names."""
    CLIENTS.invalidate(event.client_id)
