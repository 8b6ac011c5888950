"""The account service's in-process cache of users for userinfo and top-up (``app[USER_CACHE]``).

Invalidated by ``quota.changed`` and ``user.*`` events (every instance's own queue), trusted only
while this instance's event consumer is live (libs/oauth/caches.LiveCache), entries kept at most
``CACHE_TTL_SECONDS``. A request of this instance that changes a user has its event applied here
before it answers (libs/oauth/events/bus.py settle), and on other instances as soon as it arrives.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from libs.oauth.caches import LiveCache
from libs.oauth.events.bus import EventBus
from libs.oauth.events.types import QuotaChanged, UserDisabled, UserUpdated
from libs.platform.web import SETTINGS

from .users import User, get_user

USER_CACHE: web.AppKey[LiveCache[int, User]] = web.AppKey("user_cache")


class UserCache(LiveCache[int, User]):
    async def drop(self, event: QuotaChanged | UserUpdated | UserDisabled) -> None:
        """quota.changed and user.* (the account service's event table, app.py)."""
        self.invalidate(event.user_id)


def setup(app: web.Application, bus: EventBus) -> UserCache:
    """Create the cache (``app[USER_CACHE]``); the service's event table sends it ``drop``."""
    cache = UserCache(bus, ttl=app[SETTINGS].cache_ttl_seconds, max_entries=100_000, name="users")
    bus.on_reset(cache.clear)
    app[USER_CACHE] = cache
    return cache


async def cached_user(pool: asyncpg.Pool, user_id: int, cache: LiveCache[int, User] | None) -> User | None:
    """``users.get_user`` through ``cache`` (when given and trusted). Missing users are not cached."""
    if cache is None:
        return await get_user(pool, user_id)
    user = cache.get(user_id)
    if user is not None:
        return user
    ticket = cache.ticket()
    user = await get_user(pool, user_id)
    if user is not None:
        cache.put(user_id, user, ticket)
    return user
