"""Token families: everything issued from one authorization code (SPEC.md, RFC 9700 4.14.2).

A family is the unit of revocation: revoking it kills its refresh tokens (in Postgres) and its
access tokens (``revoked:fam:<id>`` in Redis, checked by every ``AccessTokenVerifier``; access
tokens carry the family in ``fam``), and tells every instance with a ``token.revoked`` event written
through the outbox in the same transaction. Used for code replay and refresh-token reuse here, and
reusable by RFC 7009 revocation and the user center's "revoke this app".
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis

from libs.common import outbox
from libs.common.access_tokens import mark_revoked
from libs.common.config import Settings

log = logging.getLogger("oauth.token")


async def create_family(
    conn: asyncpg.Connection,
    family_id: uuid.UUID,
    *,
    client_id: str,
    user_id: int | None,
    scope: str,
    auth_time: datetime | None,
) -> None:
    await conn.execute(
        """INSERT INTO token_families (id, client_id, user_id, scope, auth_time)
           VALUES ($1, $2, $3, $4, $5)""",
        family_id,
        client_id,
        user_id,
        scope,
        auth_time,
    )


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
        {"family_id": str(family_id), "reason": reason, "client_id": row["client_id"], "user_id": row["user_id"]},
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
    return revoked
