"""Revocation of tokens, shared by the services, and the revocation check of every access-token
verifier (docs/events.md "Liveness and delivery": a revoked token is rejected by every instance within 100 ms, and still
if RabbitMQ is down).

What is revoked, and where it is written:

- A token family (everything issued from one authorization code): ``token_families.revoked_at``
  (the truth), its refresh tokens expired, its access tokens rejected through Redis
  ``revoked:fam:<family>``. Per family by the token service (``services/token/families.revoke_family``:
  code replay, refresh-token reuse, RFC 7009) or in bulk inside the caller's transaction
  (``libs/contracts/token.revoke_families``: a user revokes an app, an app is deleted, a user is
  disabled). The token service owns those tables, so this module runs no SQL on them.
- One access token (RFC 7009 with an access token): a row in ``revoked_access_tokens`` (the truth)
  and Redis ``revoked:jti:<jti>``.

Every revocation writes an event in the same transaction (``token.revoked``,
``authorization.revoked``, ``user.disabled`` or ``client.deleted``; data lists the ``family_ids``
or the ``jti``). Redis is written right after the commit by the revoker (``mark_revoked``) and
again, idempotently, by every instance that receives the event (so a Redis write lost to an outage
is repaired).

The check (``RevocationCache.is_revoked``, used by ``AccessTokenVerifier``):
1. families and jtis this instance knows to be revoked (from events or earlier checks): rejected;
2. while the instance's event consumer is live, a token checked within ``cache_ttl_seconds`` is
   accepted from memory (any revocation since then arrived as an event and is caught by step 1);
3. otherwise Redis (``revocation_redis_timeout_seconds`` at most), and PostgreSQL when Redis fails.
So while the consumer is disconnected every request reads the shared state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeAlias

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from libs.oauth.events import outbox
from libs.oauth.events.bus import EventBus
from libs.oauth.events.types import (
    AuthorizationRevoked,
    ClientDeleted,
    EventData,
    TokenRevoked,
    UserDisabled,
)
from libs.oauth.metrics import ACCESS_TOKENS_REVOKED
from libs.platform.config import Settings
from libs.platform.web import PG, REDIS, SETTINGS

from .access_tokens import REVOCATIONS, mark_revoked, revoked_family_key, revoked_jti_key
from .caches import LiveCache

log = logging.getLogger("oauth.revocation")


# --- single access tokens ------------------------------------------------------------------------
async def revoke_access_token(
    conn: asyncpg.Connection,
    *,
    jti: str,
    family_id: str | None,
    client_id: str,
    user_id: int | None,
    expires_at: datetime,
    reason: str,
) -> bool:
    """In the caller's transaction: record ``jti`` as revoked and write ``token.revoked``; False if
    it already was."""
    fam: uuid.UUID | None = None
    if family_id:
        try:
            fam = uuid.UUID(family_id)
        except ValueError:
            fam = None
    inserted = await conn.fetchval(
        """INSERT INTO revoked_access_tokens (jti, family_id, client_id, user_id, expires_at, reason)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (jti) DO NOTHING RETURNING true""",
        jti,
        fam,
        client_id,
        user_id,
        expires_at,
        reason,
    )
    if not inserted:
        return False
    await outbox.enqueue(
        conn,
        TokenRevoked(
            family_id=None,
            jti=jti,
            token_type="access_token",
            reason=reason,
            client_id=client_id,
            user_id=user_id,
            expires_at=int(expires_at.timestamp()),
        ),
    )
    ACCESS_TOKENS_REVOKED.inc()
    return True


# --- what an event revokes -----------------------------------------------------------------------
def revoked_by(event: EventData) -> tuple[list[str], list[str]]:
    """(jtis, family ids) that ``event`` revokes (empty for other events)."""
    if isinstance(event, TokenRevoked):
        return ([event.jti] if event.jti else []), ([event.family_id] if event.family_id else [])
    if isinstance(event, AuthorizationRevoked | UserDisabled | ClientDeleted):
        return [], [f for f in event.family_ids if f]
    return [], []


async def mark_revoked_safely(
    redis: aioredis.Redis, settings: Settings, *, jtis: Iterable[str] = (), families: Iterable[str] = ()
) -> bool:
    """``mark_revoked`` that logs instead of raising when Redis is away (Postgres stays the truth,
    and the event's consumers write Redis again)."""
    jtis, families = list(jtis), list(families)
    if not jtis and not families:
        return True
    try:
        await asyncio.wait_for(
            mark_revoked(redis, settings, jtis=jtis, families=families),
            timeout=max(settings.revocation_redis_timeout_seconds, 1.0),
        )
        return True
    except Exception as exc:
        log.warning("could not write revocations to Redis", extra={"error": type(exc).__name__})
        return False


# --- the shared state and this instance's memory of it -------------------------------------------
# How PostgreSQL is asked when Redis does not answer: (pool, jti, family uuid or None) -> revoked?
# The token service owns token_families, so the service passes ``libs/contracts/token.revoked_in_db``.
RevokedInDb: TypeAlias = Callable[[asyncpg.Pool, str, str | None], Awaitable[bool]]


async def shared_revoked(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    jti: str,
    family: str | None,
    revoked_in_db: RevokedInDb,
) -> bool:
    """Is the token revoked, per Redis, or per PostgreSQL when Redis does not answer in time?"""
    names = [revoked_jti_key(settings, jti)]
    if family:
        names.append(revoked_family_key(settings, family))
    try:
        values = await asyncio.wait_for(redis.mget(names), timeout=settings.revocation_redis_timeout_seconds)
        return any(values)
    except Exception as exc:
        log.warning("redis unavailable for a revocation check; asking postgres", extra={"error": type(exc).__name__})
    fam: str | None = None
    if family:
        try:
            fam = str(uuid.UUID(family))
        except ValueError:
            fam = None
    return await revoked_in_db(pool, jti, fam)


class RevocationCache:
    """The revocation check of one service instance (``app[REVOCATIONS]``); see the module docstring."""

    def __init__(self, app: web.Application, bus: EventBus, revoked_in_db: RevokedInDb) -> None:
        self.app = app
        self.revoked_in_db = revoked_in_db
        settings = app[SETTINGS]
        self.ttl_revoked = float(settings.access_token_ttl_seconds + 60)
        self.checked: LiveCache[str, bool] = LiveCache(
            bus, ttl=settings.cache_ttl_seconds, max_entries=100_000, name="access_tokens"
        )
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}
        self.shared_checks = 0

    # --- events -----------------------------------------------------------------------------------
    def learn(self, jtis: Iterable[str] = (), families: Iterable[str] = ()) -> None:
        until = time.monotonic() + self.ttl_revoked
        for j in jtis:
            self._jtis[j] = until
        for f in families:
            self._families[f] = until
        if len(self._jtis) + len(self._families) > 200_000:
            self._prune()

    def _prune(self) -> None:
        now = time.monotonic()
        self._jtis = {k: v for k, v in self._jtis.items() if v > now}
        self._families = {k: v for k, v in self._families.items() if v > now}

    async def on_event(self, event: EventData) -> None:
        """A revoking event (token.revoked, authorization.revoked, user.disabled, client.deleted):
        remember what it revokes."""
        jtis, families = revoked_by(event)
        self.learn(jtis, families)
        # Repair the shared state too (idempotent): the revoker's own Redis write may have failed.
        await mark_revoked_safely(self.app[REDIS], self.app[SETTINGS], jtis=jtis, families=families)

    async def write_shared_state(self, event: EventData) -> None:
        """After a request of this instance committed a revoking event, before it answers
        (``EventBus.subscribe(after_commit=...)``): the fallback of an instance whose lease is stale
        reads Redis, so every revoking change of this instance is there first, whichever path made
        it (an app's deletion included). Consumers repeat it, idempotently."""
        jtis, families = revoked_by(event)
        await mark_revoked_safely(self.app[REDIS], self.app[SETTINGS], jtis=jtis, families=families)

    # --- the check --------------------------------------------------------------------------------
    def _known_revoked(self, jti: str, family: str | None) -> bool:
        now = time.monotonic()
        until = self._jtis.get(jti)
        if until is not None and until > now:
            return True
        if family:
            until = self._families.get(family)
            if until is not None and until > now:
                return True
        return False

    async def is_revoked(self, jti: str, family: str | None) -> bool:
        if self._known_revoked(jti, family):
            return True
        if self.checked.get(jti) is not None:
            return False
        ticket = self.checked.ticket()
        self.shared_checks += 1
        revoked = await shared_revoked(
            self.app[PG], self.app[REDIS], self.app[SETTINGS], jti, family, self.revoked_in_db
        )
        if revoked:
            self.learn([jti], [family] if family else [])
        else:
            self.checked.put(jti, True, ticket)
        return revoked


def setup_revocation(app: web.Application, bus: EventBus, revoked_in_db: RevokedInDb) -> RevocationCache:
    """This instance's revocation cache, as ``app[REVOCATIONS]``; its service's event table sends
    it the revoking events (``on_event``, and ``write_shared_state`` after commit).
    ``revoked_in_db`` is its PostgreSQL fallback (``libs/contracts/token.revoked_in_db``)."""
    cache = RevocationCache(app, bus, revoked_in_db)
    app[REVOCATIONS] = cache
    bus.on_reset(cache.checked.clear)
    return cache
