"""Revocation of tokens, shared by the services, and the revocation check of every access-token
verifier (docs/events.md "Liveness and delivery": a revoked token is rejected by every instance within 100 ms, and still
if RabbitMQ is down).

What is revoked, and where it is written:

- A token family (everything issued from one authorization code): ``token_families.revoked_at``
  (the truth), its refresh tokens expired, its access tokens rejected through Redis
  ``revoked:fam:<family>``. Per family (``revoke_family``: code replay, refresh-token reuse,
  RFC 7009) or in bulk inside the caller's transaction (``revoke_families``: a user revokes an app,
  an app is deleted, a user is disabled).
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
from collections.abc import Iterable
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from libs.oauth.events import outbox
from libs.oauth.events.bus import EVENTS
from libs.oauth.events.types import Event, event_ids
from libs.oauth.metrics import ACCESS_TOKENS_REVOKED, TOKEN_FAMILIES_REVOKED
from libs.platform.config import Settings
from libs.platform.web import PG, REDIS, SETTINGS

from .access_tokens import REVOCATIONS, mark_revoked, revoked_family_key, revoked_jti_key
from .caches import LiveCache

log = logging.getLogger("oauth.revocation")

# The events that revoke tokens; their data carries ``family_ids`` and/or ``family_id`` / ``jti``.
REVOKING_EVENTS = ("token.revoked", "authorization.revoked", "user.disabled", "client.deleted")


# --- token families ------------------------------------------------------------------------------
async def _revoke_rows(conn: asyncpg.Connection, family_id: uuid.UUID, reason: str) -> bool:
    row = await conn.fetchrow(
        """UPDATE token_families SET revoked_at = now(), revoked_reason = $2
           WHERE id = $1 AND revoked_at IS NULL
           RETURNING client_id, user_id""",
        family_id,
        reason,
    )
    if row is None:
        return False  # unknown or already revoked: nothing more to write, no second event
    # The family check already rejects them; expiring them too keeps any other reader honest, and
    # dropping the grace responses leaves nothing readable behind.
    await conn.execute(
        """UPDATE refresh_tokens SET expires_at = least(expires_at, now()), grace_response = NULL
           WHERE family_id = $1 AND (used_at IS NULL OR grace_response IS NOT NULL)""",
        family_id,
    )
    await outbox.enqueue(
        conn,
        "token.revoked",
        {
            "family_id": str(family_id),
            "jti": None,
            "token_type": "refresh_token",
            "reason": reason,
            "client_id": row["client_id"],
            "user_id": row["user_id"],
        },
    )
    return True


async def revoke_family(
    db: asyncpg.Pool | asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    family_id: uuid.UUID | str,
    reason: str,
) -> bool:
    """Revoke a family everywhere; True if this call revoked it (False: unknown or already revoked).

    With a pool, the database part commits in its own transaction before Redis is told. With a
    connection, it joins the caller's transaction (a savepoint if one is open) and Redis is told
    at once, before the caller commits: if that commit then fails the family is rejected by the
    verifiers anyway, which errs on the safe side.
    """
    fid = family_id if isinstance(family_id, uuid.UUID) else uuid.UUID(str(family_id))
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            revoked = await _revoke_rows(conn, fid, reason)
    else:
        async with db.transaction():
            revoked = await _revoke_rows(db, fid, reason)
    # Always (also when already revoked): an earlier revocation's Redis write may have failed.
    await mark_revoked(redis, settings, families=[str(fid)])
    if revoked:
        log.warning("token family revoked", extra={"family_id": str(fid), "reason": reason})
        TOKEN_FAMILIES_REVOKED.labels(reason).inc()
    return revoked


async def revoke_families(
    conn: asyncpg.Connection, *, user_id: int | None = None, client_id: str | None = None, reason: str
) -> list[str]:
    """In the caller's transaction: revoke every live family of ``user_id`` and/or ``client_id``
    (refresh tokens expired) and expire their unused authorization codes and device codes; return
    the family ids.

    The codes go first: an exchange in flight holds its code's row lock, so this waits for it and
    the next statement (a new snapshot) sees the family it created; an exchange after this finds
    its code expired. No token is issued for the pair once this commits."""
    if user_id is None and client_id is None:
        raise ValueError("revoke_families needs a user_id or a client_id")
    await conn.execute(
        """UPDATE authorization_codes SET expires_at = least(expires_at, now())
           WHERE used_at IS NULL AND expires_at > now()
             AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)""",
        user_id,
        client_id,
    )
    # Device codes not yet exchanged (RFC 8628, docs/device.md): an approved one would otherwise
    # still yield tokens at the device's next poll.
    await conn.execute(
        """UPDATE device_codes SET expires_at = least(expires_at, now())
           WHERE status IN ('pending', 'approved') AND expires_at > now()
             AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)""",
        user_id,
        client_id,
    )
    rows = await conn.fetch(
        """UPDATE token_families SET revoked_at = now(), revoked_reason = $3
           WHERE revoked_at IS NULL AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)
           RETURNING id""",
        user_id,
        client_id,
        reason,
    )
    ids = [r["id"] for r in rows]
    if ids:
        await conn.execute(
            """UPDATE refresh_tokens SET expires_at = least(expires_at, now()), grace_response = NULL
               WHERE family_id = ANY($1::uuid[]) AND (used_at IS NULL OR grace_response IS NOT NULL)""",
            ids,
        )
    return [str(i) for i in ids]


async def revoke_client(conn: asyncpg.Connection, client_id: str) -> list[str]:
    """In the caller's transaction (the app is being deleted): every user's grant of ``client_id``
    and all its tokens; ``authorization.revoked`` with ``user_id`` null. Returns the family ids."""
    families = await revoke_families(conn, client_id=client_id, reason="client_deleted")
    grants = await conn.fetchval(
        "WITH d AS (DELETE FROM grants WHERE client_id = $1 RETURNING 1) SELECT count(*) FROM d", client_id
    )
    if families or grants:
        await outbox.enqueue(
            conn,
            "authorization.revoked",
            {"user_id": None, "client_id": client_id, "family_ids": families, "reason": "client_deleted"},
        )
    return families


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
        "token.revoked",
        {
            "family_id": None,
            "jti": jti,
            "token_type": "access_token",
            "reason": reason,
            "client_id": client_id,
            "user_id": user_id,
            "expires_at": int(expires_at.timestamp()),
        },
    )
    ACCESS_TOKENS_REVOKED.inc()
    return True


# --- what an event revokes -----------------------------------------------------------------------
def revoked_by(event: Event) -> tuple[list[str], list[str]]:
    """(jtis, family ids) that ``event`` revokes (empty for other events)."""
    if event.type not in REVOKING_EVENTS:
        return [], []
    data = event.data
    families = event_ids(data.get("family_ids") or [])
    if data.get("family_id"):
        families.append(str(data["family_id"]))
    jtis = [str(data["jti"])] if data.get("jti") else []
    return jtis, families


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
SHARED_SQL = """
SELECT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $1)
    OR EXISTS (SELECT 1 FROM token_families WHERE id = $2::uuid AND revoked_at IS NOT NULL)
