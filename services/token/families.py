"""Token families: everything issued from one authorization code (RFC 9700 4.14.2; docs/architecture.md).

A family is the unit of revocation: revoking it kills its refresh tokens (in Postgres) and its
access tokens (``revoked:fam:<id>`` in Redis, checked by every ``AccessTokenVerifier``; access
tokens carry the family in ``fam``), and tells every instance with a ``token.revoked`` event written
through the outbox in the same transaction. One family is revoked here (``revoke_family``: code
replay, refresh-token reuse, RFC 7009); authz and account revoke a user's or an app's families in
their own transaction through ``libs/contracts/token.revoke_families``. A code's family is created
by the statement that consumes the code (``libs/contracts/authz.exchange_code``); a device code's
by ``create_family`` (issuance.start_family).
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
import redis.asyncio as aioredis

from libs.oauth.access_tokens import mark_revoked
from libs.oauth.events import outbox
from libs.oauth.events.types import TokenRevoked
from libs.oauth.metrics import TOKEN_FAMILIES_REVOKED
from libs.platform.config import Settings

from . import store
from .store import insert_family as create_family

__all__ = ["create_family", "revoke_family"]

log = logging.getLogger("oauth.revocation")


async def _revoke_rows(conn: asyncpg.Connection, family_id: uuid.UUID, reason: str) -> bool:
    row = await store.revoke_family_row(conn, family_id, reason)
    if row is None:
        return False  # unknown or already revoked: nothing more to write, no second event
    # The family check already rejects them; expiring them too keeps any other reader honest, and
    # dropping the grace responses leaves nothing readable behind.
    await store.expire_family_refresh_tokens(conn, family_id)
    await outbox.enqueue(
        conn,
        TokenRevoked(
            family_id=str(family_id),
            jti=None,
            token_type="refresh_token",
            reason=reason,
            client_id=row["client_id"],
            user_id=row["user_id"],
        ),
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
