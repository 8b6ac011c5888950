"""Disabling a user (``oauthctl user disable``): the account is closed to logins and every token
and grant the user has is revoked, with one ``user.disabled`` event (docs/events.md "Types": userinfo
caches drop the user, verifiers reject the families listed in ``family_ids``)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from libs.contracts.authz import delete_user_consents
from libs.contracts.token import revoke_families
from libs.oauth.events import outbox
from libs.oauth.events.bus import EventWaiter
from libs.oauth.events.types import UserDisabled
from libs.oauth.revocation import mark_revoked_safely
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings

from . import store
from .users import is_active


async def disable_user(conn: asyncpg.Connection, user_id: int) -> list[str] | None:
    """In one transaction: status disabled, grants deleted, token families revoked, event written.
    Returns the revoked family ids, or None if there is no such user. Disabling a disabled user
    again revokes whatever may have been issued since and writes the event again."""
    async with conn.transaction():
        previous = await store.lock_user_status(conn, user_id)
        if previous is None:
            return None
        await store.set_user_status(conn, user_id, UserStatus.DISABLED)
        families = await revoke_families(conn, user_id=user_id, reason="user_disabled")
        await delete_user_consents(conn, user_id)
        await outbox.enqueue(
            conn, UserDisabled(user_id=user_id, family_ids=tuple(families), was_active=is_active(previous))
        )
    return families


async def disable_user_everywhere(conn: asyncpg.Connection, settings: Settings, user_id: int) -> list[str] | None:
    """``disable_user`` from outside the services (the CLI): returns once the event went round the
    broker, and writes the revocations to Redis (the instances' consumers write them too)."""
    async with EventWaiter(settings, [UserDisabled.type]):  # returns once the instances have the event
        families = await disable_user(conn, user_id)
    if families:
        redis = aioredis.Redis.from_url(settings.redis_url)
        try:
            await mark_revoked_safely(redis, settings, families=families)
        finally:
            await redis.aclose()
    return families