"""


async def shared_revoked(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, jti: str, family: str | None
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
    return bool(await pool.fetchval(SHARED_SQL, jti, fam))


class RevocationCache:
    """The revocation check of one service instance (``app[REVOCATIONS]``); see the module docstring."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        bus = app[EVENTS]
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

    async def on_event(self, event: Event) -> None:
        jtis, families = revoked_by(event)
        self.learn(jtis, families)
        # Repair the shared state too (idempotent): the revoker's own Redis write may have failed.
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
        revoked = await shared_revoked(self.app[PG], self.app[REDIS], self.app[SETTINGS], jti, family)
        if revoked:
            self.learn([jti], [family] if family else [])
        else:
            self.checked.put(jti, True, ticket)
        return revoked


def setup_revocation(app: web.Application) -> RevocationCache:
    """Give ``app``'s access-token verifier this instance's revocation cache (after setup_events)."""
    cache = RevocationCache(app)
    app[REVOCATIONS] = cache
    bus = app[EVENTS]
    for event_type in REVOKING_EVENTS:
        bus.subscribe(event_type, cache.on_event)
    bus.on_reset(cache.checked.clear)

    async def write_shared_state(event: Event) -> None:
        # Before the request answers (EventBus.settle): the fallback of an instance whose lease is
        # stale reads Redis, so every revoking change of this instance is there first, whichever
        # path made it (an app's deletion included). Consumers repeat it, idempotently.
        jtis, families = revoked_by(event)
        await mark_revoked_safely(app[REDIS], app[SETTINGS], jtis=jtis, families=families)

    bus.after_commit(write_shared_state)
    return cache
